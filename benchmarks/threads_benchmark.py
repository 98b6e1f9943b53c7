"""Two processes training at once on a 2-core machine (as the test suite's two workers do): TensorFlow's
default thread pools against one intra-op thread each, in alternating rounds, same data and model.

    python benchmarks/threads_benchmark.py --rounds 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

_TRAIN = """
import sys, time
from pathlib import Path
from boneclf.data.ingest import ingest_mura
from boneclf.data.splits import SplitOptions, create_split
from boneclf.data.synth import synth_mura
from boneclf.ml.training import TrainConfig, train
from boneclf.store import migrate
from boneclf.store.engine import make_engine
from boneclf.vocabulary import BODY_PARTS
folder = Path(sys.argv[1])
engine = make_engine(f"sqlite:///{folder / 'db.sqlite'}", create=True)
migrate.upgrade(engine)
synth_mura(folder / "data", patients=150, size=64, seed=3)
ingest_mura(engine, folder / "data")
create_split(engine, "s", SplitOptions("mura-v1.1", BODY_PARTS, test_from="carve", val=0.15, test=0.15, seed=1))
start = time.perf_counter()
train(engine, TrainConfig(stage="bodypart", split="s", image_size=64, epochs=6, patience=10, arch="cnn",
                          weights="none", augment="flip", tensorboard=False, lr=1e-3, runs_dir=str(folder / "runs")),
      verbose=0)
print(time.perf_counter() - start)
"""

SETTINGS = {"default thread pools": {}, "one intra-op thread": {"TF_NUM_INTRAOP_THREADS": "1", "OMP_NUM_THREADS": "1",
                                                                  "OPENBLAS_NUM_THREADS": "1"}}


def pair(extra: dict) -> list[float]:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS")}
    procs = [subprocess.Popen([sys.executable, "-c", _TRAIN, tempfile.mkdtemp()], env={**env, **extra},
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(2)]
    return [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    totals = {name: 0.0 for name in SETTINGS}
    for round_ in range(args.rounds):
        order = list(SETTINGS) if round_ % 2 == 0 else list(reversed(SETTINGS))
        for name in order:
            times = pair(SETTINGS[name])
            totals[name] += sum(times)
            print(f"round {round_ + 1}, {name}: {times[0]:.1f} s and {times[1]:.1f} s of training")
    base = totals["default thread pools"]
    for name, total in totals.items():
        print(f"{name}: {total:.1f} s in all ({base / total:.2f}x)")


if __name__ == "__main__":
    main()

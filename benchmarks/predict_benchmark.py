"""Two-stage prediction with Grad-CAM at 224 px on the CPU: single images against a batched folder.

Stage 1 MobileNetV2, stage 2 DenseNet121 (random weights: the speed is the same as trained
ones), recorded as finished runs so the real `Predictor` path is measured. Times, in one process:

  - latency: 200 calls of one image each (after a warm-up call), Grad-CAM overlays written;
  - throughput: one call with the same 200 images, batched through each model.

    python benchmarks/predict_benchmark.py --images 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from boneclf.data.ingest import ingest_mura  # noqa: E402
from boneclf.data.splits import SplitOptions, create_split  # noqa: E402
from boneclf.data.synth import synth_mura  # noqa: E402
from boneclf.ml.backbones import get_backbone  # noqa: E402
from boneclf.ml.image_spec import spec_for  # noqa: E402
from boneclf.ml.models import build_classifier  # noqa: E402
from boneclf.ml.predict import Predictor  # noqa: E402
from boneclf.ml.tf_env import tensorflow  # noqa: E402
from boneclf.store import migrate  # noqa: E402
from boneclf.store.engine import make_engine  # noqa: E402
from boneclf.store.queries import get_split  # noqa: E402
from boneclf.store.runs import create_run, set_status  # noqa: E402
from boneclf.vocabulary import BODY_PARTS  # noqa: E402


def fake_run(engine, split, stage: str, arch: str, outputs: int, classes: list[str], runs_dir: Path) -> int:
    parameters = {"stage": stage, "split": split.name, "image_size": 224, "pad": False, "canny": False, "arch": arch}
    run_id = create_run(engine, stage=stage, parts=tuple(BODY_PARTS), architecture=arch, parameters=parameters,
                        image_spec=spec_for(arch, 224).to_dict(), split=split, label_version=split.label_version,
                        tf_version=tensorflow().__version__,
                        runs_dir=str(runs_dir))
    folder = runs_dir / str(run_id)
    folder.mkdir(parents=True)
    build_classifier(get_backbone(arch), 224, outputs, weights=None).save(folder / "model.keras")
    (folder / "class_names.json").write_text(json.dumps(classes))
    set_status(engine, run_id, "finished", metrics={})
    return run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    tf = tensorflow()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        engine = make_engine(f"sqlite:///{tmp / 'bench.sqlite'}", create=True)
        migrate.upgrade(engine)
        report = synth_mura(tmp / "data", patients=max(2, args.images // 3 + 5), size=320, seed=0)
        ingest_mura(engine, tmp / "data")
        create_split(engine, "bench", SplitOptions("mura-v1.1", BODY_PARTS, test_from="carve"))
        with engine.connect() as conn:
            split = get_split(conn, "bench")
        stage1 = fake_run(engine, split, "bodypart", "mobilenetv2", len(BODY_PARTS), list(BODY_PARTS), tmp / "runs")
        stage2 = fake_run(engine, split, "fracture", "densenet121", 1, ["normal", "abnormal"], tmp / "runs")
        paths = [tmp / "data" / image.path for image in report.images][: args.images]
        predictor = Predictor(engine, stage1, stage2)
        predictor.predict(paths[:1], tmp / "warm")  # warm-up: graph building, first allocations

        start = time.perf_counter()
        for path in paths:
            predictor.predict([path], tmp / "single")
        single = (time.perf_counter() - start) / len(paths)

        start = time.perf_counter()
        predictor.predict(paths, tmp / "batched")
        batched = (time.perf_counter() - start) / len(paths)
        engine.dispose()

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
          f"python {platform.python_version()}, tensorflow {tf.__version__}")
    print(f"{len(paths)} PNGs (320 px high), 224 px input, MobileNetV2 then DenseNet121, Grad-CAM overlays written")
    print(f"single image, after warm-up: {single * 1000:8.1f} ms per image")
    print(f"folder, batched:             {batched * 1000:8.1f} ms per image ({1 / batched:.1f} images/s)")
    print(f"speed-up per image:          {single / batched:8.1f}x")


if __name__ == "__main__":
    main()

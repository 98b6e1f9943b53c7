"""Does Grad-CAM point at the break? Classic Grad-CAM (before) against the shipped method (after).

On `bonedb demo`'s stage-2 model (the custom CNN at 64 px, trained on synthetic X-rays with a
break drawn into every abnormal study), scores the heatmaps of the true positives (abnormal,
predicted abnormal) of two samples: the demo split's test images, and fresh abnormal images drawn
the way synth draws them (never in the database). Figures, in one process, same model:

  pointing game    share of heatmap peaks within 10% of the side from the planted break
  border mass      mean share of the heatmap's mass in the outer 10% frame of the picture, on the
                   true positives whose break lies at least 20% of the side from every edge (heat in
                   the frame cannot be the break there; a uniform map scores 0.34)
  peaks on border  share of those heatmaps whose peak lies in that frame
  all TPs          border mass over every true positive, breaks near the border included (where heat
                   in the frame may be right)

    python benchmarks/gradcam_benchmark.py --workdir bonedb-demo

The demo runs first when WORKDIR holds none (a few minutes on 2 cores; a second run reuses it).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from boneclf.data.radiograph import draw_radiograph  # noqa: E402
from boneclf.data.splits import split_image_paths  # noqa: E402
from boneclf.data.synth import planted_break  # noqa: E402
from boneclf.ml.evaluation import load_run_model  # noqa: E402
from boneclf.ml.gradcam import GradCam, localization  # noqa: E402
from boneclf.ml.tf_env import tensorflow  # noqa: E402
from boneclf.store.engine import make_engine  # noqa: E402
from boneclf.vocabulary import BODY_PARTS  # noqa: E402
from boneclf.workflows.demo import SPLIT, DemoSettings, run_demo  # noqa: E402

DEMO_SYNTH_SEED = 0  # run_demo draws its synthetic MURA with seed 0
# (label, layer, method): the first is what bonedb shipped before, the last what it ships now.
VARIANTS = (
    ("before: Grad-CAM at last_conv", "last_conv", "gradcam"),
    ("Grad-CAM at relu3", "relu3", "gradcam"),
    ("grad x act at last_conv", "last_conv", "gradxact"),
    ("after: grad x act at relu3 (shipped)", None, "gradxact"),
)


def demo_samples(workdir: Path, engine, size: int) -> tuple[list[bytes], list]:
    root = workdir / "data"
    paths = [p for p in split_image_paths(engine, SPLIT)["test"] if "_positive/" in p]
    return [(root / p).read_bytes() for p in paths], [planted_break(p, size, DEMO_SYNTH_SEED) for p in paths]


def fresh_samples(per_part: int, size: int) -> tuple[list[bytes], list]:
    files, breaks = [], []
    for part in BODY_PARTS:
        for k in range(per_part):
            rng = random.Random(f"gradcam-benchmark:{part}:{k}")
            width = max(16, round(size * rng.uniform(0.72, 1.0)))  # portrait, as synth draws
            picture, break_at = draw_radiograph(part, True, width, size, rng)
            buffer = io.BytesIO()
            picture.save(buffer, "PNG")
            files.append(buffer.getvalue())
            breaks.append(break_at)
    return files, breaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("bonedb-demo"), help="a `bonedb demo` folder")
    parser.add_argument("--fresh", type=int, default=20, help="fresh abnormal images per body part")
    args = parser.parse_args()
    settings = DemoSettings()
    summary = run_demo(args.workdir, say=lambda message: None)
    engine = make_engine(f"sqlite:///{Path(args.workdir).absolute() / 'bonedb.sqlite'}")
    loaded = load_run_model(engine, summary.fracture_run)
    samples = {"demo test split": demo_samples(Path(summary.workdir), engine, settings.size),
               "fresh images": fresh_samples(args.fresh, settings.size)}
    print(f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, Python "
          f"{platform.python_version()}, TensorFlow {tensorflow().__version__}; demo run {summary.fracture_run} "
          f"(test image accuracy {summary.stage2_test_image_accuracy:.3f})")
    for name, (files, breaks) in samples.items():
        scores = [(label, localization(GradCam(loaded.model, "cnn", layer=layer, method=method), loaded.spec,
                                       files, breaks)) for label, layer, method in VARIANTS]
        first = scores[0][1]
        print(f"\n{name}: {len(files)} abnormal images, {first.true_positives} true positives, "
              f"{first.away_from_border} of them with the break away from the border")
        print(f"{'':40} {'pointing game':>14} {'border mass':>12} {'peaks on border':>16} {'all TPs':>8}")
        for label, s in scores:
            print(f"{label:40} {s.pointing_game:14.3f} {s.border_mass:12.3f} {s.peaks_on_border:16.3f} "
                  f"{s.border_mass_all:8.3f}")
        before, after = scores[0][1], scores[-1][1]
        print(f"after / before: pointing game {after.pointing_game / before.pointing_game:.2f}x, "
              f"border mass {after.border_mass / before.border_mass:.2f}x")
    engine.dispose()


if __name__ == "__main__":
    main()

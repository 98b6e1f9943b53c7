"""Input pipeline and phase-1 speed, each against the plain Keras recipe in the same process.

1. Images per second through the input pipeline, first and second epoch, 224 px:
   - baseline: keras.utils.image_dataset_from_directory on the exported class folders, with the
     paper's augmentation layers mapped over it on the CPU (the recipe in Keras' tutorials);
   - bonedb: parallel decode to one uint8 channel, cached; augmentation lives in the model.
2. Phase 1 (head on a frozen backbone) for 5 epochs:
   - baseline: fit the full model with the backbone frozen, fed by the recipe's pipeline;
   - bonedb: backbone features computed once, then the head trained on them.

    python benchmarks/pipeline_benchmark.py --images 2000 --size 512
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from boneclf.data.export import export_split  # noqa: E402
from boneclf.data.ingest import ingest_mura  # noqa: E402
from boneclf.data.splits import SplitOptions, create_split  # noqa: E402
from boneclf.data.synth import synth_mura  # noqa: E402
from boneclf.ml.backbones import get_backbone  # noqa: E402
from boneclf.ml.image_spec import ImageSpec  # noqa: E402
from boneclf.ml.models import augmentation, build_classifier, feature_extractor, head_model  # noqa: E402
from boneclf.ml.pipeline import decoded_dataset  # noqa: E402
from boneclf.ml.tf_env import keras as _keras  # noqa: E402
from boneclf.ml.tf_env import tensorflow  # noqa: E402
from boneclf.ml.training_data import load_stage_data  # noqa: E402
from boneclf.store import migrate  # noqa: E402
from boneclf.store.engine import make_engine  # noqa: E402
from boneclf.vocabulary import BODY_PARTS  # noqa: E402


def images_per_second(dataset, total: int) -> float:
    start = time.perf_counter()
    for _ in dataset:
        pass
    return total / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="about this many PNGs are drawn")
    parser.add_argument("--size", type=int, default=512, help="height of the PNGs, as MURA's")
    parser.add_argument("--input", type=int, default=224, help="model input size")
    parser.add_argument("--phase1-images", type=int, default=600)
    args = parser.parse_args()
    tf, keras = tensorflow(), _keras()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        engine = make_engine(f"sqlite:///{tmp / 'bench.sqlite'}", create=True)
        migrate.upgrade(engine)
        patients = max(2, round(args.images / 3.3))  # synth averages about 3.3 images per patient
        start = time.perf_counter()
        synth_mura(tmp / "data", patients=patients, size=args.size, seed=0)
        drawn = time.perf_counter() - start
        ingest_mura(engine, tmp / "data")
        create_split(engine, "bench", SplitOptions("mura-v1.1", BODY_PARTS, test_from="carve", val=0.1, test=0.1))
        export_split(engine, "bench", tmp / "tree", stage="bodypart")
        train = load_stage_data(engine, "bench", "bodypart", None).subsets["train"]
        total = len(train)

        # 1a. The Keras recipe: decode per epoch, augmentation mapped on the CPU.
        recipe = keras.utils.image_dataset_from_directory(
            tmp / "tree" / "train", image_size=(args.input, args.input), batch_size=32, color_mode="rgb",
            shuffle=True, seed=0, verbose=False)
        augment = keras.Sequential(augmentation("paper"))
        recipe = recipe.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
        recipe_1 = images_per_second(recipe, total)
        recipe_2 = images_per_second(recipe, total)

        # 1b. bonedb: decode once in parallel, cache uint8, batches of RGB float.
        spec = ImageSpec(args.input)
        cached = decoded_dataset(train, spec, cache="memory")
        ours = cached.map(lambda i, x, y: (spec.model_input(x), y), num_parallel_calls=tf.data.AUTOTUNE) \
            .shuffle(4096, seed=0).batch(32).prefetch(tf.data.AUTOTUNE)
        ours_1 = images_per_second(ours, total)
        ours_2 = images_per_second(ours, total)

        # 2. Phase 1 for 5 epochs on MobileNetV2 (random weights: the speed is the same as ImageNet's).
        subset = train.take(range(min(args.phase1_images, total)))
        labels = np.asarray(subset.labels)
        backbone = get_backbone("mobilenetv2")
        model = build_classifier(backbone, args.input, len(BODY_PARTS), weights=None, augment="paper")
        model.get_layer("backbone").trainable = False
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        frozen_pipeline = keras.utils.image_dataset_from_directory(
            tmp / "tree" / "train", image_size=(args.input, args.input), batch_size=32, shuffle=True, seed=0,
            verbose=False).take(-(-len(subset) // 32))
        start = time.perf_counter()
        model.fit(frozen_pipeline, epochs=5, verbose=0)
        frozen_s = time.perf_counter() - start

        model = build_classifier(backbone, args.input, len(BODY_PARTS), weights=None, augment="paper")
        start = time.perf_counter()
        features = feature_extractor(model).predict(
            decoded_dataset(subset, spec, cache=None).map(lambda i, x, y: spec.model_input(x)).batch(64), verbose=0)
        head = head_model(model)
        head.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        head.fit(features, labels[: len(features)], epochs=5, batch_size=32, verbose=0)
        precomputed_s = time.perf_counter() - start
        engine.dispose()

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
          f"python {platform.python_version()}, tensorflow {tf.__version__}")
    print(f"{total} training PNGs of height {args.size} (drawn in {drawn:.0f} s), input {args.input} px")
    print(f"pipeline epoch 1: recipe {recipe_1:7.1f} img/s   bonedb {ours_1:7.1f} img/s   {ours_1 / recipe_1:5.1f}x")
    print(f"pipeline epoch 2: recipe {recipe_2:7.1f} img/s   bonedb {ours_2:7.1f} img/s   {ours_2 / recipe_2:5.1f}x")
    print(f"phase 1, 5 epochs, {len(subset)} images, MobileNetV2: frozen backbone every epoch {frozen_s:6.1f} s, "
          f"precomputed features {precomputed_s:6.1f} s, {frozen_s / precomputed_s:5.1f}x")


if __name__ == "__main__":
    main()

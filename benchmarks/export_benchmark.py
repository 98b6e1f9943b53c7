"""Training from pre-sized TFRecord shards against the Keras recipe, in the same process (issue 13).

1. First epoch, images per second delivered to the model, 224 px input:
   - baseline: keras.utils.image_dataset_from_directory on a class-folder export of 512 px PNGs,
     the paper's augmentation layers mapped over it on the CPU (Keras' tutorial recipe);
   - bonedb: `train --from-export`'s input pipeline on shards exported with --image-size 224
     (parse, uint8 -> RGB float, shuffle, batch, prefetch; augmentation lives in the model).
   The export's own time is reported apart, with the number of runs after which it has paid
   for itself (counting only the first epoch's saving per run: later epochs of the recipe decode
   again, so this is the pessimistic figure).
2. The shard pipeline alone on one core (tf.data held to one thread): images per second per core,
   and the cores that would keep one H200 fed (DenseNet121 float32 at about 1,150 images/s,
   MobileNetV2 bfloat16 at about 4,200 images/s, measured elsewhere).
3. Two local CPU workers (TF_CONFIG, MultiWorkerMirroredStrategy) against one, training the small
   CNN from the same shards: wall time per epoch and the scaling.

    python benchmarks/export_benchmark.py --images 1500 --size 512        # a few minutes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from boneclf.data.export import export_split  # noqa: E402
from boneclf.data.ingest import ingest_mura  # noqa: E402
from boneclf.data.splits import SplitOptions, create_split  # noqa: E402
from boneclf.data.synth import synth_mura  # noqa: E402
from boneclf.ml.export_data import load_export_stage_data  # noqa: E402
from boneclf.ml.image_spec import ImageSpec  # noqa: E402
from boneclf.ml.models import augmentation  # noqa: E402
from boneclf.ml.tf_env import keras as _keras  # noqa: E402
from boneclf.ml.tf_env import tensorflow  # noqa: E402
from boneclf.ml.tfrecords import export_shards, shard_dataset  # noqa: E402
from boneclf.store import migrate  # noqa: E402
from boneclf.store.engine import make_engine  # noqa: E402
from boneclf.vocabulary import BODY_PARTS  # noqa: E402

H200 = {"DenseNet121, float32": 1150, "MobileNetV2, bfloat16": 4200}


def images_per_second(dataset, total: int) -> float:
    start = time.perf_counter()
    for _ in dataset:
        pass
    return total / (time.perf_counter() - start)


def shard_pipeline(tf, folder: Path, spec: ImageSpec, one_core: bool = False):
    data = load_export_stage_data(folder, "bodypart", None)
    train = data.subsets["train"]
    ds = shard_dataset(data.export.folder, data.export.shards["train"], train.image_ids, spec, data.export.stored_spec)
    # As Job._batched: uint8 shuffled and batched, whole batches made model inputs.
    ds = ds.map(lambda i, x, y: (x, y)).shuffle(4096, seed=0).batch(32) \
        .map(lambda x, y: (spec.model_input(x), y), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    if one_core:
        options = tf.data.Options()
        options.threading.private_threadpool_size = 1
        options.threading.max_intra_op_parallelism = 1
        ds = ds.with_options(options)
    return ds, len(train)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def train_wall_time(shards: Path, runs: Path, workers: int, epochs: int) -> tuple[float, dict]:
    """Seconds for `bonedb train --from-export` with WORKERS local processes (until the last one ends), and
    the chief's report of how the images were divided."""
    bonedb = str(Path(sys.executable).parent / "bonedb")
    addresses = [f"127.0.0.1:{p}" for p in free_ports(workers)]
    command = [bonedb, "train", "--stage", "bodypart", "--from-export", str(shards), "--arch", "cnn",
               "--weights", "none", "--augment", "flip", "--no-tensorboard", "--epochs", str(epochs),
               "--patience", str(epochs), "--image-size", "224", "--runs-dir", str(runs), "--json"]
    start = time.perf_counter()
    processes = []
    for index in range(workers):
        env = dict(os.environ)
        if workers > 1:
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": addresses},
                                           "task": {"type": "worker", "index": index}})
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True, start_new_session=True))
    reports = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=3600)
            if process.returncode:
                raise SystemExit(f"training with {workers} worker(s) failed: {err[-2000:]}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, 9)
    return time.perf_counter() - start, reports[0].get("cluster") or {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1500, help="about this many PNGs are drawn")
    parser.add_argument("--size", type=int, default=512, help="height of the PNGs, as MURA's")
    parser.add_argument("--input", type=int, default=224, help="model input size")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the one- and two-worker training")
    parser.add_argument("--skip-workers", action="store_true", help="leave out part 3")
    args = parser.parse_args()
    tf, keras = tensorflow(), _keras()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        engine = make_engine(f"sqlite:///{tmp / 'bench.sqlite'}", create=True)
        migrate.upgrade(engine)
        synth_mura(tmp / "data", patients=max(2, round(args.images / 3.3)), size=args.size, seed=0)
        ingest_mura(engine, tmp / "data")
        create_split(engine, "bench", SplitOptions("mura-v1.1", BODY_PARTS, test_from="carve", val=0.1, test=0.1))
        export_split(engine, "bench", tmp / "tree", stage="bodypart")
        start = time.perf_counter()
        # 128-image shards: enough of them that two workers each read whole shards of their own.
        exported = export_shards(engine, "bench", tmp / "shards", stage="bodypart", image_size=args.input,
                                 shard_size=128).images
        export_s = time.perf_counter() - start
        engine.dispose()

        # 1a. The Keras recipe: decode per epoch, augmentation mapped on the CPU.
        recipe = keras.utils.image_dataset_from_directory(
            tmp / "tree" / "train", image_size=(args.input, args.input), batch_size=32, color_mode="rgb",
            shuffle=True, seed=0, verbose=False)
        augment = keras.Sequential(augmentation("paper"))
        recipe = recipe.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
        spec = ImageSpec(args.input)
        ours, total = shard_pipeline(tf, tmp / "shards", spec)
        recipe_1 = images_per_second(recipe, total)
        # 1b. The shards: a fresh pipeline, so its first epoch is a first epoch.
        ours_1 = images_per_second(ours, total)
        saving_per_run = total / recipe_1 - total / ours_1
        # 2. One core.
        one_core, _ = shard_pipeline(tf, tmp / "shards", spec, one_core=True)
        per_core = images_per_second(one_core, total)

        if not args.skip_workers:
            one, _ = train_wall_time(tmp / "shards", tmp / "runs1", 1, args.epochs)
            two, division = train_wall_time(tmp / "shards", tmp / "runs2", 2, args.epochs)

    load = os.getloadavg()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
          f"python {platform.python_version()}, tensorflow {tf.__version__}; load average at the end "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"{total} training PNGs of height {args.size}, input {args.input} px")
    print(f"export --format tfrecord --image-size {args.input}: {export_s:6.1f} s "
          f"({exported / export_s:.1f} images/s, {exported} images in every subset)")
    print(f"first epoch: recipe {recipe_1:7.1f} img/s   shards {ours_1:7.1f} img/s   {ours_1 / recipe_1:5.1f}x")
    print(f"break-even: the export pays for itself after {export_s / saving_per_run:.1f} run(s) "
          f"(first-epoch saving {saving_per_run:.1f} s per run)")
    print(f"shard pipeline on one core: {per_core:7.1f} img/s per core")
    for name, rate in H200.items():
        print(f"  one H200, {name} at {rate} img/s: {rate / per_core:5.1f} cores of input pipeline")
    if not args.skip_workers:
        print(f"train --from-export, {args.epochs} epochs of the CNN at {args.input} px: one worker {one:6.1f} s, "
              f"two local workers {two:6.1f} s, scaling {one / two:4.2f}x (one: {total} images an epoch; two: "
              f"{division['images_per_epoch']} divided by {division['divided_by']})")


if __name__ == "__main__":
    main()

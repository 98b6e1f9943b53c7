"""TFRecord shards of a split: training-ready (decoded, resized uint8) or the files' own bytes.

One folder per subset, shards of `shard_size` images named `<subset>-00000-of-00004.tfrecord`.
With an image size, each record holds the picture exactly as the run's ImageSpec.decode makes it
((size, size, 1) uint8, padded or Canny as asked), so training from the shards decodes nothing;
without one, the encoded file bytes as they are on disk. Records keep their labels and identity.
split.json names the image spec, the class names and the shards.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy import Engine

from boneclf.data.export import (
    AtomicTree,
    ExportReport,
    check_target,
    flagged_count,
    new_report,
    plan_export,
    write_manifest,
    write_marker,
)
from boneclf.errors import BonedbError
from boneclf.progress import ProgressFactory, silent
from boneclf.vocabulary import BODYPART, FRACTURE, FRACTURE_CLASSES, STAGES

from .file_screen import refusal
from .image_spec import ImageSpec
from .tf_env import tensorflow

# 1024 images of 224 px are 51 MB a shard: big enough for fast sequential reads, small enough that a
# subset of a few thousand images still splits into several shards for several workers.
SHARD_SIZE = 1024
STORED_SPEC_FIELDS = ("size", "pad", "canny")  # all that decides the stored pixels


def export_shards(engine: Engine, name: str, out: Path, *, stage: str = FRACTURE,
                  parts: tuple[str, ...] | None = None, image_size: int | None = None, pad: bool = False,
                  canny: bool = False, shard_size: int | None = None, force: bool = False, confirm=None,
                  progress: ProgressFactory = silent, include_flagged: bool = False) -> ExportReport:
    """Split NAME as TFRecord shards under OUT/<subset>/, with manifest.csv and split.json, atomically.

    With `image_size`, images are stored decoded and resized (the spec in split.json); else as file bytes."""
    if stage not in STAGES:
        raise BonedbError(f"unknown --stage {stage!r}")
    if image_size is None and (pad or canny):
        raise BonedbError("--pad and --canny shape decoded images: give --image-size too")
    if image_size is not None and image_size < 8:
        raise BonedbError(f"--image-size {image_size}: use 8 pixels or more")
    shard_size = shard_size or SHARD_SIZE
    if shard_size < 1:
        raise BonedbError(f"--shard-size {shard_size}: at least one image per shard")
    spec = ImageSpec(image_size, pad=pad, canny=canny) if image_size else None
    out = Path(out).absolute()
    split, root, entries = plan_export(engine, name, stage, parts, False, "tfrecord", include_flagged)
    stale = check_target(out, force, confirm)
    report = new_report(out, name, stage, "copy", "tfrecord", entries)
    report.flagged_left_out = 0 if include_flagged else flagged_count(engine, name, parts)
    class_names = sorted({e.part for e in entries}) if stage == BODYPART else FRACTURE_CLASSES
    tree = AtomicTree(out)
    with tree as partial:
        entries, shards = write_shards(partial, root, entries, stage, shard_size, spec, progress)
        write_manifest(partial, entries)
        stored = {k: getattr(spec, k) for k in STORED_SPEC_FIELDS} if spec else None
        write_marker(partial, split, stage=stage, combined=False, link="copy", fmt="tfrecord", parts=parts,
                     extra={"image_spec": stored, "class_names": class_names, "shard_size": shard_size,
                            "shards": shards,
                            "pixels": "uint8 (size, size, 1), row-major" if spec else "encoded file bytes"})
    report.replaced_previous, report.stale_removed = tree.replaced, stale + tree.stale_removed
    return report


def write_shards(partial: Path, root: Path, entries: list, stage: str, shard_size: int, spec: ImageSpec | None,
                 progress: ProgressFactory) -> tuple[list, dict[str, list[str]]]:
    """Write the shards; returns the entries with their record addresses and the shard files per subset."""
    tf = tensorflow()
    parts = sorted({e.part for e in entries})
    placed: list = []
    shards_of: dict[str, list[str]] = {}
    with progress(len(entries), "Writing TFRecords") as advance:
        for subset in sorted({e.subset for e in entries}):
            rows = [e for e in entries if e.subset == subset]
            count = max(1, -(-len(rows) // shard_size))
            (partial / subset).mkdir()
            images = _images(root, rows, spec)
            shards_of[subset] = []
            for shard in range(count):
                name = f"{subset}/{subset}-{shard:05d}-of-{count:05d}.tfrecord"
                shards_of[subset].append(name)
                with tf.io.TFRecordWriter(str(partial / name)) as writer:
                    for index, e in enumerate(rows[shard * shard_size:(shard + 1) * shard_size]):
                        label = parts.index(e.part) if stage == BODYPART else e.label
                        writer.write(_example(tf, next(images), e, label, decoded=spec is not None)
                                     .SerializeToString(deterministic=True))
                        placed.append(e._replace(exported_path=f"{name}#{index}"))
                        advance(1)
    return placed, shards_of


def _images(root: Path, rows: list, spec: ImageSpec | None):
    """The bytes each record stores, in the rows' order: decoded in parallel when a spec is given."""
    for e in rows:  # screened before any is decoded, now or when `train --from-export` reads the records
        full = root / e.source_path
        why = refusal(str(full)) or (None if full.is_file() else "missing")
        if why:
            raise BonedbError(f"{full}: {why} (image {e.image_id}); restore or replace it, or find every such "
                              "file with `bonedb audit dataset`; nothing was exported")
    if spec is None:
        for e in rows:
            yield (root / e.source_path).read_bytes()
        return
    tf = tensorflow()
    paths = [str(root / e.source_path) for e in rows]
    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(rows), dtype=np.int64), paths))
    ds = ds.map(lambda i, p: (i, spec.decode(tf.io.read_file(p))), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True).ignore_errors()
    expected = 0
    for index, image in ds:
        if int(index) != expected:  # the record before it could not be decoded
            break
        yield image.numpy().tobytes()
        expected += 1
    if expected < len(rows):
        bad = rows[expected]
        raise BonedbError(f"{root / bad.source_path}: cannot be decoded as an image (image {bad.image_id}); "
                          "replace the file or leave its part out with --parts; nothing was exported")


def _example(tf, image: bytes, e, label: int, *, decoded: bool):
    def b(value: str | bytes):
        data = value if isinstance(value, bytes) else value.encode()
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))

    def i(value: int):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    return tf.train.Example(features=tf.train.Features(feature={
        "pixels" if decoded else "image": b(image), "label": i(label), "abnormal": i(e.label), "part": b(e.part),
        "patient": b(e.patient), "study": i(e.study), "path": b(e.source_path), "image_id": i(e.image_id),
    }))


FEATURES = {
    "label": "int64", "abnormal": "int64", "part": "string",
    "patient": "string", "study": "int64", "path": "string", "image_id": "int64",
}


def parse_example(serialized, *, decoded: bool = False):
    """Parse one record written by write_shards (for tf.data pipelines): "pixels" (raw uint8) when the
    export was decoded, else "image" (file bytes)."""
    tf = tensorflow()
    spec = {k: tf.io.FixedLenFeature([], tf.string if v == "string" else tf.int64) for k, v in FEATURES.items()}
    spec["pixels" if decoded else "image"] = tf.io.FixedLenFeature([], tf.string)
    return tf.io.parse_single_example(serialized, spec)


def shard_dataset(folder: Path, files: list[str], image_ids: list[int], spec: ImageSpec, stored: dict | None):
    """(index, (size, size, 1) uint8 image, label) for the records of FILES whose image_id is in IMAGE_IDS
    (index: its position there); records of other images are skipped. A decoded export's pixels are used
    as stored (their spec must be SPEC's); an encoded one's are decoded with SPEC, undecodable ones dropped."""
    tf = tensorflow()
    if stored is not None and any(stored[k] != getattr(spec, k) for k in STORED_SPEC_FIELDS):
        raise BonedbError(f"{folder} holds images made with {stored}, not {spec.to_dict()}: train with the "
                          "export's image size and options, or export again")
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(image_ids, tf.int64),
                                            tf.range(len(image_ids), dtype=tf.int64)), default_value=-1)
    ds = tf.data.TFRecordDataset([str(folder / f) for f in files])

    def parse(record):
        features = parse_example(record, decoded=stored is not None)
        if stored is not None:
            image = tf.reshape(tf.io.decode_raw(features["pixels"], tf.uint8), (spec.size, spec.size, 1))
        else:
            image = spec.decode(features["image"])
        return table.lookup(features["image_id"]), image, features["label"]

    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if stored is None:
        ds = ds.ignore_errors()
    return ds.filter(lambda i, _x, _y: i >= 0)

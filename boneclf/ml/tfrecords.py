"""TFRecord shards of a split, for multi-worker training at scale.

One folder per subset, shards of SHARD_SIZE images named `<subset>-00000-of-00004.tfrecord`.
Each record holds the encoded image bytes as they are on disk (no re-encoding) and its labels.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from boneclf.data.export import (
    AtomicTree,
    ExportReport,
    check_target,
    new_report,
    plan_export,
    write_manifest,
    write_marker,
)
from boneclf.errors import BonedbError
from boneclf.progress import ProgressFactory, silent

from .tf_env import tensorflow

SHARD_SIZE = 1024


def export_shards(engine: Engine, name: str, out: Path, *, stage: str = "fracture",
                  parts: tuple[str, ...] | None = None, force: bool = False, confirm=None,
                  progress: ProgressFactory = silent) -> ExportReport:
    """Split NAME as TFRecord shards under OUT/<subset>/, with manifest.csv and split.json, atomically."""
    if stage not in ("bodypart", "fracture"):
        raise BonedbError(f"unknown --stage {stage!r}")
    out = Path(out).absolute()
    split, root, entries = plan_export(engine, name, stage, parts, False, "tfrecord")
    check_target(out, force, confirm)
    report = new_report(out, name, stage, "copy", "tfrecord", entries)
    tree = AtomicTree(out)
    with tree as partial:
        entries = write_shards(partial, root, entries, stage, SHARD_SIZE, progress)
        write_manifest(partial, entries)
        write_marker(partial, split, stage=stage, combined=False, link="copy", fmt="tfrecord", parts=parts)
    report.replaced_previous = tree.replaced
    return report


def write_shards(partial: Path, root: Path, entries: list, stage: str, shard_size: int,
                 progress: ProgressFactory) -> list:
    tf = tensorflow()
    parts = sorted({e.part for e in entries})
    placed = []
    with progress(len(entries), "Writing TFRecords") as advance:
        for subset in sorted({e.subset for e in entries}):
            rows = [e for e in entries if e.subset == subset]
            shards = max(1, -(-len(rows) // shard_size))
            (partial / subset).mkdir()
            for shard in range(shards):
                name = f"{subset}/{subset}-{shard:05d}-of-{shards:05d}.tfrecord"
                with tf.io.TFRecordWriter(str(partial / name)) as writer:
                    for index, e in enumerate(rows[shard * shard_size:(shard + 1) * shard_size]):
                        label = parts.index(e.part) if stage == "bodypart" else e.label
                        writer.write(_example(tf, (root / e.source_path).read_bytes(), e, label)
                                     .SerializeToString(deterministic=True))
                        placed.append(e._replace(exported_path=f"{name}#{index}"))
                        advance(1)
    return placed


def _example(tf, image: bytes, e, label: int):
    def b(value: str | bytes):
        data = value if isinstance(value, bytes) else value.encode()
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))

    def i(value: int):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    return tf.train.Example(features=tf.train.Features(feature={
        "image": b(image), "label": i(label), "abnormal": i(e.label), "part": b(e.part),
        "patient": b(e.patient), "study": i(e.study), "path": b(e.source_path), "image_id": i(e.image_id),
    }))


FEATURES = {
    "image": "string", "label": "int64", "abnormal": "int64", "part": "string",
    "patient": "string", "study": "int64", "path": "string", "image_id": "int64",
}


def parse_example(serialized):
    """Decode one record written by write_shards (for tf.data pipelines)."""
    tf = tensorflow()
    spec = {k: tf.io.FixedLenFeature([], tf.string if v == "string" else tf.int64) for k, v in FEATURES.items()}
    return tf.io.parse_single_example(serialized, spec)

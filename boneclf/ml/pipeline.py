"""The tf.data input pipeline: decode once, in parallel; cache; shuffle; batch; prefetch.

Images are decoded as grayscale (MURA is grayscale; some files are stored as RGB), resized
(optionally keeping the aspect ratio by padding), and cached as one uint8 channel, so a cached
224 px image costs 50 KB and later epochs skip decoding entirely. The three channels ImageNet
backbones expect are made after the cache. Both steps are the run's ImageSpec, the same one that
evaluation and prediction use. Augmentation is not here: it lives in the model, so
it runs on the accelerator when there is one and is off at inference.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from boneclf.data.hashing import content_hash
from boneclf.data.verify import read_regular
from boneclf.errors import BonedbError
from boneclf.files import atomic_write
from boneclf.progress import ProgressFactory, silent

from .file_screen import refused
from .image_spec import ImageSpec
from .tf_env import tensorflow


@dataclass
class Examples:
    """Images and labels, in a fixed order."""

    image_ids: list[int]
    paths: list[str]  # absolute
    labels: list[int]
    studies: list[str]  # study identity, for study-level scoring
    parts: list[str]
    hashes: list[str | None] | None = None  # the files' content hashes (sha256), keys of the decoded cache

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, indices) -> Examples:
        indices = list(indices)
        return Examples(image_ids=[self.image_ids[i] for i in indices], paths=[self.paths[i] for i in indices],
                        labels=[self.labels[i] for i in indices], studies=[self.studies[i] for i in indices],
                        parts=[self.parts[i] for i in indices],
                        hashes=[self.hashes[i] for i in indices] if self.hashes is not None else None)


def decoded_dataset(examples: Examples, spec: ImageSpec, *, cache: str | None = "memory"):
    """(index, image uint8, label) for every decodable image, cached after the first pass.

    Files TensorFlow must not decode (file_screen.py) are left out first; undecodable files are dropped
    (ignore_errors). Both are found afterwards by their missing index.
    """
    tf = tensorflow()
    blocked = refused(examples.paths)
    kept = [i for i in range(len(examples)) if i not in blocked]
    ds = tf.data.Dataset.from_tensor_slices((
        np.asarray(kept, dtype=np.int64), tf.constant([examples.paths[i] for i in kept], tf.string),
        np.asarray([examples.labels[i] for i in kept], dtype=np.int64)))
    ds = ds.map(lambda i, p, y: (i, spec.decode(tf.io.read_file(p)), y),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors()
    if cache == "memory":
        ds = ds.cache()
    elif cache:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        ds = ds.cache(cache)
    return ds


def warm(ds, total: int, progress: ProgressFactory = silent, label: str = "Decoding images",
         check=lambda: None) -> set[int]:
    """Run one full pass (filling the cache); returns the indices that decoded. `check` runs between batches
    (training passes one that raises KeyboardInterrupt after a deferred Ctrl-C)."""
    seen: set[int] = set()
    with progress(total, label) as advance:
        for indices, _images, _labels in ds.batch(256):
            batch = indices.numpy().tolist()
            seen.update(batch)
            advance(len(batch))
            check()
    return seen


def cache_key(spec: ImageSpec) -> str:
    """The folder of a decoded cache that holds images made by SPEC (all that decides their pixels)."""
    return f"{spec.size}px" + ("-pad" if spec.pad else "") + ("-canny" if spec.canny else "")


def persistent_dataset(examples: Examples, spec: ImageSpec, cache_dir: Path, progress: ProgressFactory = silent,
                       label: str = "Decoding images", check=lambda: None) -> tuple[object, list[int]]:
    """(dataset of (index, image uint8, label), indices of undecodable images), through a decoded cache that
    outlives the run: CACHE_DIR/<spec>/<hash[:2]>/<content hash>.u8 holds an image's uint8 pixels, so a later
    run on the same images and spec decodes nothing. Images missing from it are decoded in parallel and
    added (each file written whole, then renamed: a crash leaves no torn entry). Images ingested without
    --verify have no stored hash: their files are read and hashed (not decoded) on every run."""
    tf = tensorflow()
    folder = Path(cache_dir) / cache_key(spec)
    hashes = list(examples.hashes or [None] * len(examples))
    unknown = [i for i, h in enumerate(hashes) if h is None]
    if unknown:
        with ThreadPoolExecutor(4) as pool:  # hashlib releases the GIL on large buffers
            for i, h in zip(unknown, pool.map(_file_hash, [examples.paths[i] for i in unknown])):
                hashes[i] = h
    entries = [folder / h[:2] / f"{h}.u8" if h else None for h in hashes]
    # Unhashable files could not be read (missing, or not a regular file). decoded_dataset screens the others
    # before TensorFlow decodes them: those it refuses do not come back, and are undecodable too.
    undecodable = {i for i, entry in enumerate(entries) if entry is None}
    missing = [i for i, entry in enumerate(entries) if entry is not None and not entry.is_file()]
    if missing:
        decoded: set[int] = set()
        with progress(len(missing), label) as advance:
            for indices, images, _labels in decoded_dataset(examples.take(missing), spec, cache=None).batch(64):
                for j, image in zip(indices.numpy().tolist(), images.numpy()):
                    entry = entries[missing[j]]
                    assert entry is not None
                    atomic_write(entry, image.tobytes())
                    decoded.add(missing[j])
                advance(len(indices))
                check()  # between batches, as in warm()
        undecodable |= set(missing) - decoded
    kept = [i for i in range(len(examples)) if i not in undecodable]  # every one of them is in the cache now
    ds = tf.data.Dataset.from_tensor_slices((
        np.asarray(kept, dtype=np.int64), tf.constant([str(entries[i]) for i in kept], tf.string),
        np.asarray([examples.labels[i] for i in kept], dtype=np.int64)))
    shape = (spec.size, spec.size, 1)

    def load(i, path, y):
        return i, tf.reshape(tf.io.decode_raw(tf.io.read_file(path), tf.uint8), shape), y

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()
    return ds, sorted(undecodable)


def _file_hash(path: str) -> str | None:
    try:
        return content_hash(read_regular(Path(path)))  # a FIFO is refused, not read (which would block)
    except (OSError, BonedbError):
        return None  # missing or not a regular file: the image is reported as skipped

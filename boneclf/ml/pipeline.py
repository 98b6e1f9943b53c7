"""The tf.data input pipeline: decode once, in parallel; cache; shuffle; batch; prefetch.

Images are decoded as grayscale (MURA is grayscale; some files are stored as RGB), resized
(optionally keeping the aspect ratio by padding), and cached as one uint8 channel, so a cached
224 px image costs 50 KB and later epochs skip decoding entirely. The three channels ImageNet
backbones expect are made after the cache. Both steps are the run's ImageSpec, the same one that
evaluation and prediction use. Augmentation is not here: it lives in the model, so
it runs on the accelerator when there is one and is off at inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from boneclf.progress import ProgressFactory, silent

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

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, indices) -> Examples:
        return Examples(*([values[i] for i in indices] for values in
                          (self.image_ids, self.paths, self.labels, self.studies, self.parts)))


def decoded_dataset(examples: Examples, spec: ImageSpec, *, cache: str | None = "memory"):
    """(index, image uint8, label) for every decodable image, cached after the first pass.

    Undecodable files are dropped (ignore_errors) and found afterwards by their missing index.
    """
    tf = tensorflow()
    ds = tf.data.Dataset.from_tensor_slices(
        (np.arange(len(examples), dtype=np.int64), examples.paths, np.asarray(examples.labels, dtype=np.int64))
    )
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

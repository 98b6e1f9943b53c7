"""What `bonedb train` is asked to do: the options of a run, checked and stored with it.

Light to import (no TensorFlow): evaluation, prediction and the web read a stored run's config
without loading the trainer.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from boneclf.errors import BonedbError
from boneclf.vocabulary import STAGES

from .backbones import STAGE_DEFAULTS, get_backbone
from .image_spec import ImageSpec, spec_for

# persistent: decoded images kept across runs in cache_dir (keyed by content hash and image spec) and in
# memory during the run; memory: decoded once per run; disk: the run's own tf.data cache; none: every epoch.
CACHE_MODES = ("persistent", "memory", "disk", "none")
# What `--resume` may change: how the run is fed and logged, not what it learns from or how.
RESUMABLE = ("tensorboard", "batch_size", "cache", "epochs", "patience")


@dataclass
class TrainConfig:
    stage: str
    split: str
    parts: tuple[str, ...] | None = None
    shared: bool = False  # stage 2: one model over all chosen parts instead of one per part
    arch: str | None = None
    weights: str = "imagenet"  # imagenet | none | path to a no-top weights file
    image_size: int | None = None
    epochs: int = 10
    head_epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 42
    fine_tune_from: float = 0.3  # top fraction of the backbone unfrozen in phase 2
    mixed_precision: bool = False
    pad: bool = False
    canny: bool = False
    augment: str = "paper"
    cache: str = "persistent"
    cache_dir: str | None = None  # the persistent decoded cache; default <runs_dir>/decoded-cache
    precompute: bool = True
    patience: int = 5
    tensorboard: bool = True
    runs_dir: str = "runs"
    from_export: str | None = None  # an export folder to train from, with no database

    def resolved(self) -> TrainConfig:
        if self.stage not in STAGES:
            raise BonedbError(f"--stage {self.stage!r}: choose bodypart or fracture")
        arch = self.arch or STAGE_DEFAULTS[self.stage]
        backbone = get_backbone(arch)
        size = self.image_size or backbone.default_size
        if size < backbone.min_size:
            raise BonedbError(f"--image-size {size} is too small for {arch}: use {backbone.min_size} or more")
        if self.epochs < 1 or self.head_epochs < 0 or self.batch_size < 1 or self.patience < 1:
            raise BonedbError(f"--epochs {self.epochs}, --head-epochs {self.head_epochs}, --batch-size "
                              f"{self.batch_size}, --patience {self.patience}: epochs, batch size and patience are "
                              "at least 1 (head epochs at least 0)")
        if not self.lr > 0:
            raise BonedbError(f"--lr {self.lr}: a learning rate above 0")
        if self.cache not in CACHE_MODES:
            raise BonedbError(f"--cache {self.cache!r}: choose {', '.join(CACHE_MODES)}")
        if not 0 < self.fine_tune_from <= 1:
            raise BonedbError(f"--fine-tune-from {self.fine_tune_from}: a fraction of the backbone in (0, 1]")
        if self.weights not in ("imagenet", "none") and not Path(self.weights).is_file():
            raise BonedbError(f"--weights {self.weights}: no such file (use imagenet, none or a weights file)")
        check_tensorboard(self.tensorboard)
        return replace(self, arch=arch, image_size=size, parts=tuple(sorted(self.parts)) if self.parts else None)

    # The two accessors below are for a resolved config, whose arch, size and parts are set.
    @property
    def architecture(self) -> str:
        assert self.arch is not None, "a resolved config names its architecture"
        return self.arch

    @property
    def size(self) -> int:
        assert self.image_size is not None, "a resolved config has an image size"
        return self.image_size

    def image_spec(self) -> ImageSpec:
        """How this run's images become model inputs (on a resolved config)."""
        return spec_for(self.architecture, self.size, pad=self.pad, canny=self.canny)

    def to_parameters(self) -> dict[str, Any]:
        """The config as stored with the run."""
        data = asdict(self)
        data["parts"] = list(self.parts) if self.parts else None
        return data

    @classmethod
    def from_parameters(cls, parameters: dict[str, Any]) -> TrainConfig:
        """A stored run's config; options added to bonedb since it was recorded take their defaults."""
        known = {k: v for k, v in parameters.items() if k in cls.__dataclass_fields__}
        if known.get("parts"):
            known["parts"] = tuple(known["parts"])
        return cls(**known)

    def with_export_spec(self) -> TrainConfig:
        """This config with its export's split name and, for decoded shards, their image size, pad and Canny."""
        from .export_data import read_marker

        assert self.from_export is not None
        folder = Path(self.from_export).absolute()
        marker = read_marker(folder)
        config = replace(self, from_export=str(folder), split=marker["split"])
        stored = marker.get("image_spec")
        if not stored:
            return config
        if config.image_size not in (None, stored["size"]):
            raise BonedbError(f"{folder} holds images decoded at {stored['size']} px: leave out --image-size "
                              f"{config.image_size}, or export the split again with --image-size {config.image_size}")
        return replace(config, image_size=stored["size"], pad=stored["pad"], canny=stored["canny"])

    def changed_on_resume(self, changes: dict[str, Any], run_id: int) -> TrainConfig:
        """This (recorded) config with CHANGES applied; refuses, by option name, any change outside RESUMABLE."""
        changes = {k: v for k, v in changes.items() if getattr(self, k, None) != v}
        refused = sorted(option_name(k) for k in changes if k not in RESUMABLE)
        if refused:
            raise BonedbError(f"--resume {run_id} continues the run as recorded: {', '.join(refused)} cannot change "
                              f"(only {resumable_options()} can); start a new run with `bonedb train` instead")
        config = replace(self, **changes)
        check_tensorboard(config.tensorboard)
        return config


def option_name(field_name: str) -> str:
    """The `bonedb train` option that sets a TrainConfig field."""
    return {"tensorboard": "--no-tensorboard", "precompute": "--no-precompute",
            "split": "--split", "runs_dir": "--runs-dir"}.get(field_name, "--" + field_name.replace("_", "-"))


def resumable_options() -> str:
    """The options `--resume` accepts, for messages."""
    return ", ".join(option_name(k) for k in RESUMABLE)


def check_tensorboard(wanted: bool) -> None:
    if wanted and importlib.util.find_spec("tensorboard") is None:
        raise BonedbError("TensorBoard logging is on, but the tensorboard package is not installed: "
                          "`pip install tensorboard`, or pass --no-tensorboard")

"""What `bonedb tune` searches and its budget: light to import (no TensorFlow, no KerasTuner), so the command
line reads its defaults from here without loading the trainer."""

from __future__ import annotations

from dataclasses import asdict, dataclass

TUNERS = ("bayesian", "random")
# The default budget is sized for a 2-core CPU: at most 8 trials of the small from-scratch CNN, and no trial
# starts after 2 hours (the CPU budget issue 22 sets). A GPU user raises both and widens the space.
MAX_TRIALS = 8
MAX_HOURS = 2.0


@dataclass(frozen=True)
class TuneSpace:
    """The options searched. One value fixes an option; an lr range with equal ends fixes it too."""

    archs: tuple[str, ...] = ("cnn",)
    image_sizes: tuple[int, ...] = (64, 96, 128)
    lr: tuple[float, float] = (1e-4, 3e-3)
    augments: tuple[str, ...] = ("paper", "flip")
    epochs: tuple[int, ...] = (10, 20, 30)

    def declare(self, hp) -> None:
        """Declare the space on KerasTuner's HyperParameters HP."""
        hp.Choice("arch", list(self.archs))
        hp.Choice("image_size", list(self.image_sizes))
        low, high = self.lr
        if low == high:
            hp.Fixed("lr", low)
        else:
            hp.Float("lr", low, high, sampling="log")
        hp.Choice("augment", list(self.augments))
        hp.Choice("epochs", list(self.epochs))

    def to_dict(self) -> dict:
        return {key: list(value) for key, value in asdict(self).items()}

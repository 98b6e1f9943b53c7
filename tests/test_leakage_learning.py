"""The point of leak groups, shown by learning: a model scored on a random carve of a set full of
copies looks far better than it is; on bonedb's grouped split it scores what it scores on pictures
it has never seen.

The set: pictures whose labels are drawn at random (nothing in a picture predicts its label), each
present as a family of copies (the original, a byte copy, a JPEG re-encode, a 2-degree rotation).
Only memorising a family's label can score above chance, so a carve that puts copies in train and
test scores well, and a split that keeps families whole scores ~0.5, like a clean held-out set.
If grouping were turned off, the "grouped" split would leak like the carve and the test would fail.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from boneclf.data.folder_dataset import ingest_folder
from boneclf.data.radiograph import draw_radiograph
from boneclf.data.splits import SplitOptions, create_split, split_image_paths
from boneclf.ml.tf_env import keras as _keras

FAMILIES, HELD_OUT, SIDE = 150, 150, 16


def _copies(picture: PILImage.Image) -> list[PILImage.Image]:
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=70)
    return [picture, picture.copy(), PILImage.open(io.BytesIO(buffer.getvalue())),
            picture.rotate(2, resample=PILImage.Resampling.BILINEAR, fillcolor=0)]


def _draw(seed: int) -> PILImage.Image:
    rng = random.Random(seed)
    return draw_radiograph(rng.choice(("hand", "wrist", "elbow")), False, 48, 64, rng)[0]


def _vector(picture: PILImage.Image) -> np.ndarray:
    return np.asarray(picture.convert("L").resize((SIDE, SIDE), PILImage.Resampling.BOX), np.float32).ravel() / 255


def _load(root: Path, paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    x = np.stack([_vector(PILImage.open(root / p)) for p in paths])
    y = np.array([1.0 if p.startswith("fractured/") else 0.0 for p in paths], np.float32)
    return x, y


def _fit_and_score(train: tuple, tests: list[tuple]) -> list[float]:
    keras = _keras()
    keras.utils.set_random_seed(0)
    mean, std = train[0].mean(axis=0), train[0].std(axis=0) + 1e-3
    model = keras.Sequential([keras.Input((SIDE * SIDE,)), keras.layers.Dense(256, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy")
    model.fit((train[0] - mean) / std, train[1], epochs=150, batch_size=64, verbose=0)
    return [float(((model.predict((x - mean) / std, verbose=0)[:, 0] > 0.5) == (y > 0.5)).mean()) for x, y in tests]


def test_random_carve_is_inflated_by_copies_and_the_grouped_split_is_not(engine, tmp_path):
    root = tmp_path / "copies"
    labels = random.Random(42)
    for family in range(FAMILIES):
        label = ("fractured", "not fractured")[labels.random() < 0.5]
        (root / label).mkdir(parents=True, exist_ok=True)
        for n, copy in enumerate(_copies(_draw(family))):
            copy.save(root / label / f"f{family:03d}-{n}.png")
    held_out = [(_draw(10_000 + k), float(labels.random() < 0.5)) for k in range(HELD_OUT)]
    clean = (np.stack([_vector(p) for p, _ in held_out]), np.array([y for _, y in held_out], np.float32))

    ingest_folder(engine, root, dataset="copies")
    options = dict(val=0.0, test=0.3, test_from="carve", seed=5)
    # Each image is its own "patient" in a folder set: grouping by patient alone is a random carve.
    create_split(engine, "carve", SplitOptions("copies", (), group_by="patient", allow_leaks=True, **options))
    create_split(engine, "grouped", SplitOptions("copies", (), **options))

    scores = {}
    for name in ("carve", "grouped"):
        subsets = split_image_paths(engine, name)
        [scores[name], scores[f"{name} -> clean"]] = _fit_and_score(
            _load(root, subsets["train"]), [_load(root, subsets["test"]), clean])
    # Leakage: the carve's test copies are remembered, well beyond what the same model does on new pictures.
    assert scores["carve"] >= 0.8, scores
    assert scores["carve"] - scores["grouped"] >= 0.25, scores
    # The grouped split's score is an honest estimate: the clean held-out score, within noise. ~45 test
    # families (copies of one family are one draw) and 150 held-out pictures: the standard error of the
    # difference is ~0.085, so 0.25 is ~3 of them. (A few 2-degree copies escape the near hash at this
    # size, BENCHMARKS.md; they leak a little into the grouped score.)
    assert abs(scores["grouped"] - scores["grouped -> clean"]) <= 0.25, scores

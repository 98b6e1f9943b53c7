"""The shortcut a burned-in side marker offers, shown by learning, and what `--mask-markers` does about it.

Synthetic radiographs (`boneclf.data.radiograph`: a humerus, broken when abnormal) carry a lead "R" in a
corner: in train and val only the abnormal ones do, so the marker predicts the label perfectly there; in
test it is on half the pictures at random, whatever their label. A model trained on the pictures as they
are learns the marker (the easier cue): on test it falls toward chance, and its Grad-CAM sits on the marker
(`evaluate` flags it). The same training with `--mask-markers` never sees the marker (painted over before
resizing) and must read the bone: it keeps its accuracy, with little heat where the marker was. A control
trained with shuffled labels (masked) must stay near chance: what the masked model scores is learned, not
leaked by the masking.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import ImageDraw, ImageFont

from boneclf.data.folder_dataset import ingest_folder
from boneclf.data.radiograph import draw_radiograph
from boneclf.ml.evaluation import evaluate_run
from boneclf.ml.training import TrainConfig, train
from boneclf.store import migrate
from boneclf.store.engine import make_engine

from conftest import FAST

SIDE = 96  # pixels of each drawn picture
COUNTS = {"train": 320, "val": 40, "test": 120}


def _picture(abnormal: bool, marked: bool, rng: random.Random):
    picture, _ = draw_radiograph("humerus", abnormal, SIDE, SIDE, rng)
    if marked:
        font = ImageFont.load_default(size=18)
        x, y = rng.choice((4, SIDE - 18)), rng.choice((4, SIDE - 24))
        ImageDraw.Draw(picture).text((x, y), "R", fill=255, font=font)
    return picture


def _tree(root: Path, *, shuffled: bool = False) -> Path:
    rng = random.Random(5)
    for subset, count in COUNTS.items():
        labels = [k % 2 == 0 for k in range(count)]
        filed = rng.sample(labels, len(labels)) if shuffled and subset != "test" else labels
        for k, (abnormal, folder_label) in enumerate(zip(labels, filed)):
            marked = abnormal if subset != "test" else rng.random() < 0.5
            folder = root / subset / ("fractured" if folder_label else "not fractured")
            folder.mkdir(parents=True, exist_ok=True)
            _picture(abnormal, marked, random.Random(f"{subset}-{k}")).save(folder / f"{subset}{k:04d}.png")
    return root


def _trained(engine, dataset: str, runs_dir: Path, *, mask_markers: bool, gradcam_sample: int = 100):
    [run] = train(engine, TrainConfig(stage="fracture", split=dataset, parts=("unknown",), image_size=64, epochs=10,
                                      patience=10, batch_size=32, mask_markers=mask_markers, cache="memory",
                                      runs_dir=str(runs_dir), **FAST), verbose=0)
    return evaluate_run(engine, run.run_id, gradcam_sample=gradcam_sample)


def test_a_side_marker_shortcut_is_caught_by_marker_mass_and_removed_by_masking(tmp_path):
    # One backend is enough: this is about learning, and the store's side is tested on both elsewhere.
    engine = make_engine(f"sqlite:///{tmp_path / 'bonedb.sqlite'}", create=True)
    migrate.upgrade(engine)
    ingest_folder(engine, _tree(tmp_path / "shortcut"), dataset="shortcut")
    ingest_folder(engine, _tree(tmp_path / "shuffled", shuffled=True), dataset="shuffled")
    runs = tmp_path / "runs"

    plain = _trained(engine, "shortcut", runs, mask_markers=False)
    masked = _trained(engine, "shortcut", runs, mask_markers=True)
    control = _trained(engine, "shuffled", runs, mask_markers=True, gradcam_sample=0)

    # The plain model learned the marker: on test, where the marker says nothing, it falls toward chance,
    # its Grad-CAM sits on the marker and evaluate flags it.
    assert plain.overall.image.accuracy < 0.7
    assert plain.gradcam.marker_mass["true_positives"] > 0.4
    assert plain.gradcam.looks_at_markers and "--mask-markers" in plain.gradcam.warning()
    # Masked, the model had to read the bone.
    assert masked.overall.image.accuracy >= 0.75
    assert masked.overall.image.accuracy - plain.overall.image.accuracy >= 0.15
    assert masked.gradcam.marker_mass["all"] < 0.1 and not masked.gradcam.looks_at_markers
    assert masked.gradcam.with_markers >= 0.3 * masked.gradcam.images  # the markers were there to be found
    # With shuffled labels nothing is learnable: what the masked model scores is not leaked by the masking.
    assert control.overall.image.accuracy < 0.65
    assert control.gradcam is None

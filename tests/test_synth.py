"""synth reproduces MURA's structure and quirks, deterministically, with learnable pictures."""

from __future__ import annotations

import hashlib
import random
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from boneclf.data.mura_reader import _IMAGE_PATH
from boneclf.data.radiograph import draw_radiograph
from boneclf.data.synth import plan_dataset, synth_mura
from boneclf.errors import BonedbError
from boneclf.vocabulary import BODY_PARTS


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = synth_mura(tmp_path / "a", patients=12, size=40, seed=3)
    b = synth_mura(tmp_path / "b", patients=12, size=40, seed=3)
    c = synth_mura(tmp_path / "c", patients=12, size=40, seed=4)
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b") != tree_digest(tmp_path / "c")
    assert a.counts().images == b.counts().images
    assert c.counts().images > 0


def test_csv_quirks_match_the_real_files(synth_template):
    folder = synth_template / "MURA-v1.1"
    images = (folder / "train_image_paths.csv").read_bytes()
    labels = (folder / "train_labeled_studies.csv").read_bytes()
    assert images.endswith(b".png\r\n") and images.count(b"\r\n") == images.count(b"\n")
    assert b"\r" not in labels and labels.endswith(b"\n")
    for line in images.decode().splitlines():
        assert _IMAGE_PATH.match(line), line
    assert all(line.split(",")[1] in ("0", "1") for line in labels.decode().splitlines())


def test_structure_like_mura():
    plan = plan_dataset(300, seed=1)
    parts_of, studies_of, split_of = defaultdict(set), defaultdict(set), defaultdict(set)
    views = defaultdict(int)
    for image in plan:
        parts_of[image.patient].add(image.part)
        studies_of[image.patient].add((image.part, image.study))
        split_of[image.patient].add(image.split)
        views[(image.patient, image.part, image.study)] += 1
    assert all(len(s) == 1 for s in split_of.values()), "train and valid are patient-disjoint"
    assert {s for (s,) in split_of.values()} == {"train", "valid"}
    assert sum(len(p) > 1 for p in parts_of.values()) >= 20, "patients with several body parts"
    assert max(len(s) for s in studies_of.values()) >= 3, "patients with several studies"
    assert max(views.values()) >= 4 and min(views.values()) == 1
    assert {i.part for i in plan} == set(BODY_PARTS)
    # Study numbers restart per patient and part, as in MURA.
    assert any(i.study == 1 and len(parts_of[i.patient]) > 1 for i in plan)


def test_images_are_grayscale_radiographs_of_the_asked_size(synth_template):
    files = sorted((synth_template / "MURA-v1.1").rglob("*.png"))
    modes = set()
    for path in files:
        with Image.open(path) as image:
            modes.add(image.mode)
            assert image.height == 48 and 16 <= image.width <= 48
    assert modes <= {"L", "RGB"} and "L" in modes


def test_break_is_the_only_difference_between_labels():
    """Same pose and noise, with and without a break: they differ only near the break."""
    for part in BODY_PARTS:
        normal, none = draw_radiograph(part, False, 96, 128, random.Random(5))
        broken, where = draw_radiograph(part, True, 96, 128, random.Random(5))
        assert none is None and where is not None
        diff = np.abs(np.asarray(normal, float) - np.asarray(broken, float))
        ys, xs = np.nonzero(diff > 20)
        assert len(xs) > 0, f"{part}: the break is visible"
        assert np.hypot(xs - where[0], ys - where[1]).max() < 20, f"{part}: change is local to the break"


def test_bad_options():
    with pytest.raises(BonedbError, match="at least 2"):
        plan_dataset(1)
    with pytest.raises(BonedbError, match="between 0 and 1"):
        plan_dataset(10, positive_rate=1.5)


def test_ingest_records_synth_data_as_synthetic_and_a_real_layout_as_not(engine, mura, tmp_path):
    from sqlalchemy import text

    from boneclf.data.ingest import ingest_mura
    from boneclf.data.synth import SYNTH_MARKER

    marker = mura / "MURA-v1.1" / SYNTH_MARKER
    assert marker.is_file(), "synth leaves its marker beside the CSVs"
    assert ingest_mura(engine, mura).synthetic
    # The same layout without the marker (as MURA's own download comes) is not synthetic, under another name.
    real = tmp_path / "real"
    shutil.copytree(mura, real)
    (real / "MURA-v1.1" / SYNTH_MARKER).unlink()
    assert not ingest_mura(engine, real, dataset="looks-real").synthetic
    with engine.connect() as conn:
        flags = dict(conn.execute(text("SELECT name, synthetic FROM datasets")).all())
    assert {name: bool(flag) for name, flag in flags.items()} == {"mura-v1.1": True, "looks-real": False}
    # Synthetic data ingested before bonedb recorded it is marked on its next ingest.
    with engine.begin() as conn:
        conn.execute(text("UPDATE datasets SET synthetic = 0"))
    ingest_mura(engine, mura)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT synthetic FROM datasets WHERE name = 'mura-v1.1'")).scalar() in (1, True)

"""The persistent decoded cache: a second run on the same images and image spec decodes nothing.

Proved with real files: after the first run the dataset's images are moved away, and the second run
still trains on every one of them (from the cache); another image size, or --cache none, cannot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from boneclf.data.hashing import content_hash
from boneclf.data.ingest import ingest_mura
from boneclf.data.splits import SplitOptions, create_split
from boneclf.data.synth import synth_mura
from boneclf.errors import BonedbError
from boneclf.ml.image_spec import ImageSpec
from boneclf.ml.pipeline import cache_key
from boneclf.ml.tf_env import tensorflow
from boneclf.ml.training import TrainConfig, train
from boneclf.ml.training_data import load_stage_data
from boneclf.store import migrate
from boneclf.store.engine import make_engine
from boneclf.vocabulary import BODY_PARTS

from conftest import FAST, synth_sqlite


@pytest.fixture
def small(tmp_path):
    """30 synthetic patients at 32 px, ingested with --verify (content hashes stored), split "s"."""
    engine = make_engine(f"sqlite:///{tmp_path / 'bonedb.sqlite'}", create=True)
    migrate.upgrade(engine)
    synth_mura(tmp_path / "data", patients=30, size=32, seed=3)
    ingest_mura(engine, tmp_path / "data", verify=True)
    create_split(engine, "s", SplitOptions("mura-v1.1", BODY_PARTS, test_from="carve", val=0.15, test=0.15, seed=1))
    yield engine, tmp_path
    engine.dispose()


def test_second_run_on_the_same_split_and_size_decodes_nothing(small, tmp_path):
    engine, folder = small
    cache = tmp_path / "decoded"
    config = TrainConfig(stage="bodypart", split="s", image_size=32, epochs=1, cache_dir=str(cache),
                         runs_dir=str(tmp_path / "runs"), **FAST)
    [first] = train(engine, config, verbose=0)
    data = load_stage_data(engine, "s", "bodypart", None)
    used = set(data.subsets["train"].hashes) | set(data.subsets["val"].hashes)
    entries = sorted((cache / "32px").rglob("*.u8"))
    assert {p.stem for p in entries} == used and all(p.stat().st_size == 32 * 32 for p in entries)
    # The entry is the image spec's own decode of the file.
    some = data.subsets["train"]
    expected = ImageSpec(32).decode(tensorflow().io.read_file(some.paths[0])).numpy()
    stored = (cache / cache_key(ImageSpec(32)) / some.hashes[0][:2] / f"{some.hashes[0]}.u8").read_bytes()
    np.testing.assert_array_equal(np.frombuffer(stored, np.uint8).reshape(32, 32, 1), expected)

    (folder / "data").rename(folder / "away")  # nothing left to decode
    try:
        [second] = train(engine, config, verbose=0)
        assert second.status == "finished" and second.skipped_images == []
        assert second.metrics.skipped_images == 0
        # Another size is another key: every image would need decoding, and none can be.
        with pytest.raises(BonedbError, match="none of the .* train images could be read and decoded"):
            train(engine, TrainConfig(**{**config.__dict__, "image_size": 48}), verbose=0)
        with pytest.raises(BonedbError, match="none of the .* train images could be read and decoded"):
            train(engine, TrainConfig(**{**config.__dict__, "cache": "none"}), verbose=0)
    finally:
        (folder / "away").rename(folder / "data")
    assert first.status == "finished"
    assert not list(Path(cache).rglob(".*.u8.*")), "no partial entries left behind"


def test_images_without_a_stored_hash_are_hashed_not_decoded_again(tmp_path):
    """Ingested without --verify: the key is computed from the file's bytes, the same sha256."""
    engine = synth_sqlite(tmp_path, 12, 32)
    cache = tmp_path / "decoded"
    config = TrainConfig(stage="bodypart", split="s", image_size=32, epochs=1, cache_dir=str(cache),
                         runs_dir=str(tmp_path / "runs"), **FAST)
    [run] = train(engine, config, verbose=0)
    train_ex = load_stage_data(engine, "s", "bodypart", None).subsets["train"]
    assert train_ex.hashes[0] is None
    entry = cache / "32px" / content_hash(Path(train_ex.paths[0]).read_bytes())[:2]
    assert entry.is_dir() and run.status == "finished"
    engine.dispose()

"""Offline ImageNet weights (issue 9, defect 3): the advice is a command that works when pasted, and
`weights import` checks the input size a MobileNetV2 file was made for."""

from __future__ import annotations

import re
import shlex

import h5py
import pytest
from click.testing import CliRunner

from boneclf.cli.main import cli
from boneclf.errors import BonedbError
from boneclf.ml.backbones import build_backbone, get_backbone
from boneclf.ml.training import TrainConfig, train
from boneclf.ml.weights import import_command, import_weights

from conftest import synth_sqlite

MOBILENET = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{}_no_top.h5"


def keras_style_file(path, size: int):
    """A no-top MobileNetV2 weights file in the legacy HDF5 format Keras downloads (random values)."""
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, build_backbone(get_backbone("mobilenetv2"), size, None))
    return path


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No network (Keras' download fails as it does without one) and an empty Keras cache."""
    from keras.src.utils import file_utils

    def no_network(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    from keras.src.backend import config

    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path / "keras"))  # read from $KERAS_HOME at import only
    monkeypatch.chdir(tmp_path)
    return tmp_path / "keras" / "models"


def test_advice_pasted_as_is_makes_training_work_offline(offline, tmp_path):
    engine = synth_sqlite(tmp_path, 12, 32)
    config = TrainConfig(stage="bodypart", split="s", arch="mobilenetv2", weights="imagenet", image_size=96,
                         epochs=1, head_epochs=1, tensorboard=False, augment="none", runs_dir=str(tmp_path / "runs"))
    with pytest.raises(BonedbError) as failed:
        train(engine, config, verbose=0)
    [advice] = re.findall(r"`(bonedb weights import [^`]+)`", str(failed.value))
    assert advice == f"bonedb weights import {MOBILENET.format(96)} --arch mobilenetv2 --image-size 96"

    keras_style_file(tmp_path / MOBILENET.format(96), 96)  # what the user downloaded, as the advice names it
    pasted = CliRunner().invoke(cli, shlex.split(advice)[1:], catch_exceptions=False)
    assert pasted.exit_code == 0, pasted.output
    assert (offline / MOBILENET.format(96)).is_file()
    [run] = train(engine, config, verbose=0)
    assert run.status == "finished"
    engine.dispose()


def test_weights_import_checks_the_input_size(offline, tmp_path):
    file_96 = keras_style_file(tmp_path / MOBILENET.format(96), 96)
    with pytest.raises(BonedbError, match=f"holds mobilenetv2 weights for 96 px, but --image-size 160 needs "
                                          f"{re.escape(MOBILENET.format(160))}"):
        import_weights(file_96, "mobilenetv2", 160)
    assert not offline.exists() or not list(offline.iterdir()), "nothing stored under a wrong name"
    # The size comes from the file's Keras name when --image-size is left out.
    assert import_weights(file_96, "mobilenetv2").name == MOBILENET.format(96)
    renamed = file_96.rename(tmp_path / "mnv2.h5")
    with pytest.raises(BonedbError, match="does not say which: pass --image-size"):
        import_weights(renamed, "mobilenetv2")
    # Sizes Keras has no file for use its 224 px file, so the advice at 64 px names that file, and it imports.
    assert import_command(get_backbone("mobilenetv2"), 64) == (
        f"bonedb weights import {MOBILENET.format(224)} --arch mobilenetv2 --image-size 64")
    file_224 = keras_style_file(tmp_path / MOBILENET.format(224), 64)
    assert import_weights(file_224, "mobilenetv2", 64).name == MOBILENET.format(224)
    # Other architectures have one file whatever the size: no --image-size in their advice.
    assert import_command(get_backbone("densenet121"), 64) == (
        "bonedb weights import densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5 --arch densenet121")

"""One pixel limit, read from the header before any decode, on Pillow's path and TensorFlow's.

A 69-byte PNG claiming 50,000 x 50,000 pixels, a valid 194 KB PNG of 20,000 x 10,000, an animated GIF
whose frames together exceed the limit: each is an undecodable image, named, left out under --skip-bad.
"""

from __future__ import annotations

import io
import resource
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from boneclf.cli.main import cli
from boneclf.data.ingest import ingest_mura
from boneclf.data.pixels import MAX_PIXELS, ImageTooLarge, UnknownFormat, check_pixels, dimensions
from boneclf.data.splits import SplitOptions, create_split
from boneclf.errors import BonedbError
from boneclf.ml.image_spec import ImageSpec
from boneclf.store.schema import Image as ImageRow
from boneclf.store.schema import IngestExclusion
from boneclf.vocabulary import BODY_PARTS

from conftest import snapshot
from hostile import gif_frame_bomb, png_header_bomb, png_real_bomb, small_png


def run(args, url):
    return CliRunner().invoke(cli, ["--database-url", url, *args], catch_exceptions=False)


def image_bytes(fmt: str, size=(300, 200), **save) -> bytes:
    buffer = io.BytesIO()
    Image.new("L" if fmt != "WEBP" else "RGB", size, 90).save(buffer, format=fmt, **save)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    return {"header": png_header_bomb(folder / "header.png"), "real": png_real_bomb(folder / "real.png"),
            "frames": gif_frame_bomb(folder / "frames.gif")}


@pytest.mark.parametrize(("fmt", "save"), [
    ("PNG", {}), ("JPEG", {}), ("JPEG", {"progressive": True}), ("GIF", {}), ("BMP", {}),
    ("WEBP", {"lossless": True}), ("WEBP", {"quality": 50}), ("TIFF", {}),
])
def test_sizes_are_read_from_the_header_of_every_format_training_reads(fmt, save):
    data = image_bytes(fmt, **save)
    found = dimensions(data)
    assert (found.width, found.height, found.frames) == (300, 200, 1)
    for cut in (3, 10, 20):  # a file cut short: unknown, or what its header said; never an exception
        short = dimensions(data[:cut])
        assert short is None or (short.width, short.height) == (300, 200)


def test_a_jpeg_with_exif_before_its_frame_header(tmp_path):
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x010E] = "x" * 30_000  # ImageDescription: a large APP1 segment before SOF
    Image.new("L", (640, 480)).save(buffer, format="JPEG", exif=exif)
    assert dimensions(buffer.getvalue()).pixels == 640 * 480


def test_bombs_are_refused_from_their_header_with_the_limit_named(bombs):
    assert bombs["header"].stat().st_size == 69
    assert 150_000 < bombs["real"].stat().st_size < 250_000  # 194 KB, as found in the trial
    for name, expected in (("header", "50000 x 50000"), ("real", "20000 x 10000"), ("frames", "x 400 frames")):
        with pytest.raises(ImageTooLarge) as caught:
            check_pixels(bombs[name].read_bytes())
        message = str(caught.value)
        assert expected in message and f"{MAX_PIXELS:,}" in message and "BONEDB_MAX_PIXELS" in message
    with pytest.raises(UnknownFormat):
        check_pixels(b"not an image at all")


def test_the_limit_can_be_raised_or_lowered_by_environment(monkeypatch, bombs):
    monkeypatch.setenv("BONEDB_MAX_PIXELS", "1000")
    with pytest.raises(ImageTooLarge):
        check_pixels(image_bytes("PNG", (40, 30)))
    monkeypatch.setenv("BONEDB_MAX_PIXELS", "2_500_000_000")
    assert check_pixels(bombs["header"].read_bytes()).pixels == 2_500_000_000
    monkeypatch.setenv("BONEDB_MAX_PIXELS", "lots")
    with pytest.raises(BonedbError, match="BONEDB_MAX_PIXELS='lots': write a whole number"):
        check_pixels(image_bytes("PNG"))


def test_ingest_verify_names_each_bomb_and_skip_bad_leaves_it_out(db_url, engine, mura, bombs):
    listed = (mura / "MURA-v1.1" / "train_image_paths.csv").read_bytes().decode().splitlines()
    victims = [listed[3], listed[8]]
    png_header_bomb(mura / victims[0])
    (mura / victims[1]).write_bytes(bombs["real"].read_bytes())
    before = snapshot(engine, log=False)

    result = run(["ingest", str(mura), "--verify"], db_url)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if "pixels" in line]
    assert len(errors) == 2 and all(line.startswith("error: MURA-v1.1/train_image_paths.csv:") for line in errors)
    for victim, size in zip(victims, ("50000 x 50000", "20000 x 10000")):
        [line] = [e for e in errors if victim in e]
        assert size in line and "--skip-bad" in line
    assert "Traceback" not in result.output and "unexpected" not in result.output
    assert snapshot(engine, log=False) == before

    result = run(["ingest", str(mura), "--verify", "--skip-bad"], db_url)
    assert result.exit_code == 0, result.output
    assert sum(victim in line for line in result.stderr.splitlines() if line.startswith("skipped:")
               for victim in victims) == 2
    with engine.connect() as conn:
        paths = set(conn.execute(select(ImageRow.path)).scalars())
        left_out = dict(conn.execute(select(IngestExclusion.path, IngestExclusion.reason)).all())
    assert not set(victims) & paths and len(paths) == len(listed) + len(
        (mura / "MURA-v1.1" / "valid_image_paths.csv").read_bytes().decode().splitlines()) - 2
    assert all("pixels" in left_out[victim] for victim in victims)


def test_ingest_folder_leaves_a_bomb_out_by_name(db_url, engine, tmp_path, bombs):
    root = tmp_path / "set"
    for i in range(4):
        small_png(root / "train" / ("fractured" if i % 2 else "normal") / f"ok{i}.png", shade=40 * i)
        small_png(root / "test" / ("fractured" if i % 2 else "normal") / f"fine{i}.png", shade=40 * i + 20)
    png_header_bomb(root / "train" / "fractured" / "bomb.png")
    (root / "test" / "normal" / "big.png").write_bytes(bombs["real"].read_bytes())
    result = run(["ingest-folder", str(root), "--dataset", "set"], db_url)
    assert result.exit_code == 0, result.output
    left = [line for line in result.stderr.splitlines() if line.startswith("left out:")]
    assert len(left) == 2 and any("bomb.png" in line and "50000 x 50000" in line for line in left)
    assert any("big.png" in line and "20000 x 10000" in line for line in left)
    with engine.connect() as conn:
        assert len(conn.execute(select(ImageRow.path)).all()) == 8


def test_duplicates_and_audit_name_a_bomb_ingested_without_verify(db_url, engine, mura):
    ingest_mura(engine, mura)
    create_split(engine, "s", SplitOptions("mura-v1.1", BODY_PARTS, test_from="carve", val=0.15, test=0.15, seed=1))
    victim = (mura / "MURA-v1.1" / "train_image_paths.csv").read_bytes().decode().splitlines()[5]
    png_header_bomb(mura / victim)
    result = run(["audit", "split", "s"], db_url)
    assert "unexpected" not in result.output and "Traceback" not in result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("not hashed:")]
    assert victim in line and "50000 x 50000" in line
    result = run(["duplicates", "compute"], db_url)
    assert result.exit_code == 0, result.output
    [line] = [line for line in result.stderr.splitlines() if line.startswith("unreadable")]
    assert victim in line and "50000 x 50000" in line


def test_a_bombs_thumbnail_is_refused_with_422_not_500(db_url, engine, mura, tmp_path):
    from boneclf.web.app import create_app

    ingest_mura(engine, mura)
    with engine.connect() as conn:
        image_id, path = conn.execute(select(ImageRow.id, ImageRow.path).order_by(ImageRow.id)).first()
    png_header_bomb(mura / path)
    with TestClient(create_app(db_url, cache_dir=tmp_path / "cache")) as client:
        response = client.get(f"/images/{image_id}/thumbnail")
    assert response.status_code == 422  # the server's answer for any stored picture it cannot decode
    assert "50000 x 50000" in response.json()["detail"]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_the_model_input_refuses_a_bomb_before_tensorflow_decodes_it(bombs):
    spec = ImageSpec(32)
    spec.load(image_bytes("PNG", (40, 40)))  # TensorFlow loaded and warm
    before = _rss_mb()
    for name in ("header", "real", "frames"):
        started = time.monotonic()
        with pytest.raises(ImageTooLarge):
            spec.load(bombs[name].read_bytes())
        assert time.monotonic() - started < 1.0, name
    assert _rss_mb() - before < 100, "no decode buffer was allocated"


def test_the_training_pipeline_drops_a_bomb_like_any_undecodable_file(bombs, tmp_path):
    from boneclf.ml.tf_env import tensorflow

    tf = tensorflow()
    good = small_png(tmp_path / "good.png")
    paths = [str(good), str(bombs["header"]), str(bombs["real"]), str(good)]
    spec = ImageSpec(16)
    ds = tf.data.Dataset.from_tensor_slices(paths).map(lambda p: spec.decode(tf.io.read_file(p))).ignore_errors()
    decoded = [x.numpy() for x in ds]
    assert len(decoded) == 2 and all(x.shape == (16, 16, 1) for x in decoded)
    assert np.all(decoded[0] == decoded[1])


def test_predict_refuses_a_bomb_by_name_within_a_second(trained, bombs):
    url = trained.engine.url.render_as_string(hide_password=False)
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["--database-url", url, "predict", str(bombs["real"]),
                                      "--fracture-run", str(trained.fracture_run)], catch_exceptions=False)
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {bombs['real']}: 20000 x 10000 = 200,000,000 pixels")
    assert time.monotonic() - started < 30  # the models load; the refusal itself takes milliseconds


def test_predict_refuses_files_that_are_all_bombs_before_loading_any_model(bombs, tmp_path):
    """Issue 19 asks predict to answer a bomb within a second: when no file given may be an image, there is
    nothing to load a model for, so TensorFlow (seconds to import, hundreds of MB) is never imported."""
    import json
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'bonedb.sqlite'}"
    assert run(["db", "upgrade"], url).exit_code == 0  # no run at all: the files are the first thing wrong
    code = ("import sys, json\nfrom boneclf.cli.main import cli\n"
            "try:\n    cli(sys.argv[1:])\nexcept SystemExit as end:\n"
            "    print(json.dumps([end.code, 'tensorflow' in sys.modules]))\n")
    done = subprocess.run([sys.executable, "-c", code, "--database-url", url, "predict", str(bombs["real"]),
                           str(bombs["header"]), "--fracture-run", "1"], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)  # not the checkout, whose boneclf/ has no cli/ (it installs inside boneclf)
    status, imported = json.loads(done.stdout.strip().splitlines()[-1])
    lines = done.stderr.strip().splitlines()
    assert status == 1 and len(lines) == 2, done.stderr
    assert lines[0].startswith(f"error: {bombs['real']}: 20000 x 10000 = 200,000,000 pixels"), lines
    assert lines[1].startswith(f"error: {bombs['header']}: 50000 x 50000"), lines
    assert not imported, "TensorFlow was imported to refuse files no model may read"

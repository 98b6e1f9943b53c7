"""A steward's word on a duplicate group, from the CLI and from the server in Chromium, on SQLite and MySQL:
"not duplicates" unlinks the group, holds through `duplicates compute`, and changes what `split create` does;
"duplicates" keeps it, through recomputation too."""

from __future__ import annotations

import json
import random
from pathlib import Path

from click.testing import CliRunner
from PIL import Image

from boneclf.cli.main import cli
from boneclf.data.radiograph import draw_radiograph
from boneclf.web.app import create_app
from boneclf.web.security import LOOPBACK_NAMES

from serving import chromium, uvicorn_serving

DATASET = "steward"


def tree(root: Path) -> None:
    """Twelve distinct pictures across train and test, and one picture of train turned 7 degrees in test:
    one near group that crosses the source's own held-out set."""
    for k in range(12):
        subset, label = ("train", "train", "test")[k % 3], ("fractured", "not fractured")[k % 2]
        picture, _ = draw_radiograph("elbow", k % 2 == 0, 96, 128, random.Random(300 + k))
        (root / subset / label).mkdir(parents=True, exist_ok=True)
        picture.save(root / subset / label / f"x{k:02d}.png")
    original = Image.open(root / "train" / "fractured" / "x00.png")
    original.rotate(7, resample=Image.Resampling.BILINEAR, fillcolor=0).save(root / "test" / "fractured" / "x00b.png")


def bonedb(url: str, *args: str):
    return CliRunner().invoke(cli, ["--database-url", url, *args])


def near_groups(url: str) -> list[dict]:
    listed = bonedb(url, "duplicates", "list", "--dataset", DATASET, "--json")
    assert listed.exit_code == 0, listed.output
    return [g for g in json.loads(listed.stdout) if g["kind"] == "near"]


def prepared(url: str, root: Path) -> int:
    tree(root)
    assert bonedb(url, "db", "upgrade").exit_code == 0
    ingested = bonedb(url, "ingest-folder", str(root), "--dataset", DATASET)
    assert ingested.exit_code == 0, ingested.output
    [group] = near_groups(url)
    assert group["size"] == 2
    refused = bonedb(url, "split", "create", "official", "--dataset", DATASET, "--val", "0.2")
    assert refused.exit_code == 1 and "bonedb duplicates reject ID" in refused.stderr, refused.output
    return group["id"]


def split_after_the_decision(url: str) -> None:
    """The decision holds through recomputation, and the source's own test set is no longer refused."""
    assert near_groups(url) == []
    computed = bonedb(url, "duplicates", "compute", "--dataset", DATASET)
    assert computed.exit_code == 0, computed.output
    assert near_groups(url) == [], "a rejected group came back when the groups were computed again"
    stored = bonedb(url, "split", "create", "official", "--dataset", DATASET, "--val", "0.2")
    assert stored.exit_code == 0, stored.output
    audited = bonedb(url, "audit", "split", "official")
    assert audited.exit_code == 0, audited.output


def test_not_duplicates_from_the_cli_unlinks_the_group_for_good(db_url, tmp_path):
    group = prepared(db_url, tmp_path / "data")
    rejected = bonedb(db_url, "duplicates", "reject", str(group), "--note", "two patients", "--reviewer", "ana")
    assert rejected.exit_code == 0, rejected.output
    assert "duplicate rejected on group" in rejected.output and "by ana" in rejected.output
    split_after_the_decision(db_url)
    history = bonedb(db_url, "history", DATASET)
    assert "duplicate rejected" in history.output and "two patients" in history.output


def test_duplicates_confirmed_keeps_the_group_through_recomputation(db_url, tmp_path):
    group = prepared(db_url, tmp_path / "data")
    confirmed = bonedb(db_url, "duplicates", "confirm", str(group), "--reviewer", "ana")
    assert confirmed.exit_code == 0, confirmed.output
    assert bonedb(db_url, "duplicates", "compute", "--dataset", DATASET).exit_code == 0
    [kept] = near_groups(db_url)
    assert kept["size"] == 2
    assert bonedb(db_url, "split", "create", "official", "--dataset", DATASET, "--val", "0.2").exit_code == 1


def test_not_duplicates_from_the_server_in_chromium_unlinks_the_group_for_good(db_url, tmp_path):
    group = prepared(db_url, tmp_path / "data")
    app = create_app(db_url, cache_dir=tmp_path / "cache", hosts=LOOPBACK_NAMES)
    with uvicorn_serving(app) as base, chromium() as page:
        page.goto(f"{base}/duplicates/{group}", wait_until="load")
        assert page.locator("#review-form").is_visible()
        page.check("input[name=decision][value='duplicate rejected']")
        page.fill("textarea[name=note]", "different elbows")
        page.fill("input[name=reviewer]", "ben")
        with page.expect_navigation():
            page.click("#review-form button[type=submit]")
        assert f"/duplicates/{group}" not in page.url, "the group is gone, so the page moved on"
        assert page.errors == []
    split_after_the_decision(db_url)
    history = bonedb(db_url, "history", DATASET)
    assert "duplicate rejected" in history.output and "different elbows" in history.output

"""Duplicate groups: stored and read back, found by the near-duplicate hash, kept whole by splits."""

from __future__ import annotations

import io
import random
import shutil
from pathlib import Path

import pytest
from PIL import Image as PILImage
from sqlalchemy import select

from boneclf.data.audit import audit_split
from boneclf.data.folder_dataset import ingest_folder
from boneclf.data.ingest import ingest_mura
from boneclf.data.radiograph import draw_radiograph
from boneclf.data.splits import SplitOptions, create_split, split_image_paths, split_summary
from boneclf.errors import BonedbError
from boneclf.store.duplicates import GroupPlan, get_duplicate_group, list_duplicate_groups, replace_groups
from boneclf.store.queries import get_split
from boneclf.store.schema import DuplicateGroup, Image, SplitOmission


def test_groups_are_stored_replaced_and_read_back(engine, mura):
    ingest_mura(engine, mura)
    with engine.begin() as conn:
        ids = conn.execute(select(Image.id).order_by(Image.path).limit(5)).scalars().all()
        replace_groups(conn, 1, [GroupPlan("exact", [(ids[0], None), (ids[1], None)]),
                                 GroupPlan("near", [(ids[2], 0.0), (ids[3], 3.0), (ids[4], 5.0)])],
                       method={"exact": "sha256", "near": "dct64"}, threshold={"exact": 0, "near": 8})
    with engine.connect() as conn:
        groups = list_duplicate_groups(conn, "mura-v1.1")
        assert [(g.kind, g.size) for g in groups] == [("near", 3), ("exact", 2)]
        assert list_duplicate_groups(conn, limit=1, offset=1)[0].kind == "exact"
        near = get_duplicate_group(conn, groups[0].id)
        assert [m.image_id for m in near.members] == ids[2:5]
        assert [m.score for m in near.members] == [0.0, 3.0, 5.0]
        assert near.members[0].part and near.members[0].source_split in ("train", "valid")
        assert near.to_dict()["crosses_source_splits"] == (len(near.source_splits) > 1)
    with engine.begin() as conn:  # computing again replaces the dataset's groups
        replace_groups(conn, 1, [GroupPlan("exact", [(ids[0], None), (ids[4], None)])],
                       method={"exact": "sha256"}, threshold={"exact": 0})
    with engine.connect() as conn:
        [only] = list_duplicate_groups(conn, "mura-v1.1")
        assert [m.image_id for m in get_duplicate_group(conn, only.id).members] == [ids[0], ids[4]]
        with pytest.raises(BonedbError, match="no duplicate group 999"):
            get_duplicate_group(conn, 999)


# --- A folder set with planted families of duplicates ---------------------------------------------

def _jpeg(image: PILImage.Image) -> PILImage.Image:
    buffer = io.BytesIO()
    image.convert("L").save(buffer, "JPEG", quality=85)
    return PILImage.open(io.BytesIO(buffer.getvalue()))


# What a published set holds: byte copies, flips, 90-degree turns, a few degrees of rotation with
# black corners, re-encoded and rescaled copies.
COPIES = {
    "exact": None,
    "flip": lambda im: im.transpose(PILImage.Transpose.FLIP_LEFT_RIGHT),
    "rot90": lambda im: im.transpose(PILImage.Transpose.ROTATE_90),
    "rot2deg": lambda im: im.rotate(2, resample=PILImage.Resampling.BILINEAR, fillcolor=0),
    "jpeg": _jpeg,
    "half": lambda im: im.resize((im.width // 2, im.height // 2), PILImage.Resampling.LANCZOS),
}


def planted_folder(root: Path, families: int = 12, singles: int = 60, size: int = 96, seed: int = 0) -> dict:
    """train/val/test x fractured/not fractured. Each family: an original in train, two copies (of the
    kinds in COPIES, in turn) in val and test. Returns family -> its file paths (relative)."""
    rng = random.Random(seed)
    kinds = list(COPIES)
    planted: dict[str, list[str]] = {}
    for f in range(families):
        label = ("fractured", "not fractured")[f % 2]
        original, _ = draw_radiograph("hand", f % 2 == 0, round(size * 0.75), size, random.Random(1000 + f))
        paths = [f"train/{label}/fam{f:02d}.png"]
        (root / "train" / label).mkdir(parents=True, exist_ok=True)
        original.save(root / paths[0])
        for n, subset in enumerate(("val", "test")):
            kind = kinds[(2 * f + n) % len(kinds)]
            relative = f"{subset}/{label}/fam{f:02d}-{kind}.png"
            (root / subset / label).mkdir(parents=True, exist_ok=True)
            if COPIES[kind] is None:
                shutil.copyfile(root / paths[0], root / relative)
            else:
                COPIES[kind](original).save(root / relative)
            paths.append(relative)
        planted[f"fam{f:02d}"] = paths
    for k in range(singles):
        subset = ("train", "train", "train", "val", "test")[k % 5]
        label = ("fractured", "not fractured")[rng.random() < 0.5]
        image, _ = draw_radiograph("hand", label == "fractured", round(size * 0.75), size, random.Random(5000 + k))
        (root / subset / label).mkdir(parents=True, exist_ok=True)
        image.save(root / subset / label / f"single{k:03d}.png")
    return planted


def _subsets_of(engine, split: str) -> dict[str, str]:
    return {path: subset for subset, paths in split_image_paths(engine, split).items() for path in paths}


def test_planted_families_are_found_and_never_split(engine, tmp_path):
    root = tmp_path / "planted"
    planted = planted_folder(root)
    report = ingest_folder(engine, root, dataset="planted")
    assert report.duplicate_groups >= len(planted)

    # The published split leaks every family, and its audit says so, family by family.
    published = audit_split(engine, "planted")
    crossing = [set(p.split(": ", 1)[1] for p in f["paths"]) for f in published.duplicate_groups]
    for family, paths in planted.items():
        assert any(set(paths) <= found for found in crossing), f"audit missed {family}"
    with engine.connect() as conn:
        assert get_split(conn, "planted").leaks["duplicate groups"] >= len(planted)

    # bonedb's default split keeps each family whole, and stores a clean audit with it.
    result = create_split(engine, "grouped", SplitOptions("planted", (), val=0.2, test=0.2, test_from="carve"))
    assert result.leaks == {}
    subsets = _subsets_of(engine, "grouped")
    for family, paths in planted.items():
        assert len({subsets[p] for p in paths}) == 1, f"{family} split across subsets"
    assert not audit_split(engine, "grouped").leaks
    assert split_summary(engine, "grouped").leaks == {}

    # Grouping by patient alone (here: one image each) separates the families, so it is refused...
    with pytest.raises(BonedbError, match="would leak .*duplicate groups"):
        create_split(engine, "loose", SplitOptions("planted", (), val=0.2, test=0.2, test_from="carve",
                                                   group_by="patient"))
    # ...unless asked for, and then the leak is recorded with the split.
    loose = create_split(engine, "loose", SplitOptions("planted", (), val=0.2, test=0.2, test_from="carve",
                                                       group_by="patient", allow_leaks=True))
    assert loose.leaks["duplicate groups"] > 0
    assert split_summary(engine, "loose").leaks == loose.leaks


def test_split_create_and_audit_split_never_disagree(engine, tmp_path):
    """Both judge duplicates by the dataset's stored groups: whatever the options and seed, a split stored
    without --allow-leaks has a clean audit, and one stored with leaks has an audit that finds exactly them."""
    root = tmp_path / "planted"
    planted_folder(root, families=6, singles=24)
    ingest_folder(engine, root, dataset="planted")
    choices = [dict(test_from="carve"), dict(test_from="carve", dedupe=True), dict(test_from="carve", test=0.3),
               dict(test_from="carve", group_pattern=r"^(fam[0-9]+|single[0-9]+)"), dict(test_from="carve", group_by="duplicates"),
               dict(test_from="official", allow_leaks=True), dict(test_from="carve", group_by="patient",
                                                                  allow_leaks=True)]
    for n, (choice, seed) in enumerate((c, s) for c in choices for s in (1, 2, 3)):
        stored = create_split(engine, f"s{n}", SplitOptions("planted", (), val=0.2, seed=seed,
                                                            **{"test": 0.2, **choice}))
        audited = audit_split(engine, f"s{n}")
        crossing = len(audited.exact_duplicates) + len(audited.duplicate_groups)  # identical files are a group too
        assert stored.leaks.get("duplicate groups", 0) == crossing, (choice, seed)
        if not choice.get("allow_leaks"):
            assert stored.leaks == {} and not audited.leaks, (choice, seed)


def test_user_groups_from_a_pattern_and_a_csv(engine, tmp_path):
    root = tmp_path / "planted"
    planted = planted_folder(root, families=6, singles=20)
    ingest_folder(engine, root, dataset="planted")
    with engine.begin() as conn:  # no duplicate groups: only the user's ids can keep families together
        conn.execute(DuplicateGroup.__table__.delete())
    options = dict(val=0.25, test=0.25, test_from="carve", seed=3)
    create_split(engine, "by-name", SplitOptions("planted", (), group_pattern=r"^(fam\d+|single\d+)", **options))
    subsets = _subsets_of(engine, "by-name")
    assert all(len({subsets[p] for p in paths}) == 1 for paths in planted.values())

    csv_file = tmp_path / "groups.csv"
    csv_file.write_text("path,group\n" + "".join(f"{p},{family}\n" for family, paths in planted.items()
                                                 for p in paths))
    create_split(engine, "by-csv", SplitOptions("planted", (), groups_from=str(csv_file), **options))
    subsets = _subsets_of(engine, "by-csv")
    assert all(len({subsets[p] for p in paths}) == 1 for paths in planted.values())

    csv_file.write_text("path,group\nnot/there.png,x\n")
    with pytest.raises(BonedbError, match=r"groups.csv:2: 'not/there.png' is not an image of the dataset"):
        create_split(engine, "bad", SplitOptions("planted", (), groups_from=str(csv_file), **options))
    with pytest.raises(BonedbError, match="matches no group id in"):
        create_split(engine, "bad", SplitOptions("planted", (), group_pattern=r"^fam(\d+)", **options))


def test_dedupe_keeps_one_of_each_exact_group_and_records_the_rest(engine, tmp_path):
    root = tmp_path / "planted"
    planted_folder(root, families=6, singles=10)
    ingest_folder(engine, root, dataset="planted")
    plain = create_split(engine, "all", SplitOptions("planted", (), val=0.2, test=0.2, test_from="carve"))
    deduped = create_split(engine, "one-each", SplitOptions("planted", (), val=0.2, test=0.2, test_from="carve",
                                                            dedupe=True))
    exact_copies = sum(1 for kind in ("exact",) for f in range(6) for n in range(2)
                       if list(COPIES)[(2 * f + n) % len(COPIES)] == kind)
    assert deduped.omitted == exact_copies > 0
    assert deduped.images == plain.images - exact_copies
    assert split_summary(engine, "one-each").omitted == exact_copies
    with engine.connect() as conn:
        kept = conn.execute(select(SplitOmission.kept_image_id)).scalars().all()
    assert len(kept) == exact_copies
    audit = audit_split(engine, "all")
    assert not audit.leaks and sum(audit.within_subset_copies.values()) == exact_copies


def test_evaluation_resamples_copies_together_and_counts_them(engine, tmp_path):
    from boneclf.ml.evaluation import _leak_clusters
    from boneclf.ml.pipeline import Examples

    root = tmp_path / "planted"
    planted = planted_folder(root, families=4, singles=6)
    ingest_folder(engine, root, dataset="planted")
    # The published split as it is: every family's copies sit in val and test.
    with engine.connect() as conn:
        split = get_split(conn, "planted")
        rows = conn.execute(select(Image.id, Image.path).where(Image.dataset_id == split.dataset_id)).all()
    examples = Examples([r.id for r in rows], [r.path for r in rows], [0] * len(rows),
                        [f"study-{r.id}" for r in rows], ["unknown"] * len(rows))
    groups, copies = _leak_clusters(engine, split.dataset_id, examples)
    group_of = dict(zip([r.path for r in rows], groups))
    for paths in planted.values():
        assert len({group_of[p] for p in paths}) == 1
    assert copies >= 2 * len(planted)  # each family: an original and two copies
    assert len(set(groups)) <= len(rows) - copies


def test_formats_come_from_the_bytes_and_left_out_files_are_not_audit_failures(engine, tmp_path):
    from boneclf.data.audit import audit_dataset
    from boneclf.ml.image_spec import decode_full

    root = tmp_path / "odd"
    planted_folder(root, families=2, singles=4)
    picture, _ = draw_radiograph("hand", True, 48, 64, random.Random(1))
    picture.convert("P").save(root / "train" / "fractured" / "really-a-gif.jpg", format="GIF")
    picture.save(root / "train" / "fractured" / "really-a-tiff.png", format="TIFF")
    (root / "train" / "fractured" / "empty.png").write_bytes(b"")
    report = ingest_folder(engine, root, dataset="odd")
    assert len(report.refused_formats) == 1 and "really-a-tiff.png: TIFF content in a .png file" in \
        report.refused_formats[0]
    with engine.connect() as conn:
        formats = dict(conn.execute(select(Image.path, Image.file_format)).all())
    assert formats["train/fractured/really-a-gif.jpg"] == "GIF"  # accepted: training decodes GIF
    decoded = decode_full((root / "train" / "fractured" / "really-a-gif.jpg").read_bytes())
    assert tuple(decoded.shape) == (64, 48, 1)

    audit = audit_dataset(engine, "odd")
    assert audit.clean and audit.unexpected == []
    assert sorted(line.split(":")[0] for line in audit.left_out) == [
        "train/fractured/empty.png", "train/fractured/really-a-tiff.png"]
    (root / "train" / "fractured" / "nobody-saw-me.png").write_bytes((root / report_path(root)).read_bytes())
    audit = audit_dataset(engine, "odd")
    assert not audit.clean and audit.unexpected == ["train/fractured/nobody-saw-me.png"]


def report_path(root: Path) -> str:
    return next(p.relative_to(root).as_posix() for p in sorted(root.rglob("fam*.png")))


def test_stats_count_copies_within_each_source_split(engine, tmp_path):
    from boneclf.data.stats import dataset_stats

    root = tmp_path / "planted"
    planted_folder(root, families=6, singles=10)
    for n in range(3):  # three byte copies of one training picture, inside train
        shutil.copyfile(root / "train" / "fractured" / "fam00.png", root / "train" / "fractured" / f"again{n}.png")
    ingest_folder(engine, root, dataset="planted")
    by_split = {d.split: d for d in dataset_stats(engine, "planted").duplicates}
    assert by_split["train"].identical_copies == 3
    assert by_split["train"].in_duplicate_groups >= 4


def test_duplicates_and_split_commands(db_url, tmp_path):
    import json

    from click.testing import CliRunner

    from boneclf.cli.main import cli

    def run(*args):
        return CliRunner().invoke(cli, ["--database-url", db_url, *args], catch_exceptions=False)

    root = tmp_path / "planted"
    planted_folder(root, families=4, singles=8)
    assert run("db", "upgrade").exit_code == 0
    result = run("ingest-folder", str(root), "--dataset", "fx")
    assert result.exit_code == 0 and "duplicate groups:" in result.output
    result = run("duplicates", "compute", "--dataset", "fx")
    assert result.exit_code == 0 and "exact:" in result.output and "near:" in result.output
    groups = json.loads(run("duplicates", "list", "--dataset", "fx", "--json").output)
    assert groups and all(g["size"] >= 2 for g in groups)
    crossing = next(g for g in groups if g["crosses_source_splits"])
    shown = json.loads(run("duplicates", "show", str(crossing["id"]), "--json").output)
    assert {m["source_split"] for m in shown["members"]} == set(crossing["source_splits"])
    assert run("duplicates", "show", "9999").exit_code == 1

    assert run("audit", "split", "fx").exit_code == 1  # the published split leaks
    result = run("split", "show", "fx")
    assert "audit: LEAKS" in result.output and "duplicate groups" in result.output
    result = run("split", "create", "fx-v1", "--dataset", "fx", "--test-from", "carve", "--dedupe")
    assert result.exit_code == 0, result.output
    assert "leak groups assigned whole" in result.output and "--dedupe left out" in result.output
    shown = run("split", "show", "fx-v1").output
    assert "audit: no patient, study or duplicate group crosses subsets" in shown
    [parameters] = [line for line in shown.splitlines() if line.startswith("parameters: ")]
    assert "dataset fx, dedupe yes" in parameters and "test-from carve" in parameters, parameters
    assert "{" not in parameters and '"' not in parameters, "key value pairs, not JSON"
    assert run("audit", "split", "fx-v1").exit_code == 0
    result = run("split", "create", "fx-loose", "--dataset", "fx", "--test-from", "carve", "--group-by", "patient")
    assert result.exit_code == 1 and "would leak" in result.output + (result.stderr or "")


def test_a_group_too_large_for_the_fractions_is_reported_with_its_size(engine, tmp_path):
    root = tmp_path / "planted"
    planted_folder(root, families=4, singles=30)
    ingest_folder(engine, root, dataset="planted")
    # Every "single" file in one group: 30 of 42 images (71 %) cannot be split 60/20/20.
    result = create_split(engine, "coarse", SplitOptions("planted", (), val=0.2, test=0.2, test_from="carve",
                                                         group_pattern=r"^(fam\d+|single)"))
    assert result.largest_group >= 30
    assert any("train holds" in w and "largest" in w and f"{result.largest_group} images" in w
               for w in result.warnings), result.warnings
    fine = create_split(engine, "fine", SplitOptions("planted", (), val=0.2, test=0.2, test_from="carve"))
    assert fine.warnings == [] and abs(fine.fractions["test"] - 0.2) <= 0.02


def test_a_published_test_set_that_shares_pictures_with_training_is_refused_unless_allowed(engine, tmp_path):
    root = tmp_path / "planted"
    planted_folder(root, families=4, singles=10)
    ingest_folder(engine, root, dataset="planted")
    with pytest.raises(BonedbError, match="leak group.* in both the source's held-out and training images"):
        create_split(engine, "official", SplitOptions("planted", (), val=0.2))
    kept = create_split(engine, "official", SplitOptions("planted", (), val=0.2, allow_leaks=True))
    assert kept.leaks.get("duplicate groups", 0) >= 4


@pytest.mark.parametrize("transpose", [None, *PILImage.Transpose])
def test_every_flip_and_quarter_turn_is_a_bit_operation_on_the_near_hash(transpose):
    import numpy as np

    from boneclf.data.hashing import dihedral_variants, near_hash

    picture, _ = draw_radiograph("elbow", False, 61, 83, random.Random(4))  # odd sides: no easy symmetry
    turned = picture if transpose is None else picture.transpose(transpose)
    variants = dihedral_variants(np.array([int(near_hash(picture), 16)], dtype=np.uint64))[:, 0]
    assert int(near_hash(turned), 16) in {int(v) for v in variants}
    other, _ = draw_radiograph("elbow", False, 61, 83, random.Random(5))
    assert int(near_hash(other), 16) not in {int(v) for v in variants}


def test_compute_on_demand_hashes_older_data_once(engine, mura):
    from boneclf.data.duplicates import compute_duplicates

    ingest_mura(engine, mura)  # without --verify: no hashes yet
    shutil.copyfile(next(mura.rglob("image1.png")), next(mura.rglob("image2.png")))  # one byte copy
    first = compute_duplicates(engine, "mura-v1.1")
    assert first.hashed_now == first.images > 0 and first.exact_groups == 1 and first.exact_redundant == 1
    again = compute_duplicates(engine, "mura-v1.1")
    assert again.hashed_now == 0 and again.exact_groups == 1


def test_copies_turned_a_few_degrees_with_black_corners_stay_in_one_subset(engine, tmp_path):
    """Files like `...-rotated1`: the same radiograph turned 5 and 8 degrees (one of them also flipped),
    corners black. Each family is verified into one group, and the split keeps it whole."""
    from boneclf.store.duplicates import group_memberships

    root = tmp_path / "turned"
    families: dict[str, list[str]] = {}
    for f in range(8):
        label = ("fractured", "not fractured")[f % 2]
        original, _ = draw_radiograph("hand", f % 2 == 0, 96, 128, random.Random(2000 + f))
        copies = {"train": original,
                  "val": original.rotate(5, resample=PILImage.Resampling.BILINEAR, fillcolor=0),
                  "test": original.transpose(PILImage.Transpose.FLIP_LEFT_RIGHT)
                  .rotate(-8, resample=PILImage.Resampling.BILINEAR, fillcolor=0)}
        families[f"fam{f}"] = []
        for subset, picture in copies.items():
            (root / subset / label).mkdir(parents=True, exist_ok=True)
            relative = f"{subset}/{label}/fam{f}-rotated{len(families[f'fam{f}'])}.png"
            picture.save(root / relative)
            families[f"fam{f}"].append(relative)
    ingest_folder(engine, root, dataset="turned")

    create_split(engine, "grouped", SplitOptions("turned", (), val=0.2, test=0.2, test_from="carve"))
    subsets = _subsets_of(engine, "grouped")
    for family, paths in families.items():
        assert len({subsets[p] for p in paths}) == 1, f"{family} split across subsets"
    with engine.connect() as conn:
        id_of = dict(conn.execute(select(Image.path, Image.id)).all())
        groups = [set(members) for members in group_memberships(conn, 1, kinds=("near",)).values()]
    # Each family is in one group (two synthetic hands, drawn from one template, can be that alike).
    for family, paths in families.items():
        assert any({id_of[p] for p in paths} <= group for group in groups), f"{family} is not in one group"


def test_the_verdict_holds_copies_and_explains_itself_and_refuses_another_picture():
    from boneclf.data.same_picture import Picture, verify_pair

    picture, _ = draw_radiograph("elbow", False, 183, 249, random.Random(4))
    other, _ = draw_radiograph("shoulder", False, 183, 249, random.Random(5))
    copies = {"turned 7": picture.rotate(7, resample=PILImage.Resampling.BILINEAR, fillcolor=0),
              "quarter turn": picture.transpose(PILImage.Transpose.ROTATE_90),
              "mirrored": picture.transpose(PILImage.Transpose.FLIP_LEFT_RIGHT),
              "enlarged, JPEG": _jpeg(picture.resize((366, 498)))}
    first = Picture(picture)
    for name, copy in copies.items():
        verdict = verify_pair(first, Picture(copy))
        assert verdict.same, (name, verdict.explain())
    assert verify_pair(first, Picture(copies["mirrored"])).flipped
    assert abs(verify_pair(first, Picture(copies["turned 7"])).angle - 7) < 1.5
    assert abs(verify_pair(first, Picture(copies["enlarged, JPEG"])).scale - 0.5) < 0.05
    assert not verify_pair(first, Picture(other)).same

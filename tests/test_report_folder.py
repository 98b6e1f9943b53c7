"""A class-folder dataset as a steward brings one: the report describes what it is (no MURA wording, no MURA
baseline, the effective test size beside every interval), and exported files, Grad-CAM files and report
captions carry the source's own file names."""

from __future__ import annotations

import random
import re
import shutil
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

from boneclf.data.export import export_split
from boneclf.data.folder_dataset import ingest_folder
from boneclf.data.radiograph import draw_radiograph
from boneclf.data.splits import SplitOptions, create_split
from boneclf.ml.evaluation import evaluate_run
from boneclf.ml.predict import Predictor
from boneclf.ml.training import TrainConfig, train
from boneclf.store import migrate
from boneclf.store.engine import make_engine
from boneclf.workflows.report import build_report, kappa_rows
from boneclf.workflows.report_leaks import split_leaks

from conftest import FAST


@dataclass
class FolderRun:
    engine: object
    root: Path
    run_id: int
    folder: Path


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> FolderRun:
    """48 wrists in class folders under names with spaces, a quarter of them copied under a second name (so the
    test subset holds copies: fewer independent leak groups than studies) and one into another subset folder (a
    leak of the source's split), split, one epoch of stage 2."""
    folder = tmp_path_factory.mktemp("folder-set")
    root = folder / "wrists"
    for k in range(48):
        subset = ("train", "train", "val", "test")[k % 4]
        label = ("fractured", "not fractured")[(k // 4) % 2]
        picture, _ = draw_radiograph("wrist", label == "fractured", 36, 48, random.Random(k))
        (root / subset / label).mkdir(parents=True, exist_ok=True)
        picture.save(root / subset / label / f"IMG {k:03d}.png")
        if k % 4 == 3 or k % 8 == 0:
            shutil.copyfile(root / subset / label / f"IMG {k:03d}.png", root / subset / label / f"IMG {k:03d} copy.png")
    # One picture of the source's test set again in its training set: a leak of the source's own split.
    shutil.copyfile(root / "test" / "fractured" / "IMG 003.png", root / "train" / "fractured" / "IMG 003 again.png")
    engine = make_engine(f"sqlite:///{folder / 'bonedb.sqlite'}", create=True)
    migrate.upgrade(engine)
    ingest_folder(engine, root, dataset="wrists")
    create_split(engine, "w", SplitOptions("wrists", (), val=0.2, test=0.3, test_from="carve", seed=2))
    [run] = train(engine, TrainConfig(stage="fracture", split="w", parts=("unknown",), image_size=32, epochs=1,
                                      patience=1, runs_dir=str(folder / "runs"), **FAST), verbose=0)
    yield FolderRun(engine, root, run.run_id, folder)
    engine.dispose()


class _Tables(HTMLParser):
    """Each table's header cells and rows of cells, as text."""

    def __init__(self):
        super().__init__()
        self.tables, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append({"headers": [], "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("th", "td"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self._cell is not None and self.tables:
            if tag == "th":
                self.tables[-1]["headers"].append(self._cell.strip())
            else:
                self.tables[-1]["rows"][-1].append(self._cell.strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def test_folder_set_report_has_no_mura_claims_and_states_the_effective_test_size(folder_run, tmp_path):
    result = build_report(folder_run.engine, [folder_run.run_id], tmp_path / "report.html")
    assert result.complete, result.problems
    assert result.datasets == {"wrists": "folder"} and result.synthetic == []
    page = Path(result.path).read_text()
    for claim in ("Labels are MURA", "radiologist", "MURA baseline", "0.705", "DenseNet-169", "synthetic"):
        assert claim not in page, claim
    assert "class folders" in page, "the reading guide says where a folder set's labels come from"

    evaluation = evaluate_run(folder_run.engine, folder_run.run_id)
    study = evaluation.overall.study
    assert study.bootstrap_units < study.n, "the copies tie test studies together"
    size = f"{study.n} studies in {study.bootstrap_units} independent leak groups"
    parser = _Tables()
    parser.feed(page)
    with_intervals = [t for t in parser.tables if any("95% CI" in h for h in t["headers"])]
    assert len(with_intervals) == 2, "the comparison and the per-part table"
    for table in with_intervals:
        column = table["headers"].index("Intervals rest on")
        sizes = [row[column] for row in table["rows"] if len(row) > column]
        assert size in sizes, (size, sizes)
    assert kappa_rows(evaluation)[-1].size == size, "the forest plot labels the overall row with it too"
    assert re.search(r"Forest plot of study-level kappa per body part for run \d+, with 95% intervals\"", page)


def test_folder_set_names_survive_export_gradcam_and_report_captions(folder_run, tmp_path):
    export = export_split(folder_run.engine, "w", tmp_path / "export", stage="fracture", combined=True)
    exported = sorted(p.name for p in (tmp_path / "export").rglob("*.png"))
    assert len(exported) == export.images
    assert "test_fractured_IMG_003.png" in exported and "test_fractured_IMG_003_copy.png" in exported
    assert not [name for name in exported if "patient" in name or name.startswith("unknown_")]

    cams = tmp_path / "cams"
    prediction = Predictor(folder_run.engine, fracture_run=folder_run.run_id).predict(
        [folder_run.root / "test" / "fractured" / "IMG 003.png"], gradcam_dir=cams)
    assert [Path(i.gradcam).name for i in prediction.images] == ["wrists_test_fractured_IMG_003_gradcam.png"]

    page = Path(build_report(folder_run.engine, [folder_run.run_id], tmp_path / "r.html").path).read_text()
    captions = re.findall(r'<figure class="tile">.*?<figcaption>(.*?)<br>', page)
    assert captions and all(re.fullmatch(r"wrists: (train|val|test)/(not )?fractured/IMG \d{3}( copy)?\.png", c)
                            for c in captions), captions
    assert "patient img-" not in page


def test_leaks_and_copies_are_tables_with_thumbnails_and_a_count_of_the_rest(folder_run, tmp_path):
    leaks, copies = split_leaks(folder_run.engine, "wrists", shown=100)  # the source's own split, from its folders
    assert len(leaks.rows) == leaks.total
    [leak] = [row for row in leaks.rows if row.kind == "exact duplicate group"]
    assert leak.subsets == ["test", "train"]
    assert [t.caption for t in leak.thumbnails] == [
        "test: test/fractured/IMG 003 copy.png", "test: test/fractured/IMG 003.png",
        "train: train/fractured/IMG 003 again.png"]
    assert all(t.data for t in leak.thumbnails), "every picture is shown"
    assert copies.total >= 12, "each test picture has a copy beside it"
    leaks, copies = split_leaks(folder_run.engine, "wrists", shown=2)
    assert len(copies.rows) == 2 and copies.total >= 12, "two shown, the rest counted"
    assert copies.everything == "bonedb duplicates list --dataset wrists"

    page = Path(build_report(folder_run.engine, [folder_run.run_id], tmp_path / "r.html").path).read_text()
    section = page[page.index('<h4 id="copies-'):page.index("</section>", page.index('<h4 id="copies-'))]
    assert '<figure class="thumb"><img alt="exact duplicate group ' in section
    assert "{'" not in page and "[{" not in page, "no Python repr on the page"


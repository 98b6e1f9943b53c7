"""The HTML report and the one-command demo."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

from click.testing import CliRunner

from boneclf.cli.main import cli
from boneclf.store.runs import get_run
from boneclf.workflows.report import build_report


class _Outline(HTMLParser):
    def __init__(self):
        super().__init__()
        self.headings, self.images, self.scripts, self._in_heading = [], 0, 0, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("h2", "h3", "h4"):
            self._in_heading = True
            self.headings.append("")
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,"), "pictures are embedded"
            self.images += 1
        if tag == "script" or (tag == "link" and attrs.get("rel") == "stylesheet"):
            self.scripts += 1

    def handle_endtag(self, tag):
        if tag in ("h2", "h3", "h4"):
            self._in_heading = False

    def handle_data(self, data):
        if self._in_heading:
            self.headings[-1] += data


def test_report_holds_every_section_with_embedded_pictures(trained, tmp_path):
    result = build_report(trained.engine, [trained.bodypart_run, trained.fracture_run], tmp_path / "r.html")
    assert result.complete and result.runs == [trained.bodypart_run, trained.fracture_run]
    path = Path(result.path)
    outline = _Outline()
    outline.feed(path.read_text())
    headings = " | ".join(outline.headings)
    for section in ("Dataset and split", "Comparison", "Learning curves", "Confusion matri", "ROC",
                    "precision-recall", "calibration", "Per body part", "Grad-CAM gallery"):
        assert section in headings, section
    assert outline.images >= 8 and outline.scripts == 0
    page = path.read_text()
    run = get_run(trained.engine, trained.fracture_run)
    assert f"<code>{run.split_hash[:16]}</code> at training" in page
    assert "trained on the split's pinned labels, as of ingest 1" in page
    assert "scored against the split's pinned labels (as of ingest 1)" in page
    assert "parameters: dataset mura-v1.1, parts elbow,finger," in page and "{&#34;" not in page, "key value pairs"


def test_demo_end_to_end_in_quick_mode_and_reuse(tmp_path):
    workdir = tmp_path / "demo"
    runner = CliRunner()
    result = runner.invoke(cli, ["demo", "--workdir", str(workdir), "--quick", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (workdir / "bonedb.sqlite").exists() and (workdir / "report.html").exists()
    assert list((workdir / "gradcam").glob("*.png"))
    assert summary["leaks"] is False and summary["predicted_studies"]
    # The demo's data is drawn: the report says so at the top, in its title and in each run's heading, and
    # claims nothing only MURA's radiographs could (radiologists' labels, the paper's baseline).
    page = (workdir / "report.html").read_text()
    assert re.search(r"<title>bonedb report: runs \d+, \d+ \(synthetic data\)</title>", page)
    assert '<p class="note" id="synthetic"><b>Synthetic data.</b> mura-v1.1 was drawn by' in page
    assert page.count(", synthetic data</h2>") == 2
    for claim in ("Labels are MURA", "radiologist", "MURA baseline", "0.705", "DenseNet-169"):
        assert claim not in page, claim
    again = json.loads(runner.invoke(cli, ["demo", "--workdir", str(workdir), "--quick", "--json"]).output)
    assert (again["bodypart_run"], again["fracture_run"]) == (summary["bodypart_run"], summary["fracture_run"])
    # The demo's runs are what `bonedb predict` finds from inside the work folder.
    runs = runner.invoke(cli, ["--database-url", f"sqlite:///{workdir / 'bonedb.sqlite'}", "runs", "list", "--json"])
    assert [r["status"] for r in json.loads(runs.output)] == ["finished", "finished"]
    assert [r["data"] for r in json.loads(runs.output)] == ["synthetic", "synthetic"] and summary["synthetic"] is True

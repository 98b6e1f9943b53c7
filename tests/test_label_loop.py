"""The steward's label loop: out-of-fold predictions ranked with cleanlab point at planted label flips (and not
at flips among shuffled labels); folds keep leak groups apart and a second run reuses them; `labels set`
changes a label with an ingest's provenance, splits stay pinned, and a re-ingest does not undo the decision."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select

from boneclf.cli.main import cli
from boneclf.data.ingest import ingest_mura
from boneclf.data.leak_groups import leak_groups
from boneclf.data.splits import SplitOptions, create_split, load_records
from boneclf.data.synth import synth_mura
from boneclf.errors import Interrupted
from boneclf.ml.label_audit import audit_labels
from boneclf.ml.label_ranking import caution, rank_labels
from boneclf.ml.training import TrainConfig
from boneclf.store import migrate
from boneclf.store.duplicates import group_memberships
from boneclf.store.engine import make_engine
from boneclf.store.label_audits import create_audit, list_audits, store_scores
from boneclf.store.provenance import label_history
from boneclf.store.queries import get_split, split_images
from boneclf.store.schema import DuplicateGroup, DuplicateMember, Image, Patient, Study, TrainingRun
from boneclf.vocabulary import BODY_PARTS
from boneclf.web.app import create_app

from conftest import FAST, ctrl_c_after_epochs

FLIP_RATE = 0.1


def cli_run(engine, *args):
    url = engine.url.render_as_string(hide_password=False)
    return CliRunner().invoke(cli, ["--database-url", url, *map(str, args)], catch_exceptions=False)


def plant_flips(root: Path, *, shuffled: bool = False, seed: int = 5) -> set[tuple[str, str, int]]:
    """Flip about FLIP_RATE of the labeled-studies CSV lines (after permuting all labels, when SHUFFLED): a
    steward's dataset with known wrong labels. Returns the flipped studies as (patient, part, number)."""
    flipped = set()
    rng = random.Random(seed)
    for split in ("train", "valid"):
        path = root / "MURA-v1.1" / f"{split}_labeled_studies.csv"
        rows = [line.split(",") for line in path.read_text().splitlines()]
        labels = [int(label) for _, label in rows]
        if shuffled:
            random.Random(1).shuffle(labels)
        lines = []
        for (study, _), label in zip(rows, labels):
            if rng.random() < FLIP_RATE:
                label = 1 - label
                _, _, part, patient, folder = study.rstrip("/").split("/")
                flipped.add((patient, part.removeprefix("XR_").lower(), int(folder[5:].split("_")[0])))
            lines.append(f"{study},{label}\n")
        path.write_text("".join(lines))
    return flipped


def recall_at(rows, flipped: set, fraction: float) -> float:
    top = rows[:max(1, round(len(rows) * fraction))]
    return sum((r.patient, r.part, r.study) in flipped for r in top) / len(flipped)


def audit_of_flips(folder: Path, *, shuffled: bool) -> tuple[float, float]:
    """Synthetic humerus and wrist studies at 64 px with planted flips, audited in 3 folds: the recall of the
    flips in the top 10% and in the top 20% of the ranking."""
    synth_mura(folder / "data", patients=150, size=64, seed=3, parts=("humerus", "wrist"))
    flipped = plant_flips(folder / "data", shuffled=shuffled)
    engine = make_engine(f"sqlite:///{folder / 'bonedb.sqlite'}", create=True)
    migrate.upgrade(engine)
    ingest_mura(engine, folder / "data", labels_from="csv")  # the flipped CSV lines disagree with their folders
    # 64 px and 15 epochs: fewer and the CNN is often still on its plateau before it finds the breaks.
    config = TrainConfig(stage="fracture", split="", image_size=64, epochs=15, patience=15, batch_size=16,
                         runs_dir=str(folder / "runs"), **FAST)
    result = audit_labels(engine, "mura-v1.1", config, folds=3, verbose=0)
    engine.dispose()
    assert len(result.suspects) == result.audit.studies > 100 and len(flipped) >= 10
    found = recall_at(result.suspects, flipped, 0.1), recall_at(result.suspects, flipped, 0.2)
    print(f"label audit ({'shuffled' if shuffled else 'planted'}): {len(flipped)} flips among "
          f"{len(result.suspects)} studies; recall in the top 10% {found[0]:.2f} (chance 0.10), "
          f"top 20% {found[1]:.2f} (chance 0.20)")
    return found


def test_out_of_fold_ranking_finds_planted_flips(tmp_path):
    # Chance puts 10% of the flipped studies in the top 10%; the audit must find at least three times that.
    top10, _top20 = audit_of_flips(tmp_path / "planted", shuffled=False)
    assert top10 >= 3 * 0.1, top10


# The control trains as many models as the test above: a group of its own lets the other worker take it.
@pytest.mark.xdist_group("label_loop_control")
def test_out_of_fold_ranking_does_not_find_flips_among_shuffled_labels(tmp_path):
    # With every label shuffled first there is nothing to learn, so the flips rank like any other study. Judged
    # on the top 20%, the steadier sample: with ~18 flips, chance alone puts 5 in the top 10% one time in ten.
    _top10, top20 = audit_of_flips(tmp_path / "shuffled", shuffled=True)
    assert top20 < 3 * 0.2, top20


def _ranked_recall(labels, probabilities, flipped, fraction=0.1) -> float:
    ranking = rank_labels(labels, probabilities)
    top = ranking.ranks <= round(len(labels) * fraction)
    return float(top[flipped].mean())


def test_the_ranking_is_class_aware_so_flips_on_an_unbalanced_set_are_not_found_by_a_model_that_learned_nothing():
    # 75% abnormal, as the Kaggle-style set is 74%: random flips mostly turn abnormal into normal. A model that
    # learned nothing predicts about the prior for every study; ranking by raw self-confidence then puts every
    # normal label first, and with it most flips (about 2.5 times chance). Class-adjusted scores must not.
    chance, blind, seeing, warned = 0.1, [], [], []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        truth = (rng.random(400) < 0.75).astype(int)
        flipped = rng.random(400) < 0.05
        labels = np.where(flipped, 1 - truth, truth)
        learned_nothing = np.clip(0.75 + rng.normal(0, 0.03, 400), 0, 1)
        learned = np.clip(np.where(truth == 1, 0.8, 0.25) + rng.normal(0, 0.15, 400), 0.01, 0.99)
        blind.append(_ranked_recall(labels, learned_nothing, flipped))
        seeing.append(_ranked_recall(labels, learned, flipped))
        warned.append((caution(labels, learned_nothing) is not None, caution(labels, learned) is not None))
    assert np.mean(blind) < 1.5 * chance, blind
    assert np.mean(seeing) > 5 * chance, seeing
    # The steward is told when the models learned nothing, and only then.
    assert all(nothing and not something for nothing, something in warned), warned


def _tiny(engine, tmp_path) -> None:
    synth_mura(tmp_path / "data", patients=40, size=32, seed=7)
    ingest_mura(engine, tmp_path / "data")


def _tie_two_patients(engine) -> tuple[str, str]:
    """A stored duplicate group joining an image of two different patients: a fold must keep them together."""
    with engine.begin() as conn:
        rows = conn.execute(select(Image.id, Patient.patient_key).join(Study, Study.id == Image.study_id)
                            .join(Patient, Patient.id == Study.patient_id).order_by(Image.id)).all()
        first = rows[0]
        second = next(r for r in rows if r.patient_key not in (first.patient_key,) and r.patient_key > "00020")
        group = conn.execute(insert(DuplicateGroup.__table__).values(
            dataset_id=1, kind="near", method="planted by the test", threshold=0.9)).inserted_primary_key[0]
        conn.execute(insert(DuplicateMember.__table__), [{"group_id": group, "image_id": first.id, "score": 0.95},
                                                         {"group_id": group, "image_id": second.id, "score": 0.95}])
    return first.patient_key, second.patient_key


def test_folds_keep_leak_groups_apart_and_a_second_run_reuses_them(engine, tmp_path):
    _tiny(engine, tmp_path)
    tied = _tie_two_patients(engine)
    config = TrainConfig(stage="fracture", split="", image_size=32, epochs=2, patience=2,
                         runs_dir=str(tmp_path / "runs"), **FAST)

    with pytest.raises(Interrupted, match="fold 1 of label audit 1 was interrupted"):
        # Ctrl-C after fold 0's two epochs and fold 1's first.
        audit_labels(engine, "mura-v1.1", config, folds=3, verbose=0, callbacks=[ctrl_c_after_epochs(3)])

    # Folds: every study scored once, by a model whose split kept its whole leak group out of training.
    with engine.connect() as conn:
        records = load_records(conn, 1, BODY_PARTS)
        groups = leak_groups(records, group_by="both", duplicate_groups=list(group_memberships(conn, 1).values()))
        tested: dict[int, int] = {}
        for fold in range(3):
            split = get_split(conn, f"audit-1-fold-{fold}")
            subset_of_group: dict[str, set] = {}
            for image in split_images(conn, split.id):
                subset_of_group.setdefault(groups[image.image_id], set()).add(image.subset == "test")
                if image.subset == "test":
                    assert tested.setdefault(image.study_id, fold) == fold
            assert all(len(sides) == 1 for sides in subset_of_group.values()), f"fold {fold} splits a leak group"
        assert len(tested) == conn.execute(select(func.count()).select_from(Study)).scalar_one()
    tied_groups = {groups[r.image_id] for r in records if r.patient in tied}
    assert len(tied_groups) == 1, "the planted duplicate group unites the two patients"

    # The same audit again: fold 0 reused, fold 1 resumed from its checkpoint, fold 2 trained.
    with engine.connect() as conn:
        before = conn.execute(select(TrainingRun.id, TrainingRun.status).order_by(TrainingRun.id)).all()
    assert [status for _, status in before] == ["finished", "interrupted"]
    result = audit_labels(engine, "mura-v1.1", config, folds=3, verbose=0)
    assert [(f.run_id, f.how) for f in result.folds][:2] == [(before[0].id, "reused"), (before[1].id, "resumed")]
    assert result.folds[2].how == "trained" and sum(f.studies for f in result.folds) == len(tested)
    assert result.audit.status == "finished" and result.audit.runs == [f.run_id for f in result.folds]
    ranks = [row.rank for row in result.suspects]
    assert ranks == list(range(1, len(tested) + 1))
    assert all(0 <= row.score <= 1 and 0 <= row.probability <= 1 for row in result.suspects)

    # A third time, from the command line: nothing is trained, the stored ranking is printed.
    with engine.connect() as conn:
        runs = conn.execute(select(func.count()).select_from(TrainingRun)).scalar_one()
    shown = cli_run(engine, "labels", "suspects", "mura-v1.1", "--folds", 3, "--arch", "cnn", "--weights", "none",
                    "--augment", "flip", "--image-size", 32, "--epochs", 2, "--patience", 2, "--lr", 1e-3,
                    "--no-tensorboard", "--runs-dir", tmp_path / "runs", "--json")
    assert shown.exit_code == 0, shown.output
    rows = json.loads(shown.stdout)  # a warning, if the tiny models learned nothing, goes to stderr
    assert [r["rank"] for r in rows] == ranks and {r["audit"] for r in rows} == {1}
    assert {"dataset", "patient", "part", "study", "label", "score", "rank"} <= set(rows[0])
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(TrainingRun)).scalar_one() == runs
    [audit] = list_audits(engine)
    assert audit.runs == result.audit.runs and audit.label_version == 1
    listed = cli_run(engine, "labels", "audits")
    assert listed.exit_code == 0 and "finished" in listed.output


def test_an_audit_whose_models_learned_nothing_says_so(engine, tmp_path):
    # Stored as an audit is: every study scored, here at one probability for all (a model that learned nothing).
    _tiny(engine, tmp_path)
    with engine.begin() as conn:
        studies = conn.execute(select(Study.id, Study.label).order_by(Study.id)).all()
        audit = create_audit(conn, 1, list(BODY_PARTS), 2, {"arch": "cnn"}, 1, "cleanlab (stored by the test)")
    ranking = rank_labels([s.label for s in studies], [0.5] * len(studies))
    store_scores(engine, audit, [(s.id, 0, s.label, 0.5, float(score), int(rank), bool(flag)) for s, score, rank, flag
                                 in zip(studies, ranking.scores, ranking.ranks, ranking.flagged)])
    shown = cli_run(engine, "labels", "show", audit, "--json")
    assert shown.exit_code == 0 and len(json.loads(shown.stdout)) == len(studies)
    assert "warning: the fold models barely tell the labels apart (out-of-fold AUROC 0.50" in shown.stderr
    assert "close to chance" in cli_run(engine, "labels", "show", audit).stderr
    # The review queue in serve says it above the ranking, and its API with it.
    with TestClient(create_app(engine.url.render_as_string(hide_password=False), cache_dir=tmp_path / "cache")) as web:
        assert "barely tell the labels apart" in web.get(f"/api/labels/{audit}").json()["caution"]
        assert "Caution: the fold models barely tell" in web.get(f"/labels/{audit}").text


def _a_study(engine) -> tuple[str, str, int, int]:
    with engine.connect() as conn:
        row = conn.execute(select(Patient.patient_key, Study.body_part, Study.study_number, Study.label)
                           .join(Patient, Patient.id == Study.patient_id).where(Study.source_split == "train")
                           .order_by(Study.id)).first()
    return f"patient{row.patient_key}", row.body_part, row.study_number, row.label


def _pinned_label(engine, split: str, patient: str, part: str, number: int) -> set[int]:
    with engine.connect() as conn:
        images = split_images(conn, get_split(conn, split).id)
    return {i.label for i in images if (f"patient{i.patient}", i.part, i.study_number) == (patient, part, number)}


def test_labels_set_is_logged_keeps_splits_pinned_and_stands_against_reingest(engine, mura):
    ingest_mura(engine, mura)
    create_split(engine, "s", SplitOptions("mura-v1.1", BODY_PARTS, test_from="carve", seed=1))
    patient, part, number, old = _a_study(engine)
    new = 1 - old

    decided = cli_run(engine, "labels", "set", "mura-v1.1", patient, part, f"study{number}", new,
                      "--reason", "a plate on the lateral view", "--reviewer", "ann")
    assert decided.exit_code == 0, decided.output
    assert f"label {old} " in decided.output and f"-> {new} " in decided.output and "logged as 2" in decided.output

    # History: the change, reason review, who and why; the log: a "labels set" row that moved the label version.
    shown = json.loads(cli_run(engine, "history", "mura-v1.1", patient, part, number, "--json").output)
    [event] = shown["events"]
    assert (event["old_label"], event["new_label"], event["reason"]) == (old, new, "review")
    assert event["by"] == "review by ann (log 2)" and event["source"] == "a plate on the lateral view"
    assert shown["current_label"] == new
    log = json.loads(cli_run(engine, "log", "--json").output)
    assert [(e["command"], e["studies_relabeled"]) for e in log] == [("ingest", 0), ("labels set", 1)]

    # The split keeps the label it pinned, says one study changed, and a re-base takes today's.
    assert _pinned_label(engine, "s", patient, part, number) == {old}
    assert "labels of 1 study changed since split 's' was made" in cli_run(engine, "split", "show", "s").output
    rebased = cli_run(engine, "split", "create", "s2", "--from", "s")
    assert rebased.exit_code == 0, rebased.output
    assert _pinned_label(engine, "s2", patient, part, number) == {new}

    # A re-ingest of the original CSVs disagrees with the decision: the decision stands, the conflict is named.
    again = cli_run(engine, "ingest", str(mura))
    assert again.exit_code == 0, again.output
    [conflict] = [line for line in again.stderr.splitlines() if line.startswith("review conflict:")]
    assert f"{patient} {part} study{number} (train): the files say {old}" in conflict
    assert f"review by ann (log 2) decided {new}" in conflict
    report = ingest_mura(engine, mura)
    assert [(c.file_label, c.reviewed_label) for c in report.review_conflicts] == [(old, new)]
    assert not report.relabeled and label_history(engine, dataset="mura-v1.1",
                                                  study=(patient, part, number)).current_label == new

    # Another decision reverses it; history keeps both, and the files then agree again.
    back = cli_run(engine, "labels", "set", "mura-v1.1", patient, part, number, old, "--reason", "second look")
    assert back.exit_code == 0, back.output
    events = label_history(engine, dataset="mura-v1.1", study=(patient, part, number)).events
    assert [(e.old_label, e.new_label, e.reason) for e in events] == [(old, new, "review"), (new, old, "review")]
    assert ingest_mura(engine, mura).review_conflicts == []

    # Bad decisions: one line each, nothing written.
    same = cli_run(engine, "labels", "set", "mura-v1.1", patient, part, number, old, "--reason", "again")
    assert same.exit_code == 1 and "already labelled" in same.stderr and len(same.stderr.splitlines()) == 1
    unknown = cli_run(engine, "labels", "set", "mura-v1.1", patient, part, number, new, "--reason", "x", "--audit", 9)
    assert unknown.exit_code == 1 and "no such label audit" in unknown.stderr
    assert len(label_history(engine, dataset="mura-v1.1").events) == 2


def test_label_audit_migration_keeps_history_up_and_down(bare_engine, mura):
    from sqlalchemy import inspect, text

    from boneclf.data.label_decisions import set_label

    migrate.upgrade(bare_engine)
    ingest_mura(bare_engine, mura)
    patient, part, number, old = _a_study(bare_engine)
    set_label(bare_engine, "mura-v1.1", patient, part, number, 1 - old, note="why", reviewer="ann")
    migrate.downgrade(bare_engine, "0012")
    with bare_engine.connect() as conn:
        assert not {"label_audits", "label_audit_folds", "label_audit_studies"} & set(inspect(conn).get_table_names())
        assert "reviewer" not in {c["name"] for c in inspect(conn).get_columns("label_history")}
        assert conn.execute(text("SELECT old_label, new_label, reason FROM label_history")).all() == [
            (old, 1 - old, "review")]
    migrate.upgrade(bare_engine)
    migrate.require_head(bare_engine)
    with bare_engine.connect() as conn:
        assert conn.execute(text("SELECT reason, reviewer, note, audit_id FROM label_history")).all() == [
            ("review", None, None, None)]

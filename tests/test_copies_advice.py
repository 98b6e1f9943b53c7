"""What `evaluate` says about copies of one picture inside the scored subset: `split create --dedupe` is
advised only for the identical copies it leaves out, never for near copies it keeps."""

from __future__ import annotations

from sqlalchemy import select

from boneclf.data.ingest import ingest_mura
from boneclf.data.splits import SplitOptions, create_split
from boneclf.ml.evaluation import EvaluationResult, leak_clusters
from boneclf.ml.pipeline import Examples
from boneclf.ml.training_data import load_stage_data
from boneclf.store.duplicates import GroupPlan, replace_groups
from boneclf.store.queries import get_split
from boneclf.store.schema import Image, Study
from boneclf.vocabulary import FRACTURE


def _plant_groups(engine) -> None:
    """An identical pair (two images of one study, so one label) and a near pair (two other studies)."""
    with engine.begin() as conn:
        rows = conn.execute(select(Image.id, Image.study_id, Study.label).join(Study, Study.id == Image.study_id)
                            .order_by(Image.id)).all()
        by_study: dict[int, list[int]] = {}
        for image_id, study_id, _label in rows:
            by_study.setdefault(study_id, []).append(image_id)
        pair = next(ids for ids in by_study.values() if len(ids) >= 2)[:2]
        others = [ids[0] for study, ids in by_study.items() if pair[0] not in ids][:2]
        replace_groups(conn, 1, [GroupPlan("exact", [(pair[0], None), (pair[1], None)]),
                                 GroupPlan("near", [(others[0], 0.0), (others[1], 4.0)])],
                       method={"exact": "sha256", "near": "dct64"}, threshold={"exact": 0, "near": 8})


def _all_examples(engine, split: str) -> Examples:
    """Every subset's examples as one list (the planted groups may sit in any subset)."""
    data = load_stage_data(engine, split, FRACTURE, None)
    parts = [data.subsets[s] for s in ("train", "val", "test")]
    return Examples(*(sum((getattr(p, f) for p in parts), []) for f in
                      ("image_ids", "paths", "labels", "studies", "parts")))


def test_near_copies_are_not_sent_to_dedupe(engine, mura):
    ingest_mura(engine, mura)
    _plant_groups(engine)
    options = dict(dataset="mura-v1.1", parts=(), test_from="carve", val=0.2, test=0.2)
    create_split(engine, "plain", SplitOptions(**options))
    create_split(engine, "deduped", SplitOptions(**options, dedupe=True))
    with engine.connect() as conn:
        dataset_id = get_split(conn, "plain").dataset_id

    plain = leak_clusters(engine, dataset_id, _all_examples(engine, "plain"))
    assert (plain.copies, plain.dedupable) == (2, 1), "one identical copy (dedupable), one near copy"
    deduped = leak_clusters(engine, dataset_id, _all_examples(engine, "deduped"))
    assert (deduped.copies, deduped.dedupable) == (1, 0), "--dedupe left the identical copy out; the near one stays"

    warned = _warning(copies=deduped.copies, dedupable=deduped.dedupable)
    assert "--dedupe` leaves out" not in warned and "split create" not in warned
    assert "the 1 copy is a near copy" in warned and "which --dedupe keeps" in warned
    assert "`bonedb duplicates list`" in warned
    warned = _warning(copies=plain.copies, dedupable=plain.dedupable)
    assert "`bonedb split create NAME --dedupe` leaves out the 1 identical copy whose labels agree" in warned
    assert "the other 1 copy is a near copy" in warned


def _warning(*, copies: int, dedupable: int) -> str:
    from boneclf.scores import MulticlassMetrics

    result = EvaluationResult(1, "test", FRACTURE, "cnn", MulticlassMetrics.from_dict({}),
                              duplicates_in_subset=copies, leak_groups=10, dedupable_in_subset=dedupable)
    warning = result.copies_warning()
    assert warning is not None
    return warning


def test_no_copies_no_warning():
    from boneclf.scores import MulticlassMetrics

    assert EvaluationResult(1, "test", FRACTURE, "cnn", MulticlassMetrics.from_dict({})).copies_warning() is None

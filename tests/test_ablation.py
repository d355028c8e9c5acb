"""The ablation grid's logic (fast): rows are switches of one recipe, the training switches the grid uses (E_c
frozen and taken from the shared checkpoint, a fresh expression branch, the start not selectable), and the report's
decisions. The end-to-end smoke grid (Ray, MLflow server, screenshot) is tests/test_ablation_grid.py."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from avface.ablation.config import PROFILES, AblationConfig
from avface.ablation.grid import CLAIMS, PAPER, ROWS, row_by_name, select_rows
from avface.ablation.report import RowStats, claim_verdict, compare, write_report
from avface.ablation.run import row_recipe
from avface.face_model import FaceModel, load_face_model
from avface.models.avface import AVFace
from avface.models.config import AVFaceConfig
from avface.models.stages import Stage
from avface.train.loop import RecordingReporter, run_stage
from avface.train.selection import Selection
from avface.train.trainer import prepare_training, stage_payload
from avface.trained.checkpoints import read_checkpoint


def _diff(a, b, path=""):
    """Dotted keys where two nested dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {k for key in set(a) | set(b) for k in _diff(a.get(key), b.get(key), f"{path}{key}.")}
    return set() if a == b else {path.rstrip(".")}


def _recipe(name: str, seed: int = 0) -> dict:
    cfg = AblationConfig(out="/o").resolved()
    return row_recipe(cfg, row_by_name(name), seed, "/shards/mel", "/shared.pt", "sqlite:///x.db", "p")


@pytest.mark.parametrize(("a", "b", "varies"), [
    ("video", "video_temporal", {"model.expression.temporal"}),
    ("audio", "audio_temporal", {"model.expression.temporal"}),
    ("av", "av_dropout", {"model.expression.modality_dropout"}),
    ("video", "audio", {"model.expression.modalities"}),
    ("av_dropout_temporal", "av_dropout_temporal_lip", {"stage_chain", "stages.lip"}),
    ("occ_with", "av_dropout_temporal_lip", {"stage_chain", "stages.occlusion"}),
])
def test_rows_differ_only_in_what_their_table_varies(a, b, varies):
    ra, rb = _recipe(a), _recipe(b)
    ra.pop("name"), rb.pop("name")
    assert _diff(ra, rb) == varies


def test_every_row_shares_the_coarse_encoder_and_trains_its_own_expression_branch():
    for row in ROWS:
        r = _recipe(row.name, seed=2)
        first = r["stages"]["pretrain"]
        assert r["init"] == "/shared.pt" and r["stage_chain"][0] == "pretrain" and r["seed"] == 2
        assert first["networks"] == ["expression"] and first["init_networks"] == ["coarse"]
        assert all(s["keep_start"] is False and s["no_regression"] is False and s["patience"] == 0
                   for s in r["stages"].values())
        assert r["tracking"]["parent_run_id"] == "p" and r["tracking"]["registered_model"] == ""


def test_select_rows_and_profiles():
    assert [r.name for r in select_rows(["feat_mel"])] == ["av_dropout_temporal_lip", "feat_mel"]
    assert {r.table for r in select_rows(tables=[3])} == {1, 3}  # occ_without is the lip row of Table 1
    smoke = AblationConfig(profile="smoke").resolved()
    assert smoke.rows == PROFILES["smoke"]["rows"] and smoke.seeds == [0] and smoke.budget.expression_steps == 4
    given = AblationConfig.from_dict({"profile": "quick", "seeds": [3, 4], "budget": {"lip_steps": 7}}).resolved()
    assert given.seeds == [3, 4] and given.budget.lip_steps == 7 and given.budget.expression_steps == 60
    with pytest.raises(ValueError, match="unknown ablation row"):
        select_rows(["nope"])
    assert PAPER["av_dropout_temporal_lip"]["nme"] == 1.63 and PAPER["occ_with"]["nme_lips"] == 1.73


def _stats(values: dict[str, list[float]]) -> RowStats:
    n = len(next(iter(values.values())))
    return RowStats([{m: v[i] for m, v in values.items()} for i in range(n)])


def test_a_difference_is_called_only_beyond_the_seeds_spread():
    a = _stats({"nme": [2.0, 2.1, 1.9], "auc": [0.80, 0.81, 0.79]})
    b = _stats({"nme": [2.5, 2.6, 2.4], "auc": [0.80, 0.82, 0.78]})
    assert compare(a, b, "nme") == "better" and compare(b, a, "nme") == "worse"  # 0.5 apart, spread 0.2
    assert compare(a, b, "auc") == "same"  # higher is better, but within the spread
    close = _stats({"nme": [2.2, 2.35, 2.05]})
    assert compare(a, close, "nme") == "same"  # 0.2 apart, spread 0.1 + 0.15
    one = _stats({"nme": [1.0]})
    assert compare(one, b, "nme") == "undecided" and math.isnan(one.std["nme"])
    assert compare(a, _stats({"v3d_mm": [1.0, 2.0]}), "nme") == "missing"


def test_claims_say_holds_does_not_hold_or_not_tested():
    good = {"nme": [1.0, 1.1, 0.9], "v3d_mm": [2.0, 2.1, 1.9]}
    bad = {"nme": [2.0, 2.1, 1.9], "v3d_mm": [3.0, 3.1, 2.9]}
    claim = CLAIMS[0]  # video_temporal beats video
    assert claim_verdict(claim, {"video_temporal": _stats(good), "video": _stats(bad)}, {}).startswith("**holds**")
    line = claim_verdict(claim, {"video_temporal": _stats(bad), "video": _stats(good)}, {})
    assert line.startswith("**does not hold**") and "nme video_temporal 2.00 ± 0.10 vs video 1.00 ± 0.10" in line
    lip = next(c for c in CLAIMS if "lip" in c.text)
    worse = {"nme_lips": [2.0, 2.1, 1.9], "lip_mm": [3.0, 3.1, 2.9]}
    better = {"nme_lips": [1.0, 1.1, 0.9], "lip_mm": [2.0, 2.1, 1.9]}
    line = claim_verdict(lip, {lip.better: _stats(worse), lip.than[0]: _stats(better)}, {})
    assert "docs/research/2026-12-02-lip-stage-optimum-and-oracle.md" in line
    ds = next(c for c in CLAIMS if "DeepSpeech" in c.text)
    line = claim_verdict(ds, {"feat_mel": _stats(good)}, {"feat_deepspeech": "needs DeepSpeech's graph"})
    assert line.startswith("**not tested**") and "needs DeepSpeech's graph" in line


def test_report_tables_csv_and_charts(tmp_path):
    rows = select_rows(tables=[1, 3])
    results = []
    for k, row in enumerate(r for r in rows if r.same_as is None):
        for seed in range(3):
            results.append({"row": row.name, "seed": seed, "metrics": {
                "nme": 2.0 + 0.1 * k + 0.01 * seed, "auc": 0.8, "nme_lips": 1.5, "nme_occ": 2.5, "v3d_mm": 1.2,
                "lip_mm": 1.4, "expression_mm": 0.9, "jitter": 0.05}})
    cfg = AblationConfig(out=str(tmp_path), profile="quick").resolved()
    paths = write_report(tmp_path, rows, results, {r.name: None for r in rows}, cfg)
    md = paths["md"].read_text()
    assert set(paths) == {"md", "csv", "table1", "table3"} and all(p.stat().st_size > 0 for p in paths.values())
    assert "| video | e from Video | 3 | 2.01 ± 0.01 |" in md and "paper's NME %" in md
    assert "| occ_without (= av_dropout_temporal_lip) | Without synthetic occlusions | 3 |" in md
    assert md.count("\n- ") >= len(CLAIMS) and "1.63 | 0.84 | 0.91 | 2.39" in md  # the paper's lip-refine row
    with open(paths["csv"]) as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and table[0]["paper_nme"] == "2.6" and table[0]["seeds"] == "3"


def test_set_stage_trains_only_the_named_networks():
    model = AVFace(AVFaceConfig.tiny(), FaceModel(load_face_model(None), n_shape=100, n_expression=50))
    model.set_stage("coarse", ("expression",))
    model.train()
    assert not any(p.requires_grad for p in model.coarse.parameters()) and not model.coarse.training
    assert all(p.requires_grad for p in model.expression.parameters()) and model.expression.training
    assert {id(p) for p in model.trainable_parameters()} == {id(p) for p in model.expression.parameters()}
    with pytest.raises(ValueError, match="must be some of stage coarse"):
        model.set_stage("coarse", ("lip",))


def test_selection_without_the_start():
    s = Selection("val/score_mm")
    assert s.offer({"val/score_mm": 5.0})  # no start offered: the first validated candidate is selected
    assert not s.offer({"val/score_mm": 6.0}) and s.offer({"val/score_mm": 4.0})


def test_a_row_stage_keeps_the_shared_coarse_encoder_and_trains_a_fresh_expression_branch(train_shards, tmp_path):
    """The grid's first stage of a row: E_c from the shared checkpoint, frozen; a fresh expression branch of another
    architecture (no temporal transformer) trained; the start not selected."""
    once = {"steps": 2, "val_every": 1, "report_every": 1, "checkpoint_every": 0}
    data = {"shards": str(train_shards), "batch_windows": 2, "windows_per_speaker": 2, "loader_workers": 0,
            "val_windows": 2, "val_occluded_windows": 0}
    shared = prepare_training({"data": data, "out": str(tmp_path), "progress": False, "stage": "pretrain",
                               "stages": {"pretrain": once}})
    shared_pt = tmp_path / "shared" / "final.pt"
    run_stage(stage_payload(shared.cfg, Stage.PRETRAIN, None, shared_pt, Stage.COARSE, shared.stats,
                            shared.summary["audio_kind"], None, input_contract=shared.input_contract))
    tiny = AVFaceConfig.tiny().to_dict()
    row = prepare_training({"data": data, "out": str(tmp_path), "progress": False, "init": str(shared_pt),
                            "stage_chain": ["pretrain"], "seed": 1,
                            "model": {**tiny, "expression": {**tiny["expression"], "temporal": False,
                                                             "modalities": "video"}},
                            "stages": {"pretrain": {**once, "networks": ["expression"], "init_networks": ["coarse"],
                                                    "keep_start": False, "no_regression": False}}})
    assert row.init_ck is None  # the row's audio statistics are its own
    row_pt = tmp_path / "row" / "final.pt"
    reporter = RecordingReporter()
    report = run_stage(stage_payload(row.cfg, Stage.PRETRAIN, str(shared_pt), row_pt, Stage.COARSE, row.stats,
                                     row.summary["audio_kind"], None, input_contract=row.input_contract),
                       reporter=reporter)
    before, after = read_checkpoint(shared_pt)["model"], read_checkpoint(row_pt)["model"]
    coarse = [k for k in after if k.startswith("coarse.")]
    assert coarse and all(torch.equal(before[k], after[k]) for k in coarse)  # shared E_c, untouched
    assert set(k for k in after if k.startswith("expression.")) != set(k for k in before if k.startswith("expression."))
    start = reporter.calls[0][0]
    assert start["step"] == 0 and report["best"] != start["val/score_mm"]  # the start was not a candidate


def test_local_reporter_keeps_the_newest_checkpoints_and_a_rerun_finds_the_last(tmp_path):
    from avface.train.loop import LocalReporter, latest_local_checkpoint

    reporter = LocalReporter(keep=2)
    made = []
    for k in range(4):
        d = tmp_path / f"avface-ckpt-{k}"
        d.mkdir()
        (d / "checkpoint.pt").write_bytes(b"x")
        made.append(d)
        reporter.report({"step": k}, d)
        reporter.report({"step": k})  # a report without a checkpoint changes nothing
    assert [d.exists() for d in made] == [False, False, True, True]
    assert latest_local_checkpoint(tmp_path) in {made[3] / "checkpoint.pt", made[2] / "checkpoint.pt"}
    assert latest_local_checkpoint(tmp_path / "none") is None

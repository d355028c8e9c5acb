"""The smoke grid end to end (two rows, one seed, a few steps; rows as Ray tasks), report included, then the MLflow
server on 127.0.0.1 over its store: the parent run has one child per row and seed with the report's metrics, and
the compare view renders in headless Chromium."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from avface.ablation.run import REPORT_METRICS, run_ablation
from avface.ablation.ui import compare_view, rest, serve_mlflow


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium (scripts/install.sh installs it)")
def test_smoke_grid_report_mlflow_server_and_compare_view(train_shards, tmp_path):
    cfg = {"profile": "smoke", "out": str(tmp_path / "grid"), "num_cpus": 2, "rows_in_parallel": 2,
           "corpus": {"shards": {"mel": str(train_shards)}}, "screenshot": False}
    res = run_ablation(cfg)
    results = {(r["row"], r["seed"]): r for r in res["results"]}
    assert sorted(results) == [("av_dropout_temporal", 0), ("video", 0)]
    for r in results.values():
        assert set(REPORT_METRICS) - {"nme_occ"} <= set(r["metrics"]), r["metrics"]
        assert r["recipe"]["stages"]["pretrain"]["networks"] == ["expression"]
    # the two rows trained different expression branches: their numbers differ
    assert results[("video", 0)]["metrics"]["v3d_mm"] != results[("av_dropout_temporal", 0)]["metrics"]["v3d_mm"]
    md = res["report"]["md"].read_text()
    assert "| video | e from Video | 1 |" in md and "2.60 | 0.82 | 1.78 | 2.91" in md  # ours and the paper's
    assert "temporal modelling helps the video-only branch: **not tested**" in md  # video_temporal not in grid
    assert res["report"]["table1"].stat().st_size > 10_000

    # a re-run skips the finished rows (same MLflow runs, no training)
    again = run_ablation({**cfg, "rows_in_parallel": 1})
    assert {r["mlflow_run_id"] for r in again["results"]} == {r["mlflow_run_id"] for r in res["results"]}

    with serve_mlflow(res["tracking_uri"], log=tmp_path / "server.log") as base:
        exp = rest(base, f"experiments/get?experiment_id={res['experiment_id']}")["experiment"]
        assert {t["key"]: t["value"] for t in exp["tags"]}["mlflow.experimentKind"] == "custom_model_development"
        found = rest(base, "runs/search", {
            "experiment_ids": [res["experiment_id"]], "max_results": 100,
            "filter": f"tags.mlflow.parentRunId = '{res['parent_run_id']}' and tags.`avface.ablation.role` = 'row'"})
        children = found["runs"]
        tags = [{t["key"]: t["value"] for t in run["data"]["tags"]} for run in children]
        assert sorted((t["row"], t["seed"], t["table"]) for t in tags) == [("av_dropout_temporal", "0", "1"),
                                                                           ("video", "0", "1")]
        for run, t in zip(children, tags, strict=True):
            logged = {m["key"]: m["value"] for m in run["data"]["metrics"]}
            want = results[(t["row"], int(t["seed"]))]["metrics"]
            for k, v in want.items():
                assert logged[f"ablation/{k}"] == pytest.approx(v)
        listed = rest(base, f"artifacts/list?run_id={res['parent_run_id']}&path=report")
        assert {"report/ablation.md", "report/ablation.csv", "report/table1.png"} <= {f["path"] for f in
                                                                                      listed["files"]}
        shot, shown = compare_view(base, res["experiment_id"],
                                   {r["info"]["run_id"]: r["info"]["run_name"] for r in children},
                                   tmp_path / "compare.png")
        assert shown, "the compare view did not show the child runs' names"
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (900, 1400) and float(np.std(pixels[..., :3])) > 0.02  # a page was drawn
    json.dumps(res["not_run"])

"""pipelines/evaluate.py and its harness (avface.evaluate.faceset / multiface_eval / job) on a tiny synthetic corpus:
the FaceSet-style table with every method and baseline row, the Multiface table from Ray tasks + dask, the
pictures, the failures table (a Multiface frame without its mesh), MLflow linked to the registered model version
and the nightly exit code."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from avface.data.batch import samples_to_batch
from avface.data.shard_index import ShardIndex, data_summary, target_statistics
from avface.evaluate.config import FaceSetEvalConfig
from avface.evaluate.faceset import (
    BASELINE_METHODS,
    MODEL_METHODS,
    OURS,
    REFINED,
    _baseline,
    evaluate_faceset,
    per_frame_batch,
)
from avface.evaluate.multiface_eval import DETAILED, MEAN_FACE, face_boxes
from avface.metrics import Baselines, landmark_nme
from avface.models.avface import AVFace
from avface.models.outputs import AVFaceOutput
from avface.train.config import TrainConfig
from avface.train.testing import make_training_shards
from avface.trained.checkpoints import load_trained, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """Shards of 2 dev + 1 test identities, a one-identity synthetic Multiface stand-in, an untrained checkpoint."""
    from avface.synth.corpus import synthesize_corpus

    root = tmp_path_factory.mktemp("evalpipe")
    data = make_training_shards(root / "data", dev_identities=2, test_identities=1, num_cpus=2)
    synthesize_corpus({"out": str(root / "mf"), "size": "tiny", "seed": 5, "progress": False,
                       "vox": {"enabled": False}, "multiface": {"cameras": 1, "image_height": 128,
                                                                "image_width": 84}}, use_ray=False)
    torch.manual_seed(0)
    index = ShardIndex.build(data["shards"], ["train"])
    summary = data_summary(index)
    cfg = TrainConfig()
    cfg.model.audio_dim = summary["audio_dim"]
    model = AVFace(cfg.model, cfg.build_face_model()).eval()
    ckpt = save_checkpoint(root / "untrained.pt", model=model, stage="coarse", step=0, epoch=0,
                           audio_kind=summary["audio_kind"], face_model_source=None,
                           extras={"statistics": target_statistics(index)})
    return {"root": root, "shards": data["shards"], "multiface": root / "mf" / "multiface", "ckpt": ckpt}


def _run(*overrides: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, str(ROOT / "pipelines" / "evaluate.py"), *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def test_face_boxes_are_squares_around_the_points():
    pts = np.array([[[10.0, 20.0], [30.0, 60.0]]])
    box = face_boxes(pts, 2.0)[0]
    assert np.allclose(box, [20 - 40, 40 - 40, 20 + 40, 40 + 40])


@pytest.mark.ray
def test_per_frame_batch_makes_one_frame_windows(corpus):
    index = ShardIndex.build(corpus["shards"], ["test"])
    batch = samples_to_batch([index.read(0), index.read(1)], 64)
    flat = per_frame_batch(batch)
    b, t = batch.images.shape[:2]
    assert flat.images.shape[:2] == (b * t, 1) and flat.audio.shape[:2] == (b * t, 1)
    assert torch.equal(flat.images[t + 3, 0], batch.images[1, 3])
    assert flat.identity.tolist() == batch.identity.repeat_interleave(t).tolist()


@pytest.mark.ray
def test_baseline_landmarks_use_the_true_pose_and_camera(corpus):
    """The baselines' 2D landmarks come from the true pose / camera through the model's decoder: with the TRUE
    shape and expression that projection lands on the shards' landmarks (so the mean face's NME is the error of
    the expression and shape alone)."""
    tm = load_trained(corpus["ckpt"])
    index = ShardIndex.build(corpus["shards"], ["test"])
    batch = samples_to_batch([index.read(0)], 64)
    tg = batch.targets
    oracle = tm.model.decode(AVFaceOutput(shape=tg.shape, albedo=None, light=None, global_pose=tg.global_pose,
                                          cam=tg.cam, expression=tg.expression, jaw=tg.jaw)).landmarks2d
    pred = ((oracle[0] + 1) * 32).numpy()
    oracle_nme = landmark_nme(pred, batch.landmarks[0].numpy())
    _, mean_lmk = _baseline(tm.model, batch, "mean face", Baselines.from_statistics(tm.meta["extras"]["statistics"]))
    mean_nme = landmark_nme(((mean_lmk[0] + 1) * 32).numpy(), batch.landmarks[0].numpy())
    assert oracle_nme.mean() < 0.02 and mean_nme.mean() > oracle_nme.mean()


@pytest.mark.ray
def test_faceset_rows_for_every_method_and_baseline(corpus):
    tm = load_trained(corpus["ckpt"])
    fs = evaluate_faceset(tm.model, FaceSetEvalConfig(shards=str(corpus["shards"]), max_windows=4,
                                                      max_occluded_windows=2),
                          Baselines.from_statistics(tm.meta["extras"]["statistics"]))
    rows = {r.method: r for r in fs.results}
    assert set(rows) == set(MODEL_METHODS) | set(BASELINE_METHODS)
    for r in rows.values():
        assert r.table == "faceset" and r.count == 4 * 16
        assert {"nme", "auc", "nme_lips", "nme_occ", "vertex_error_mm", "lve_mm2", "jitter"} <= set(r.metrics)
        assert all(np.isfinite(v) for v in r.metrics.values())
    # the constant-expression face is the baseline to beat: below the mean face on the synthetic corpus
    assert rows["constant expression"].metrics["vertex_error_mm"] < rows["mean face"].metrics["vertex_error_mm"]
    # one frame per window: the per-frame method is a different computation of the same model
    assert rows["per-frame (window 1)"].metrics["nme"] != rows[OURS].metrics["nme"]
    # the test-time fit to the window's landmarks (here the exact points the NME measures against) lands closer
    assert rows[REFINED].metrics["nme"] < rows[OURS].metrics["nme"]
    assert len(rows) == 7  # AVFace, + landmark fit, per-frame, video-only, audio-only; mean face, constant
    assert fs.failures == [] and len(fs.frame_rows) == fs.num_frame_rows == len(rows) * (4 + 2) * 16
    assert set(fs.vertex_errors) == set(rows) and all(v.shape == (tm.face_model.num_vertices,)
                                                      for v in fs.vertex_errors.values())


@pytest.mark.ray
def test_empty_occluded_split_is_a_failure_row_not_an_error(corpus):
    tm = load_trained(corpus["ckpt"])
    fs = evaluate_faceset(tm.model, FaceSetEvalConfig(shards=str(corpus["shards"]), max_windows=1,
                                                      occluded_split="nosuchsplit"), None)
    assert [f["item"] for f in fs.failures] == ["nosuchsplit"]
    assert {r.method for r in fs.results} == set(MODEL_METHODS)  # no ground-truth statistics: no baselines
    assert all("nme_occ" not in r.metrics for r in fs.results)


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.ray
@pytest.mark.slow
def test_evaluate_end_to_end_trained_registered_model_nightly(corpus, tmp_path):
    """Train a tiny model (20 pretraining steps in this process, registered in MLflow), then
    ``python pipelines/evaluate.py`` on ``models:/avface/latest`` with nightly comparison, on shards and on a
    Multiface copy missing one frame's mesh."""
    from avface.train.trainer import run_training

    train_out = tmp_path / "train"
    trained = run_training({"data": {"shards": str(corpus["shards"]), "batch_windows": 2, "windows_per_speaker": 2,
                                     "val_windows": 2, "val_occluded_windows": 0},
                            "stage": "pretrain", "stages": {"pretrain": {"steps": 20, "val_every": 0}},
                            "out": str(train_out), "progress": False,
                            "use_ray": False})  # Ray Train itself: tests/test_train_pipeline.py
    assert trained["registered"] == "models:/avface/1"
    uri = trained["tracking_uri"]
    mf = tmp_path / "multiface"
    shutil.copytree(corpus["multiface"], mf)
    ident = next(d for d in mf.iterdir() if d.name.startswith("m--"))
    seg, frame = (ident / "frame_list.txt").read_text().splitlines()[5].split()
    for suffix in (".bin", ".obj"):
        (ident / "tracked_mesh" / seg / f"{int(frame):06d}{suffix}").unlink()
    out = tmp_path / "eval"
    p = _run("model_uri=models:/avface/latest", f"faceset.shards={corpus['shards']}", f"multiface.root={mf}",
             f"out={out}", "nightly.enabled=true", f"tracking.tracking_uri={uri}", "progress=false", "num_cpus=2",
             "multiface.max_frames=3", "faceset.max_windows=4", "faceset.max_occluded_windows=2")
    assert p.returncode == 0, p.stderr[-3000:]
    for name in ("results.md", "results.csv", "ced.png", "heatmaps_faceset.png", "heatmaps_multiface.png",
                 "failures.csv", "failures.md", "summary.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = _read_csv(out / "results.csv")
    ours = {(r["table"], r["method"]) for r in rows if r["source"] == "ours"}
    assert {("faceset", m) for m in (*MODEL_METHODS, *BASELINE_METHODS)} <= ours
    assert {("multiface", OURS), ("multiface", MEAN_FACE)} <= ours and ("multiface", DETAILED) not in ours
    paper = {(r["table"], r["method"]) for r in rows if r["source"].startswith("paper")}
    assert paper == {("faceset", "AVFace"), ("faceset", "DECA"), ("multiface", "AVFace"), ("multiface", "DECA")}
    mf_ours = next(r for r in rows if r["table"] == "multiface" and r["method"] == OURS)
    assert 0 < float(mf_ours["median"]) < 20 and int(mf_ours["count"]) == 3
    md = (out / "results.md").read_text()
    assert "Table 4" in md and "Table 5" in md and "*paper (AVFace, CVPR 2023), Table 5*" in md
    # the frame without its mesh is in the failures table; the segment's other frames were still evaluated
    failures = _read_csv(out / "failures.csv")
    assert any(f"{int(frame):06d}" in f["problem"] and "mesh missing" in f["problem"] for f in failures)
    # per-frame distances as partitioned parquet, readable by pandas
    import pandas as pd

    frames = pd.read_parquet(out / "parquet" / "faceset_frames")
    methods = len(MODEL_METHODS) + len(BASELINE_METHODS)  # one row per method, window frame
    assert len(frames) == methods * (4 + 2) * 16 and frames["occluded"].sum() == methods * 2 * 16
    dist = pd.read_parquet(out / "parquet" / "multiface_distances")
    assert set(dist["method"].astype(str)) == {OURS, MEAN_FACE} and dist["frame"].nunique() == 3
    # MLflow: the run, linked to the registered version, the nightly decision (first nightly: promoted)
    summary = json.loads((out / "summary.json").read_text())
    client = MlflowClient(uri)
    run = client.get_run(summary["run_id"])
    assert run.data.tags["avface.model_version"] == "1" and run.data.tags["avface.nightly"] == "true"
    assert {"faceset/nme", "faceset/auc", "multiface/median", "faceset/mean_face/nme"} <= set(run.data.metrics)
    assert run.data.tags["regression"] == "false" and run.data.tags["nightly.promoted"] == "true"
    assert str(client.get_model_version_by_alias("avface", "champion").version) == "1"
    artifacts = {a.path for a in client.list_artifacts(summary["run_id"])}
    assert {"results.md", "results.csv", "failures.csv", "ced.png"} <= artifacts
    assert run.info.artifact_uri.startswith((train_out / "mlartifacts").as_uri())  # beside the store, not ./mlruns

    # version 2 (the untrained model) evaluated without Multiface: the watched multiface/* metrics are gone, which
    # the nightly counts as a regression against the previous nightly: exit code 1, the champion stays
    from avface.utils.tracking import register_final_model

    run2 = client.create_run(client.get_experiment_by_name("avface-train").experiment_id).info.run_id
    assert register_final_model(uri, run2, corpus["ckpt"], "avface") == "2"
    out2 = tmp_path / "eval2"
    p = _run("model_uri=models:/avface/latest", f"faceset.shards={corpus['shards']}", "multiface.root=null",
             f"out={out2}", "nightly.enabled=true", f"tracking.tracking_uri={uri}", "progress=false",
             "faceset.max_windows=4", "faceset.max_occluded_windows=2")
    assert p.returncode == 1, p.stderr[-3000:]
    second = json.loads((out2 / "summary.json").read_text())
    assert second["nightly"]["regression"] and not second["nightly"]["promoted"]
    gone = {c["metric"] for c in second["nightly"]["comparisons"] if c["regressed"] and c["value"] is None}
    assert {"multiface/median", "multiface/mean"} <= gone
    assert client.get_run(second["run_id"]).data.tags["regression"] == "true"
    assert str(client.get_model_version_by_alias("avface", "champion").version) == "1"


@pytest.mark.ray
def test_multiface_segment_coarse_and_detailed_rows_and_parquet(corpus, tmp_path):
    """A detail-stage model gives the detailed row too; one segment evaluated in this process (the pipeline runs
    the same function as a Ray task) writes its distances as partitioned parquet."""
    from avface.data.multiface import read_multiface
    from avface.evaluate.config import MultifaceEvalConfig
    from avface.evaluate.multiface_eval import evaluate_segment
    from avface.evaluate.tables import aggregate_frame_results

    torch.manual_seed(0)
    cfg = TrainConfig()
    cfg.model.audio_dim = 80
    model = AVFace(cfg.model, cfg.build_face_model())
    model.set_stage("detail")
    ckpt = save_checkpoint(tmp_path / "detail.pt", model=model.eval(), stage="detail", step=0, epoch=0,
                           audio_kind="mel", face_model_source=None)
    (seg,) = read_multiface(corpus["multiface"]).segments
    res = evaluate_segment(str(ckpt), seg, MultifaceEvalConfig(max_frames=2), str(tmp_path / "out"), heatmap_frames=1)
    assert res.frames_scored == 2 and res.failures == []
    assert set(res.jitter) == {OURS, DETAILED, MEAN_FACE} and res.jitter[MEAN_FACE] == 0.0
    assert res.jitter[OURS] > 0 and res.gt_jitter > 0
    assert [p["title"].split("\n")[0] for p in res.panels] == [OURS, DETAILED, MEAN_FACE]
    agg = aggregate_frame_results(tmp_path / "out" / "parquet" / "multiface_distances", by=["method"],
                                  metrics=["distance"], scheduler="sync")
    assert sorted(agg["method"]) == sorted([OURS, DETAILED, MEAN_FACE])
    assert (agg["distance_median"] > 0).all() and (agg["distance_median"] < 20).all()


def test_real_multiface_topology_takes_its_landmark_vertex_ids_from_a_file(tmp_path):
    """Real Multiface meshes (7,306 vertices) carry no landmarks: multiface.landmark_vertices names 68 vertex ids
    of that topology; bad files are errors naming the file."""
    import numpy as np

    from avface.evaluate.multiface_eval import _scan_landmarks, read_landmark_vertices

    rng = np.random.default_rng(0)
    meshes = rng.normal(size=(3, 7306, 3))
    ids = rng.choice(7306, 68, replace=False)
    np.save(tmp_path / "ids.npy", ids)
    (tmp_path / "ids.txt").write_text(" ".join(map(str, ids)))
    for f in ("ids.npy", "ids.txt"):
        lm = _scan_landmarks(None, meshes, None, str(tmp_path / f))
        np.testing.assert_array_equal(lm, meshes[:, ids])
    (tmp_path / "short.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match="short.txt.*68 integer"):
        read_landmark_vertices(tmp_path / "short.txt", 7306)
    np.save(tmp_path / "big.npy", np.full(68, 9000))
    with pytest.raises(ValueError, match=r"big.npy.*\[0, 7306\)"):
        read_landmark_vertices(tmp_path / "big.npy", 7306)

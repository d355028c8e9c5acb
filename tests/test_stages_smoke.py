"""Every training stage, two steps each, in this process (``run_stage``, no Ray Train, no MLflow): a broken stage
shows here in seconds instead of at the end of the Ray pipeline test. Each stage starts from the previous one's
``final.pt``, as ``stage=all`` chains them."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from avface.inference import ReconstructConfig, Reconstructor
from avface.inference.windows import cached_codes
from avface.landmarks import mediapipe_available
from avface.models.avface import AVFace
from avface.models.config import AVFaceConfig
from avface.models.stages import STAGE_TABLE, TRAINING_ORDER, Stage
from avface.train.loop import RecordingReporter, run_stage
from avface.train.trainer import prepare_training, stage_payload
from avface.trained.checkpoints import CHECKPOINT_FILE, read_checkpoint
from avface.trained.contract import InputContract, LandmarkInputMismatch

STEPS = 2


@pytest.fixture(scope="module")
def smoke_runs(train_shards, tmp_path_factory) -> dict[Stage, dict]:
    """Run the whole chain on ``train_shards``: stage -> {"reporter", "report", "export", "init", "cfg"}."""
    out = tmp_path_factory.mktemp("stages_smoke")
    once = {"steps": STEPS, "val_every": 0, "report_every": 1, "checkpoint_every": 0}
    prepared = prepare_training({
        "data": {"shards": str(train_shards), "batch_windows": 2, "windows_per_speaker": 2, "loader_workers": 0,
                 "val_windows": 2, "val_occluded_windows": 1},
        "out": str(out), "progress": False, "stages": {s: once for s in TRAINING_ORDER}})
    assert prepared.chain == list(TRAINING_ORDER)
    runs: dict[Stage, dict] = {}
    init, deepest = None, Stage.COARSE
    for stage in prepared.chain:
        deepest = max(deepest, STAGE_TABLE[stage].depth, key=list(Stage).index)
        export = out / str(stage) / "final.pt"
        payload = stage_payload(prepared.cfg, stage, init, export, deepest, prepared.stats,
                                prepared.summary["audio_kind"], None, input_contract=prepared.input_contract)
        reporter = RecordingReporter()
        report = run_stage(payload, reporter=reporter, scratch=tmp_path_factory.mktemp(f"ckpt_{stage}"))
        runs[stage] = {"reporter": reporter, "report": report, "export": export, "init": init, "cfg": prepared.cfg,
                       "contract": prepared.input_contract}
        init = str(export)
    return runs


def _weights(path: str | Path | None, cfg) -> dict[str, torch.Tensor]:
    """The trainable state a stage starts from: its init checkpoint, else a fresh model of the run's seed (what
    ``run_stage`` builds)."""
    if path is not None:
        return read_checkpoint(path)["model"]
    torch.manual_seed(cfg.seed)
    return AVFace(cfg.model, cfg.build_face_model()).trainable_state_dict()


@pytest.mark.parametrize("stage", list(TRAINING_ORDER))
def test_every_stage_trains_two_steps_without_ray(smoke_runs, stage):
    run = smoke_runs[stage]
    calls = run["reporter"].calls
    # reported at every step, the same metrics a Ray run logs, every loss term finite
    assert [m["step"] for m, _ in calls] == list(range(1, STEPS + 1))
    for metrics, _ in calls:
        terms = {k: v for k, v in metrics.items() if k.startswith("train/")}
        assert "train/total" in terms and all(math.isfinite(v) for v in terms.values()), (stage, terms)
    assert ("train/clean_consistency" in calls[-1][0]) == (stage == Stage.OCCLUSION)
    # the last step's resumable checkpoint, handed to the reporter
    checkpoint_dir = calls[-1][1]
    assert checkpoint_dir is not None
    ck = read_checkpoint(checkpoint_dir / CHECKPOINT_FILE)
    assert ck["stage"] == stage and ck["step"] == STEPS and ck["optimizer"] is not None
    # the exported model and its report
    assert run["export"].is_file() and run["report"]["steps"] == STEPS
    assert run["report"]["monitor"] == STAGE_TABLE[stage].monitor
    final = read_checkpoint(run["export"])
    assert final["extras"]["model_stage"] in {str(s) for s in Stage}
    # both carry how the shards' inputs were made
    assert ck["input_contract"] == final["input_contract"] == run["contract"]
    # exactly the stage's networks moved
    before = _weights(run["init"], run["cfg"])
    trains = STAGE_TABLE[stage].networks
    for name in ("coarse", "expression", "lip", "detail"):
        moved = any(not torch.equal(v, before[k]) for k, v in final["model"].items()
                    if k.startswith(f"{name}.") and v.is_floating_point())
        assert moved == (name in trains), (stage, name, moved)


@pytest.mark.slow
def test_landmark_input_trains_and_reconstructs(train_shards, tmp_path_factory):
    """``model.landmark_input=true``: two pretraining steps on the shards' MediaPipe points, the checkpoint's input
    contract names the point set, and ``Reconstructor`` feeds a video's points (crop pixels) to the model; a model
    trained on another point set is refused."""
    if not mediapipe_available():
        pytest.skip("no MediaPipe (side venv): the shards hold no detector points")
    model = AVFaceConfig.tiny()
    model.landmark_input = True
    out = tmp_path_factory.mktemp("landmark_smoke")
    once = {"steps": STEPS, "val_every": 0, "report_every": 1, "checkpoint_every": 0}
    prepared = prepare_training({
        "data": {"shards": str(train_shards), "batch_windows": 2, "windows_per_speaker": 2, "loader_workers": 0,
                 "val_windows": 2, "val_occluded_windows": 1},
        "out": str(out), "progress": False, "model": model.to_dict(), "stage": "pretrain",
        "stages": {"pretrain": once}})
    assert prepared.input_contract["landmark_points"] == "mediapipe478"
    assert prepared.cfg.model.landmarks.n_points == 478
    export = out / "pretrain" / "final.pt"
    payload = stage_payload(prepared.cfg, Stage.PRETRAIN, None, export, Stage.COARSE, prepared.stats,
                            prepared.summary["audio_kind"], None, input_contract=prepared.input_contract)
    reporter = RecordingReporter()
    run_stage(payload, reporter=reporter, scratch=tmp_path_factory.mktemp("landmark_ckpt"))
    assert all(math.isfinite(v) for k, v in reporter.calls[-1][0].items() if k.startswith("train/"))
    final = read_checkpoint(export)
    assert final["input_contract"]["landmark_points"] == "mediapipe478"
    assert any(k.startswith("coarse.landmarks.") for k in final["model"])

    video = sorted((Path(train_shards).parent / "corpus").rglob("*.mp4"))[0]
    with Reconstructor(export, "cpu", ReconstructConfig(progress=False)) as r:
        frames, _, points, valid = r.model_inputs(video, with_points=True)
        assert points.shape == (len(frames), 478, 3) and valid.mean() > 0.9
        # the points sit on the face in the crops (the starter model's face fills the middle of the crop)
        centre = points[valid, :, :2].mean(1)
        assert np.all(np.abs(centre - frames.shape[1] / 2) < frames.shape[1] / 4)
        rec = r.run(video)
        assert np.isfinite(rec.shape).all() and np.isfinite(rec.cam).all()
        # what the points carry reaches the output: the same frames without them give another face
        model = r.model
        images = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
        with_pts = cached_codes(model, images, None, points=torch.from_numpy(points),
                                points_valid=torch.from_numpy(valid))
        assert not torch.allclose(with_pts, cached_codes(model, images, None))
        other = dataclasses.replace(r.contract, landmark_points="mediapipe468")
    with Reconstructor.from_model(model, config=ReconstructConfig(progress=False), contract=other) as r2:
        with pytest.raises(LandmarkInputMismatch, match="mediapipe468"):
            r2.run(video)
    assert InputContract.from_dict(final["input_contract"]).landmark_points == "mediapipe478"

"""Pseudo-ground truth for corpora without 3D truth (issue 33, part 5): preprocessing with ``fit.enabled`` fits the
mean face to each window's landmarks (:mod:`avface.data.fit`, the test-time fit's code) and writes the fitted
parameters beside the exact ones; ``pretrain`` with ``stages.pretrain.target=fitted`` trains on them, masking the
frames not fitted or fitted badly, and says clearly when the shards have none."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from avface.data.batch import MissingFitError, fitted_targets, samples_to_batch
from avface.data.clip import window_fit
from avface.data.config import FitConfig, PreprocessConfig
from avface.data.fit import FIT_PARAMS, LandmarkFitter, pack_fit_params
from avface.data.sample import decode_sample, encode_sample
from avface.data.shard_index import ShardIndex, data_summary, fit_statistics
from avface.face_model.lbs import batch_rodrigues
from avface.fitting.landmarks import FitParams, rig_landmarks
from avface.losses.params import parameter_loss
from avface.render.cameras import orthographic_project
from avface.utils.failures import ClipFailure

SIZE = 64  # the stored frames' side in the tests


@pytest.fixture(scope="module")
def fitter() -> LandmarkFitter:
    return LandmarkFitter(FitConfig(enabled=True))


@pytest.fixture(scope="module")
def fitted_shards(tmp_path_factory):
    """A tiny synthetic corpus (2 training speakers, 1 held out, one clip each) preprocessed with ``fit.enabled``
    (in this process: no Ray; about 20 s). Its ``landmarks`` are the corpus's exact points."""
    from avface.train.testing import make_training_shards

    return make_training_shards(tmp_path_factory.mktemp("fitted_shards"), dev_identities=2, test_identities=1,
                                clips_per_identity=1, occluded_windows=2, use_ray=False,
                                preprocess={"fit": {"enabled": True}})["shards"]


def _talking_head(t: int = 16, seed: int = 0) -> FitParams:
    """Known parameters (1, t, k): a speaker's shape, a moving mouth and a turning head, camera in NDC."""
    g = torch.Generator().manual_seed(seed)
    x = torch.linspace(0, 1, t)
    expression = (torch.randn(50, generator=g) * 0.5)[None] * torch.sin(3 * x[:, None] + torch.rand(50, generator=g))
    jaw = torch.zeros(t, 3)
    jaw[:, 0] = 0.1 + 0.06 * torch.sin(8 * x)
    pose = torch.stack([0.1 * torch.sin(3 * x), 0.3 * torch.sin(2 * x), 0.03 * x], -1)
    cam = torch.stack([6.0 + 0.2 * x, 0.01 * x, -0.01 + 0.005 * x], -1)
    shape = (torch.randn(1, 100, generator=g) * 0.7).expand(t, 100)
    return FitParams(shape[None], expression[None], jaw[None], pose[None], cam[None])


def _pixels(fitter: LandmarkFitter, p: FitParams) -> np.ndarray:
    """(T, 68, 2) pixels of the SIZE x SIZE frames of ``p``'s landmarks."""
    lmk, _ = rig_landmarks(fitter.rig, p.shape[0], p.expression[0], p.global_pose[0], p.jaw[0])
    ndc = orthographic_project(lmk, p.cam[0])[..., :2]
    return ((ndc + 1) * SIZE / 2).numpy()


# ------------------------------------------------------------------------------------------------ fast
def test_the_fitter_marks_frames_without_landmarks_and_fits_the_others(fitter):
    truth = _talking_head()
    lm = _pixels(fitter, truth)
    valid = np.ones(16, bool)
    valid[[2, 9]] = False
    lm[~valid] = 0.0
    fit = fitter(lm, valid, SIZE)
    assert fit.valid.tolist() == valid.tolist()
    assert np.isnan(fit.residual[~valid]).all()
    assert np.nanmax(fit.residual) < 0.03, fit.residual  # the 68 points reproduced (from the mean face)
    assert set(fit.params) == set(FIT_PARAMS) and all(v.shape[0] == 16 for v in fit.params.values())
    none = fitter(np.zeros((16, 68, 2), np.float32), np.zeros(16, bool), SIZE)
    assert not none.valid.any() and none.summary() == {"residual": None, "frames": 0}


def test_a_fit_with_non_finite_parameters_fails_the_clip_at_stage_fit():
    class Broken:  # a fitter whose optimisation diverged
        def __call__(self, landmarks, valid, size):
            from avface.data.fit import WindowFit

            params = {k: np.full((16, 3), np.nan, np.float32) for k in FIT_PARAMS}
            return WindowFit(params, np.ones(16, bool), np.zeros(16, np.float32))

    with pytest.raises(ClipFailure) as e:
        window_fit(np.zeros((16, 68, 2), np.float32), np.ones(16, bool), SIZE, Broken())
    assert e.value.stage == "fit"


def _sample(fit: dict | None, key: str = "train_id1_yt_00001_000000") -> dict:
    t = 16
    enc = encode_sample(key, np.zeros((t, SIZE, SIZE, 3), np.uint8), np.zeros((t, 16, 4), np.float32),
                        np.zeros((t, 68, 2), np.float32), np.ones(t, bool), {"identity": "id1"},
                        frames_format="npy", fit=fit)
    return decode_sample(enc)


def _packed(t: int = 16, residual: np.ndarray | None = None) -> dict:
    rng = np.random.default_rng(0)
    params = {"shape": rng.normal(size=(t, 100)), "expression": rng.normal(size=(t, 50)),
              "jaw": rng.normal(size=(t, 3)), "global_pose": rng.normal(size=(t, 3)),
              "cam": np.abs(rng.normal(size=(t, 3))) + 1}
    packed, layout = pack_fit_params(params)
    valid = np.ones(t, bool)
    valid[3] = False
    residual = np.linspace(0.0, 0.1, t).astype(np.float32) if residual is None else residual
    return {"params": packed, "layout": layout, "valid": valid, "residual": residual, "summary": {"frames": 15},
            "raw": params}


def test_fitted_parameters_round_trip_through_a_sample_and_never_touch_gt():
    fit = _packed()
    s = _sample({k: v for k, v in fit.items() if k != "raw"})
    assert "gt" not in s and s["meta"]["fit"] == {"frames": 15}
    for k in FIT_PARAMS:
        np.testing.assert_allclose(s["fit"][k], fit["raw"][k].astype(np.float32))
    assert s["fit_valid"].tolist() == fit["valid"].tolist()
    assert "fit" not in _sample(None)


def test_fitted_targets_mask_frames_not_fitted_or_above_the_residual_threshold():
    fit = _packed()
    s = _sample({k: v for k, v in fit.items() if k != "raw"})
    tg = fitted_targets([s, s], max_residual=0.05)
    expected = fit["valid"] & (fit["residual"] <= 0.05)
    assert tg.valid.shape == (2, 16) and tg.valid[0].tolist() == expected.tolist()
    assert torch.equal(tg.neck_pose, torch.zeros(2, 16, 3)) and tg.albedo is None and tg.lip_detail is None
    torch.testing.assert_close(tg.cam[1], torch.as_tensor(fit["raw"]["cam"], dtype=torch.float32))
    batch = samples_to_batch([s], targets="fitted", fit_max_residual=0.05)
    assert batch.targets.valid[0].tolist() == expected.tolist()
    assert samples_to_batch([s]).targets is None  # exact targets: the sample has no gt
    with pytest.raises(MissingFitError, match=r"train_id1_yt_00001_000000 .*fit_params\.npy.*fit\.enabled=true"):
        samples_to_batch([_sample(None)], targets="fitted")


def test_the_parameter_loss_ignores_masked_frames():
    pred = {"jaw": torch.zeros(1, 4, 3, requires_grad=True)}
    target = {"jaw": torch.tensor([[[1.0] * 3, [1.0] * 3, [100.0] * 3, [1.0] * 3]])}
    mask = torch.tensor([[True, True, False, True]])
    loss = parameter_loss(pred, target, {"jaw": 1.0}, mask=mask)["jaw"]
    assert loss.item() == pytest.approx(1.0)  # the masked frame's error of 100 counts for nothing
    loss.backward()
    assert pred["jaw"].grad[0, 2].abs().sum() == 0 and pred["jaw"].grad[0, 0].abs().sum() > 0


# ------------------------------------------------------------------------------------------------ with shards
def test_preprocessing_fits_pose_camera_and_expression_near_the_exact_truth(fitted_shards, fitter):
    index = ShardIndex.build(fitted_shards, ["train", "test"])
    samples = [index.read(r) for r in range(len(index))]
    clean = [s for s in samples if not s["meta"]["occluded"]]
    assert clean and all("fit" in s and "gt" in s for s in samples)  # the occluded copies carry the clean fit
    pose, scale, shift, jaw, jaw0, expr, expr0 = [], [], [], [], [], [], []
    for s in clean:
        f, g = ({k: torch.as_tensor(v) for k, v in d.items()} for d in (s["fit"], s["gt"]))
        assert s["fit_valid"].all() and np.nanmax(s["fit_residual"]) < 0.02, s["fit_residual"]
        assert s["meta"]["fit_landmark_source"] == "gt" and s["meta"]["fit"]["frames"] == 16
        pose.append((batch_rodrigues(f["global_pose"]) - batch_rodrigues(g["global_pose"])).norm(dim=(1, 2)))
        scale.append((f["cam"][:, 0] / g["cam"][:, 0] - 1).abs())
        shift.append((f["cam"][:, 1:] - g["cam"][:, 1:]).abs())
        jaw.append((f["jaw"] - g["jaw"]).abs())
        jaw0.append(g["jaw"].abs())  # the mean face's (closed jaw) error

        def mouth_and_eyes(expression, jaw_pose, shape=g["shape"]):
            """The canonical face's inner 51 landmarks (no pose) with the true shape: what expression moves."""
            zero = torch.zeros(len(jaw_pose), 3)
            return rig_landmarks(fitter.rig, shape, expression, zero, jaw_pose)[0][:, 17:]

        true = mouth_and_eyes(g["expression"], g["jaw"])
        expr.append((mouth_and_eyes(f["expression"], f["jaw"]) - true).norm(dim=-1).mean(1))
        expr0.append((mouth_and_eyes(torch.zeros_like(g["expression"]), torch.zeros_like(g["jaw"])) - true)
                     .norm(dim=-1).mean(1))
    assert torch.cat(pose).mean() < 0.08  # about 3 degrees
    assert torch.cat(scale).mean() < 0.05 and torch.cat(shift).mean() < 0.004
    assert torch.cat(jaw).mean() < 0.6 * torch.cat(jaw0).mean()
    assert torch.cat(expr).mean() < 0.6 * torch.cat(expr0).mean(), (torch.cat(expr).mean(), torch.cat(expr0).mean())


def test_shards_carry_fitted_keys_only_when_enabled(fitted_shards, train_shards):
    without = ShardIndex.build(train_shards, ["train"])
    summary = data_summary(without, probe=4)
    assert not summary["has_fit"] and ".tar: sample " in summary["without_fit"]
    assert not any(k.startswith("fit") for k in without.read(0)) and "fit" not in without.read(0)["meta"]
    with_fit = ShardIndex.build(fitted_shards, ["train"])
    assert data_summary(with_fit)["has_fit"]
    stats = fit_statistics(with_fit)
    assert set(stats) == set(FIT_PARAMS) and len(stats["expression"]["std"]) == 50


def _pretrain_config(shards, out, target: str) -> dict:
    return {"data": {"shards": str(shards), "batch_windows": 2, "windows_per_speaker": 2, "loader_workers": 0,
                     "val_windows": 2, "val_occluded_windows": 0},
            "out": str(out), "stage": "pretrain", "use_ray": False, "progress": False,
            "tracking": {"registered_model": ""},
            "stages": {"pretrain": {"steps": 2, "val_every": 0, "report_every": 1, "checkpoint_every": 0,
                                    "target": target}}}


@pytest.mark.slow
def test_pretraining_on_fitted_targets_runs_two_steps_labelled_and_logged(fitted_shards, tmp_path):
    from mlflow.tracking import MlflowClient

    from avface.train.trainer import run_training

    res = run_training(_pretrain_config(fitted_shards, tmp_path, "fitted"))
    stage = res["stages"]["pretrain"]
    assert stage["steps"] == 2 and stage["label"] == "pretrain (fitted pseudo-ground truth)"
    assert np.isfinite(stage["metrics"]["val/v3d_mm"])  # validated against the held-out exact truth
    client = MlflowClient(res["tracking_uri"])
    runs = client.search_runs(client.get_experiment_by_name("avface-train").experiment_id)
    child = next(r for r in runs if r.data.tags.get("stage_label"))
    assert child.data.tags["stage_label"] == "pretrain (fitted pseudo-ground truth)"
    assert child.data.params["target"] == "fitted"
    losses = [k for k in child.data.metrics if k.startswith("train/param_")]
    assert losses and all(np.isfinite(child.data.metrics[k]) for k in losses)
    final = json.loads((tmp_path / "avface" / "pretrain" / "final.json").read_text())
    assert final["steps"] == 2


def test_fitted_targets_on_shards_without_them_fail_naming_the_shard_and_the_option(train_shards, tmp_path):
    from avface.train.trainer import prepare_training

    with pytest.raises(ValueError, match=r"pretrain \(fitted pseudo-ground truth\).*fit_params\.npy.*\.tar: sample "
                                         r"\S+ has none.*fit\.enabled=true"):
        prepare_training(_pretrain_config(train_shards, tmp_path, "fitted"))


def test_fitted_pretraining_batches_and_scales_come_from_the_fit(fitted_shards, tmp_path):
    from avface.train.data import BatchStream
    from avface.train.trainer import prepare_training, stage_payload

    prepared = prepare_training(_pretrain_config(fitted_shards, tmp_path, "fitted"))
    scales, baselines = prepared.stage_statistics("pretrain")
    assert scales is prepared.fit_stats and baselines is prepared.stats  # baselines: the held-out evaluation's
    payload = stage_payload(prepared.cfg, "pretrain", None, tmp_path / "final.pt", "coarse", baselines, "mel", None,
                            input_contract=prepared.input_contract, scale_stats=scales)
    assert payload["scales"]["cam"] == prepared.fit_stats["cam"]["std"]
    index = ShardIndex.build(fitted_shards, ["train"])
    stream = BatchStream(index, 0, 1, 2, 2, 64, 0, epochs=1, targets="fitted", fit_max_residual=0.05)
    _, _, batch = next(iter(stream))
    assert batch.targets.valid is not None and batch.targets.valid.any()
    key = batch.keys[0]
    row = int(np.flatnonzero(index.table["key"].to_numpy() == key)[0])
    s = index.read(row)
    torch.testing.assert_close(batch.targets.expression[0], torch.as_tensor(s["fit"]["expression"]))
    assert not torch.allclose(batch.targets.expression[0], torch.as_tensor(s["gt"]["expression"]))


def test_fit_settings_change_the_shards_fingerprint_only_when_the_fit_is_on():
    """Shards made before the fit existed (or with it off) are still the same config: a re-run resumes them."""
    base = PreprocessConfig.from_dict({"out": "x"})
    off_other = PreprocessConfig.from_dict({"out": "x", "fit": {"enabled": False, "iterations": 7}})
    on = PreprocessConfig.from_dict({"out": "x", "fit": {"enabled": True}})
    on_other = PreprocessConfig.from_dict({"out": "x", "fit": {"enabled": True, "iterations": 7}})
    assert base.fingerprint() == off_other.fingerprint()
    assert len({base.fingerprint(), on.fingerprint(), on_other.fingerprint()}) == 3

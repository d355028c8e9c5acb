"""Training: ground truth in the shards, the exactly-once speaker-grouped loader (also under 2 Ray Train
workers), checkpoints and their checks, the stage requirements."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from avface.data.batch import samples_to_batch
from avface.data.shard_index import ShardIndex, audio_statistics, data_summary, target_statistics
from avface.face_model import FaceModel, load_face_model
from avface.face_model.starter import build_starter_model
from avface.metrics import flat_frames
from avface.models import AVFaceConfig
from avface.models.avface import AVFace
from avface.render.cameras import orthographic_project
from avface.train.config import TrainConfig
from avface.train.data import BatchStream, plan_epoch
from avface.train.selection import Selection, kept_best_state
from avface.train.trainer import plan_stages
from avface.trained.checkpoints import (
    CheckpointError,
    check_compatible,
    find_latest_checkpoint,
    load_trained,
    read_checkpoint,
    save_checkpoint,
)


@pytest.fixture
def shards(train_shards) -> Path:
    return train_shards


def _reprojection_error_px(index: ShardIndex, n: int = 6) -> float:
    """Pixel distance between the shards' ground-truth landmarks and the projection of the shards' ground-truth
    parameters (face model landmarks, carried camera)."""
    return _batch_reprojection_error_px(samples_to_batch([index.read(i) for i in range(min(n, len(index)))]))


def _batch_reprojection_error_px(batch) -> float:
    tg = batch.targets
    fm = FaceModel(load_face_model(None))
    out = fm(shape=flat_frames(tg.shape), expression=flat_frames(tg.expression),
             global_pose=flat_frames(tg.global_pose), neck_pose=flat_frames(tg.neck_pose), jaw_pose=flat_frames(tg.jaw),
             eye_pose=flat_frames(tg.eye_pose), lip_detail=flat_frames(tg.lip_detail))
    px = (orthographic_project(out.landmarks68_dynamic, flat_frames(tg.cam))[..., :2] + 1) * batch.image_size / 2
    valid = flat_frames(batch.landmarks_valid)
    return float((px - flat_frames(batch.landmarks)).norm(dim=-1)[valid].max())


@pytest.mark.ray
def test_shards_carry_exact_ground_truth_parameters(shards):
    index = ShardIndex.build(shards, ["train", "test"])
    summary = data_summary(index)
    assert summary["has_targets"] and summary["has_normals"] and summary["audio_kind"] == "mel"
    assert summary["gt_face_model"] == [FaceModel(load_face_model(None)).name]
    # how the windows were made (the trained model's input contract): whole 64 px frames, 16 at 25 fps
    assert (summary["fps"], summary["window"], summary["audio_window"], summary["image_sizes"]) == (25.0, 16, 16, [64])
    assert summary["crop"] == "none" and summary["crop_scale"] is None
    assert _reprojection_error_px(index) < 1e-3  # the parameters are the ones that made the landmarks


@pytest.mark.ray
def test_landmark_crop_keeps_the_ground_truth_camera_exact(shards, tmp_path):
    """With video.crop=landmarks the stored frames are crops: the carried camera is re-expressed for them."""
    from avface.data.config import PreprocessConfig
    from avface.data.preprocess import run_preprocess

    out = tmp_path / "cropped"
    run_preprocess(PreprocessConfig.from_dict({
        "data": {"root": str(shards.parent / "corpus" / "voxceleb2")}, "out": str(out),
        "video": {"image_size": 64, "crop": "landmarks"}, "progress": False, "occlusion": {"windows": {}},
        "ray": {"num_cpus": 2, "task_memory_mb": 400}}))
    index = ShardIndex.build(out, ["train"])
    assert index.read(0)["meta"]["crop_boxes"] is not None
    assert _reprojection_error_px(index) < 0.05  # float32 crop arithmetic
    # The renderer's normals and the sidecar's occlusion masks are cropped with the frames: the centroid of each
    # map, mapped through the stored crop box (p_out = (p_in - box_xy) * S / side), is the centroid of the uncropped
    # shard's map (the fixture: 64 px frames stored as they are). Resized from the whole frame instead (the old
    # code), they were off by the box offset (several pixels).
    plain = ShardIndex.build(shards, ["train"])
    plain_rows = {k: i for i, k in enumerate(plain.table["key"])}
    checked = {"normals": 0, "occlusion_mask": 0}
    for i in range(len(index)):
        cropped, ref = index.read(i), plain.read(plain_rows[index.table["key"].iat[i]])
        boxes = np.asarray(cropped["meta"]["crop_boxes"], np.float64)
        size = cropped["frames"].shape[1]
        for name, weight in (("normals", lambda m: (np.linalg.norm(m, axis=-1) > 0.5).astype(np.float64)),
                             ("occlusion_mask", lambda m: m.astype(np.float64))):
            if cropped.get(name) is None or weight(ref[name]).sum() == 0:
                continue
            for t in range(len(boxes)):
                # Only what lies inside the crop box, 1 source px from its edges, is compared (a hand reaches out
                # of the face crop): source pixel centres there, and the stored pixels whose centres map there.
                x0, y0, x1, y1 = boxes[t]
                k = size / (x1 - x0)
                w0 = weight(ref[name][t]) * _inside(ref[name].shape[1], ref[name].shape[2], x0 + 1, y0 + 1, x1 - 1,
                                                    y1 - 1)
                w1 = weight(cropped[name][t]) * _inside(size, size, k, k, size - k, size - k)
                if w0.sum() < 20:  # a sliver: no stable centroid
                    continue
                expected = (_centroid_px(w0) - boxes[t, :2]) * k
                assert np.linalg.norm(_centroid_px(w1) - expected) < 0.75, (name, cropped["key"], t)
                checked[name] += 1
    assert checked["normals"] > 100 and checked["occlusion_mask"] > 0, checked


def _inside(h: int, w: int, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """(h, w) 1 where the pixel centre lies in [x0, x1] x [y0, y1] (continuous pixel coordinates), else 0."""
    ys, xs = np.mgrid[:h, :w] + 0.5
    return ((xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)).astype(np.float64)


def _centroid_px(weights: np.ndarray) -> np.ndarray:
    """(x, y) weighted centroid of an (H, W) map, continuous pixel coordinates (pixel centres at i + 0.5)."""
    ys, xs = np.mgrid[: weights.shape[0], : weights.shape[1]] + 0.5
    return np.array([(xs * weights).sum(), (ys * weights).sum()]) / weights.sum()


@pytest.mark.ray
def test_zoom_shift_augmentation_keeps_every_target_exact(shards):
    """The augmentation moves images, normals, occlusion masks, landmarks and the ground-truth camera together."""
    from avface.train.augment import random_zoom_shift, zoom_shift

    batch = samples_to_batch([ShardIndex.build(shards, ["train"]).read(i) for i in range(4)])
    before = batch.images.clone()
    size = batch.image_size
    aug = zoom_shift(batch, torch.tensor([1.15, 0.85, 1.0, 1.0]), torch.tensor([[0.1, -0.05], [-0.1, 0.08],
                                                                                 [4 / size, 0.0], [0.0, -6 / size]]))
    assert torch.equal(batch.images, before)  # the input batch is untouched
    assert _batch_reprojection_error_px(batch) < 1e-3
    assert _batch_reprojection_error_px(aug) < 1e-2  # the new camera projects onto the new landmarks
    # a whole-pixel shift moves every map by exactly those pixels (window 2: 2 px right, window 3: 3 px up)
    assert torch.allclose(aug.images[2, ..., 2:], batch.images[2, ..., :-2], atol=1e-5)
    assert torch.allclose(aug.normals[2, ..., 2:], batch.normals[2, ..., :-2], atol=1e-5)
    assert torch.allclose(aug.images[3, ..., :-3, :], batch.images[3, ..., 3:, :], atol=1e-5)
    assert torch.allclose(aug.occlusion_mask[3, :, :-3, :], batch.occlusion_mask[3, :, 3:, :], atol=1e-5)
    assert not torch.allclose(aug.images[0], batch.images[0])
    # every window of a random draw stays exact too, and no augmentation returns the batch itself
    g = torch.Generator().manual_seed(0)
    assert _batch_reprojection_error_px(random_zoom_shift(batch, 0.15, 0.1, g)) < 1e-2
    assert random_zoom_shift(batch, 0.0, 0.0) is batch


@pytest.mark.ray
def test_epoch_plan_is_exactly_once_speaker_grouped_and_equal_per_rank(shards):
    index = ShardIndex.build(shards, ["train"])
    for world in (1, 2, 3):
        plans = [plan_epoch(index, 5, r, world, batch_windows=4, windows_per_speaker=2, seed=1) for r in range(world)]
        rows = np.concatenate([b for p in plans for b in p.batches])
        assert sorted(rows.tolist()) == list(range(len(index)))  # every window once, none twice
        assert len({p.steps for p in plans}) == 1  # the report barrier: same number of steps on every rank
        assert all(len(b) > 0 for p in plans for b in p.batches)
    # windows of one speaker travel together: most batches hold >= 2 windows of some speaker
    ids = index.table["identity"].to_numpy()
    plan = plan_epoch(index, 0, 0, 1, batch_windows=4, windows_per_speaker=2, seed=0)
    paired = [np.unique(ids[b], return_counts=True)[1].max() >= 2 for b in plan.batches if len(b) >= 2]
    assert np.mean(paired) > 0.7
    # a new epoch is a new order; the same epoch the same one
    again = plan_epoch(index, 0, 0, 1, batch_windows=4, windows_per_speaker=2, seed=0)
    other = plan_epoch(index, 1, 0, 1, batch_windows=4, windows_per_speaker=2, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(plan.batches, again.batches, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(plan.batches, other.batches, strict=False))


@pytest.mark.ray
def test_occlusion_stage_mixes_occluded_windows_at_the_ratio(shards):
    index = ShardIndex.build(shards, ["train", "train_occ"])
    plan = plan_epoch(index, 0, 0, 1, batch_windows=4, windows_per_speaker=2, seed=0, occluded_ratio=0.5)
    rows = np.concatenate(plan.batches)
    occ = index.table["occluded"].to_numpy()[rows]
    n_clean = int((~index.table["occluded"]).sum())
    assert len(rows) == n_clean and abs(occ.mean() - 0.5) < 0.5 / n_clean + 1e-9
    clean_only = np.concatenate(plan_epoch(index, 0, 0, 1, 4, 2, 0).batches)
    assert not index.table["occluded"].to_numpy()[clean_only].any()


@pytest.mark.ray
def test_index_batches_keep_the_rows_in_order(shards):
    """ShardIndex.batches: the windows of the given rows, in their order, 8 per batch (the last one smaller)."""
    index = ShardIndex.build(shards, ["train"])
    rows = np.arange(len(index))[::-1][:11]
    batches = index.batches(rows, 32)
    assert [len(b.keys) for b in batches] == [8, 3]
    assert [k for b in batches for k in b.keys] == [index.table["key"].iat[r] for r in rows]
    assert batches[0].images.shape[-2:] == (32, 32)


@pytest.mark.ray
def test_occluded_windows_come_with_their_clean_twins(shards):
    """Each occluded copy's clean twin (same clip and start) rides along as Batch.clean_images; a clean window is
    its own twin; the augmentation frames both alike; a copy whose twin is not indexed is an error."""
    from avface.train.augment import zoom_shift

    index = ShardIndex.build(shards, ["train", "train_occ"])
    t = index.table
    twins = index.clean_twins()
    occ = np.flatnonzero(t["occluded"].to_numpy())
    assert occ.size > 0 and not t["occluded"].to_numpy()[twins].any()
    assert np.array_equal(twins[~t["occluded"].to_numpy()], np.flatnonzero(~t["occluded"].to_numpy()))
    for r in occ:
        assert (t["clip_id"].iat[twins[r]], t["start"].iat[twins[r]]) == (t["clip_id"].iat[r], t["start"].iat[r])
    stream = BatchStream(index, 0, 1, 4, 2, 32, seed=0, occluded_ratio=0.5, epochs=1, clean_twins=True)
    seen_occ = 0
    for _, _, batch in stream:
        for i, key in enumerate(batch.keys):
            row = int(np.flatnonzero(t["key"].to_numpy() == key)[0])
            twin = samples_to_batch([index.read(int(twins[row]))], 32)
            assert torch.equal(batch.clean_images[i], twin.images[0])
            if batch.occluded[i]:
                seen_occ += 1
                assert not torch.equal(batch.clean_images[i], batch.images[i])  # the hand is in one only
            else:
                assert torch.equal(batch.clean_images[i], batch.images[i])
    assert seen_occ > 0
    assert all(b.clean_images is None for _, _, b in BatchStream(index, 0, 1, 4, 2, 32, seed=0, epochs=1))
    # the augmentation moves the clean twin with the window: a whole-pixel shift moves both by those pixels
    b = samples_to_batch([index.read(int(r)) for r in occ[:2]], 32, [index.read(int(twins[r])) for r in occ[:2]])
    aug = zoom_shift(b, torch.ones(2), torch.tensor([[4 / 32, 0.0], [0.0, 0.0]]))
    assert torch.allclose(aug.clean_images[0, ..., 2:], b.clean_images[0, ..., :-2], atol=1e-5)
    where = [(t["clip_id"].iat[r], t["start"].iat[r]) for r in occ]
    other = next(r for r, w in zip(occ, where, strict=True) if w != where[0])
    with pytest.raises(ValueError, match="not its twin"):
        samples_to_batch([index.read(int(occ[0]))], 32, [index.read(int(twins[other]))])
    only_occ = index.select(t["occluded"].to_numpy())
    with pytest.raises(ValueError, match="has no clean twin"):
        only_occ.clean_twins()


@pytest.mark.ray
def test_stream_resumes_mid_epoch_without_reading_earlier_batches(shards):
    index = ShardIndex.build(shards, ["train"])
    full = [(e, s, tuple(b.keys)) for e, s, b in BatchStream(index, 0, 1, 4, 2, 32, seed=3, epochs=2)]
    resumed = [(e, s, tuple(b.keys)) for e, s, b in BatchStream(index, 0, 1, 4, 2, 32, seed=3, start_epoch=0,
                                                                 start_step=2, epochs=2)]
    assert resumed == full[2:]


@pytest.mark.ray
@pytest.mark.slow
def test_two_ray_train_workers_with_loader_workers_see_every_window_exactly_once(shards, tmp_path):
    """Real Ray Train (2 workers at 0.5 CPU), each with 2 DataLoader worker processes: one epoch covers the
    shard index exactly once."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from avface.train.data import make_loader
    from avface.utils.ray_utils import init_ray

    def loop(cfg):
        ctx = ray.train.get_context()
        rank, world = ctx.get_world_rank(), ctx.get_world_size()
        idx = ShardIndex.build(cfg["shards"], ["train"])
        keys = []
        for _, _, batch in make_loader(BatchStream(idx, rank, world, 3, 2, 32, seed=0, epochs=1), 2):
            keys.extend(batch.keys)
        Path(cfg["out"], f"rank{rank}.json").write_text(json.dumps(keys))
        ray.train.report({"n": len(keys)})

    init_ray(num_cpus=2)
    TorchTrainer(loop, train_loop_config={"shards": str(shards), "out": str(tmp_path)},
                 scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
                 run_config=RunConfig(name="once", storage_path=str(tmp_path / "ray"))).fit()
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    everything = seen[0] + seen[1]
    index = ShardIndex.build(shards, ["train"])
    assert len(everything) == len(set(everything))
    assert sorted(everything) == sorted(index.table["key"])
    assert seen[0] and seen[1]


def _tiny_model(audio_dim: int = 80, face_model: FaceModel | None = None) -> AVFace:
    cfg = AVFaceConfig.tiny()
    cfg.audio_dim = audio_dim
    return AVFace(cfg, face_model or FaceModel(load_face_model(None)))


def test_checkpoint_round_trip_and_every_refusal(tmp_path):
    torch.manual_seed(0)
    model = _tiny_model()
    opt = torch.optim.Adam(model.trainable_parameters(), lr=1e-4)
    path = save_checkpoint(tmp_path / "a" / "final.pt", model=model, stage="lip", step=7, epoch=1,
                           audio_kind="mel", face_model_source=None, optimizer=opt,
                           extras={"best": np.float32(2.5), "scales": np.ones(3)})
    trained = load_trained(path)
    assert trained.audio_kind == "mel" and trained.audio_dim == 80 and trained.meta["step"] == 7
    assert trained.model.stage == "lip" and not trained.model.training
    for k, v in model.trainable_state_dict().items():
        assert torch.equal(v, trained.model.trainable_state_dict()[k]), k
    assert find_latest_checkpoint(tmp_path) == path and find_latest_checkpoint(tmp_path / "none") is None

    ckpt = read_checkpoint(path)
    other = FaceModel(build_starter_model(seed=1))
    with pytest.raises(CheckpointError, match="face model.*fingerprint"):
        check_compatible(ckpt, face_model=other)
    with pytest.raises(CheckpointError, match="'mel'.*'deepspeech'"):
        check_compatible(ckpt, audio_kind="deepspeech")
    with pytest.raises(CheckpointError, match="size 80.*size 29"):
        check_compatible(ckpt, audio_dim=29)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:4000])
    with pytest.raises(CheckpointError, match="truncated.pt.*truncated or corrupt"):
        read_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not an avface checkpoint"):
        read_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "missing.pt")


def _val(v3d: float, lip: float, expression: float) -> dict[str, float]:
    return {"val/v3d_mm": v3d, "val/lip_mm": lip, "val/expression_mm": expression,
            "val/score_mm": (v3d + lip + expression) / 3, "val/nme": 0.1}


def test_guarded_selection_trades_no_held_out_error_for_another():
    start, trade, better = _val(2.66, 2.53, 0.67), _val(2.65, 2.58, 0.59), _val(2.65, 2.52, 0.66)
    assert trade["val/score_mm"] < start["val/score_mm"]  # the mean alone would take the trade
    free = Selection("val/score_mm")
    assert free.offer(start, start=True) and free.offer(trade)
    guarded = Selection("val/score_mm", guarded=True)
    assert guarded.offer(start, start=True) and guarded.guard_start == {"v3d_mm": 2.66, "lip_mm": 2.53,
                                                                        "expression_mm": 0.67}
    assert guarded.regressed(trade) == ["lip_mm"] and not guarded.offer(trade) and guarded.stale == 1
    assert guarded.offer(better) and guarded.best == better["val/score_mm"] and guarded.stale == 0
    # carried through a checkpoint's extras (JSON-like), as a resumed stage reads it
    again = Selection.from_state("val/score_mm", True, json.loads(json.dumps(guarded.state())))
    assert again == guarded and not again.offer(trade)
    # without ground truth (real data) the monitor falls back to the NME and nothing is guarded
    real = Selection("val/score_mm", guarded=True)
    assert real.offer({"val/nme": 0.12}, start=True) and real.guard_start is None and real.offer({"val/nme": 0.11})


def test_a_resumed_stage_exports_its_kept_best_weights_only_when_they_are_its_best(tmp_path):
    torch.manual_seed(0)
    model = _tiny_model()
    path = save_checkpoint(tmp_path / "best.pt", model=model, stage="coarse", step=8, epoch=0, audio_kind="mel",
                           face_model_source=None, extras=Selection("val/score_mm", best=1.25).state())
    kept = kept_best_state(path, step=8, best=1.25)
    assert kept is not None and all(torch.equal(v, kept[k]) for k, v in model.trainable_state_dict().items())
    assert kept_best_state(path, step=12, best=1.25) is not None  # resumed later than the best: still it
    assert kept_best_state(path, step=4, best=1.25) is None  # written after the resumed checkpoint
    assert kept_best_state(path, step=8, best=1.5) is None  # another best
    assert kept_best_state(tmp_path / "none.pt", step=8, best=1.25) is None


def test_stage_requirements_stop_before_training_naming_the_preprocessing_option():
    cfg = TrainConfig.from_dict({"data": {"shards": "x"}})
    full = {"has_targets": True, "has_normals": True, "occluded_windows": 4}
    assert plan_stages(cfg, full, Path("x")) == ["pretrain", "coarse", "lip", "detail", "occlusion"]
    real = {**full, "has_targets": False}
    assert plan_stages(cfg, real, Path("x"))[0] == "coarse"  # stage=all skips pretrain without ground truth
    with pytest.raises(ValueError, match=r"normals\.source=auto"):
        plan_stages(cfg, {**full, "has_normals": False}, Path("x"))
    with pytest.raises(ValueError, match="carry_ground_truth"):
        plan_stages(TrainConfig.from_dict({"data": {"shards": "x"}, "stage": "pretrain"}), real, Path("x"))
    with pytest.raises(ValueError, match=r"occlusion\.windows"):
        plan_stages(TrainConfig.from_dict({"data": {"shards": "x"}, "stage": "occlusion"}),
                    {**full, "occluded_windows": 0}, Path("x"))
    with pytest.raises(ValueError, match="allowed"):
        TrainConfig.from_dict({"data": {"shards": "x"}, "stage": "lips"})
    with pytest.raises(ValueError, match="unknown stage"):
        TrainConfig.from_dict({"data": {"shards": "x"}, "stages": {"lips": {"steps": 1}}})
    with pytest.raises(ValueError, match="only the occlusion stage"):  # a term no other objective has
        TrainConfig.from_dict({"data": {"shards": "x"}, "stages": {"coarse": {"clean_consistency": 1.0}}})
    # a partial stages mapping overrides that stage's own defaults (pretrain keeps its learning rate)
    partial = TrainConfig.from_dict({"data": {"shards": "x"}, "stages": {"pretrain": {"steps": 5}}})
    assert partial.stages["pretrain"].steps == 5 and partial.stages["pretrain"].lr == 1e-3
    assert partial.stages["lip"].lr == 1e-4 and partial.stages["occlusion"].occluded_ratio == 0.5


@pytest.mark.ray
def test_target_statistics_are_the_corpus_spread(shards):
    index = ShardIndex.build(shards, ["train"])
    stats = target_statistics(index)
    assert len(stats["shape"]["std"]) == 100 and len(stats["light"]["mean"]) == 27
    assert 3.0 < stats["cam"]["mean"][0] < 10.0  # the synthetic corpus's orthographic scale
    assert max(stats["expression"]["std"]) > 0.05


@pytest.mark.ray
def test_audio_statistics_are_the_feature_rows_mean_and_spread(shards):
    """Per channel over every non-padding row of the sampled windows (the zero rows at a clip's ends left out)."""
    index = ShardIndex.build(shards, ["train"])
    mean, std = audio_statistics(index, max_samples=10_000)
    rows = np.concatenate([index.read(r)["audio_features"].reshape(-1, 80) for r in range(len(index))])
    rows = rows[np.abs(rows).sum(1) > 0].astype(np.float64)
    assert len(mean) == len(std) == 80
    np.testing.assert_allclose(mean, rows.mean(0), atol=2e-5)
    np.testing.assert_allclose(std, rows.std(0), rtol=1e-4, atol=2e-5)
    assert min(std) > 0


def test_pretrained_files_named_in_the_config_are_loaded_and_reported(tmp_path):
    """model.coarse.deca_checkpoint / model.detail.normals_checkpoint are read when a stage starts from scratch."""
    import dataclasses

    from test_models import _deca_style_checkpoint

    from avface.models import DetailUNet
    from avface.train.loop import load_pretrained

    cfg = AVFaceConfig.tiny()
    deca, e_flame = _deca_style_checkpoint(cfg, tmp_path)
    normals = tmp_path / "normals.pth"
    donor = DetailUNet(dataclasses.replace(cfg.detail, use_audio=False), 80)
    torch.save({("base_model." + k[8:] if k.startswith("encoder.") else k): v + 0.25
                for k, v in donor.state_dict().items()}, normals)
    cfg.audio_dim = 80
    cfg.coarse.deca_checkpoint, cfg.detail.normals_checkpoint = str(deca), str(normals)
    model = AVFace(cfg, FaceModel(load_face_model(None)))
    loaded = load_pretrained(model)
    assert set(loaded) == {"deca_checkpoint", "deca_checkpoint.expression", "normals_checkpoint"}
    assert all("loaded" in v for v in loaded.values())
    assert torch.equal(model.coarse.backbone.conv1.weight, e_flame["encoder.conv1.weight"])
    assert torch.equal(model.expression.video_backbone.conv1.weight, e_flame["encoder.conv1.weight"])
    assert torch.equal(model.detail.encoder.conv1.weight, donor.encoder.conv1.weight + 0.25)


def test_cosine_schedule_decays_to_its_floor_and_resumes_in_place():
    from avface.train.config import StageConfig
    from avface.train.loop import _lr_schedule

    scfg = StageConfig(steps=10, lr=1e-3, lr_schedule="cosine", lr_min_ratio=0.1)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=scfg.lr)
    sched = _lr_schedule(opt, scfg, 0)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(10):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-4) and lrs[5] == pytest.approx(5.5e-4)
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    # resumed at step 5 from the saved optimiser state: the same learning rate as the uninterrupted run
    opt2 = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=scfg.lr)
    opt2.load_state_dict({**opt.state_dict(), "param_groups": [{**opt.state_dict()["param_groups"][0],
                                                                 "lr": lrs[5]}]})
    _lr_schedule(opt2, scfg, 5)
    assert opt2.param_groups[0]["lr"] == pytest.approx(lrs[5])
    assert _lr_schedule(opt, StageConfig(), 0) is None


@pytest.mark.ray
def test_clean_twin_consistency_pulls_the_occluded_face_to_the_teachers_clean_one(shards, tiny_checkpoint):
    """The occlusion fine-tune's consistency: zero for the teacher's own weights on a clean window, positive on an
    occluded copy, gradients to the coarse networks only through the student; train_step adds it to the total."""
    from avface.train.loop import StepContext, _teacher, train_step
    from avface.train.objectives import clean_consistency_loss

    index = ShardIndex.build(shards, ["train", "train_occ"])
    twins = index.clean_twins()
    occ = np.flatnonzero(index.table["occluded"].to_numpy())[:2]
    clean = np.flatnonzero(~index.table["occluded"].to_numpy())[:2]
    model = load_trained(tiny_checkpoint, stage="coarse").model  # trained: it reacts to the occluder
    model.expression.cfg.modality_dropout = False
    teacher = _teacher(model, model.trainable_state_dict())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    model.eval()
    read = index.read
    b_clean = samples_to_batch([read(int(r)) for r in clean], 64, [read(int(r)) for r in clean])
    b_occ = samples_to_batch([read(int(r)) for r in occ], 64, [read(int(twins[r])) for r in occ])
    with torch.no_grad():
        assert float(clean_consistency_loss(model, model(b_clean, render=False), teacher, b_clean)) < 1e-5
    out = model(b_occ, render=False)
    loss = clean_consistency_loss(model, out, teacher, b_occ)
    assert float(loss.detach()) > 1e-2
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.coarse.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    with pytest.raises(ValueError, match="clean_images"):
        clean_consistency_loss(model, out, teacher, samples_to_batch([read(int(r)) for r in occ], 64))
    # in the loop's step, weighted and in the total
    model.train()
    fm = model.face_model
    params = model.trainable_parameters()
    ctx = StepContext("occlusion", 0.0, 0.0, 0.0, {}, fm, torch.as_tensor(fm.region("lips")).long(),
                      teacher=teacher, clean_consistency=10.0)
    terms, windows = train_step(model, torch.optim.Adam(params, lr=1e-4), params, b_occ, ctx, torch.Generator())
    assert windows == 2 and float(terms["clean_consistency"]) > 1e-1
    rest = sum(float(v) for k, v in terms.items() if k not in ("total", "clean_consistency"))
    assert float(terms["total"]) == pytest.approx(rest + float(terms["clean_consistency"]), rel=1e-5)


def _pretraining_inputs(shards):
    """Two training windows of ``shards`` and what ``pretrain_losses`` needs beside a prediction: (batch, a function
    expression (B,T,NE) -> a prediction holding the true parameters with that expression, the starter face model,
    its lip vertex ids, unit spreads per parameter group)."""
    from types import SimpleNamespace

    index = ShardIndex.build(shards, ["train"])
    batch = samples_to_batch([index.read(i) for i in range(2)], 64)
    tg = batch.targets
    t = batch.window

    def prediction(expression):
        return SimpleNamespace(shape=tg.shape, expression=expression, jaw=tg.jaw, global_pose=tg.global_pose,
                               cam=tg.cam, albedo=tg.albedo[:, None].expand(-1, t, -1),
                               light=tg.light[:, None].expand(-1, t, -1, -1), landmarks2d=None)

    fm = FaceModel(load_face_model(None))
    lips = torch.as_tensor(fm.region("lips")).long()
    scales = {k: torch.ones(v.shape[-1]) for k, v in (("shape", tg.shape), ("expression", tg.expression),
                                                      ("jaw", tg.jaw), ("global_pose", tg.global_pose),
                                                      ("cam", tg.cam), ("albedo", tg.albedo))}
    scales["light"] = torch.ones(tg.light[0].numel())
    return batch, prediction, fm, lips, scales


@pytest.mark.ray
def test_pretraining_vertex_target_has_the_lip_detail_only_when_asked(shards):
    """``StageConfig.fit_lip_detail``: the exact parameters score zero vertex error against the parameters' own mesh,
    and the lips' detail (which no parameter holds) against the exact mesh; nothing else changes."""
    from avface.train.objectives import pretrain_losses

    batch, prediction, fm, lips, scales = _pretraining_inputs(shards)
    tg = batch.targets
    assert tg.lip_detail is not None and float(tg.lip_detail.abs().max()) > 0  # the corpus's lips have detail
    expression = tg.expression.clone().requires_grad_(True)
    exact = prediction(expression)
    own = pretrain_losses(exact, batch, scales, fm, lips)
    fitted = pretrain_losses(exact, batch, scales, fm, lips, fit_lip_detail=True)
    assert own["lip_vertices_mm"].item() < 1e-3 and own["vertices_mm"].item() < 1e-3
    assert fitted["lip_vertices_mm"].item() > 0.3  # the detail: 2 mm RMS fields x the rig's curves
    assert fitted["vertices_mm"].item() < fitted["lip_vertices_mm"].item()  # only the lips move
    for k in ("param_shape", "param_expression", "param_jaw"):
        assert fitted[k].item() == pytest.approx(own[k].item(), abs=1e-9)
    fitted["lip_vertices_mm"].backward()
    assert float(expression.grad.abs().sum()) > 0  # the expression space reaches part of the detail


@pytest.mark.ray
def test_pretraining_scores_free_expression_coefficients_by_the_surface_only(shards):
    """``StageConfig.named_expression_only``: the parameter term gets no gradient to the free expression
    coefficients (the vertex terms still do); ``lip_vertex_weight`` scales the lip term and nothing else."""
    from avface.train.objectives import pretrain_losses

    batch, prediction, fm, lips, scales = _pretraining_inputs(shards)
    tg = batch.targets
    n_named = fm.n_semantic_expression
    assert 0 < n_named < tg.expression.shape[-1]
    off = tg.expression + 0.5  # every coefficient wrong
    grads = {}
    for n in (None, n_named):
        e = off.clone().requires_grad_(True)
        terms = pretrain_losses(prediction(e), batch, scales, fm, lips, n_param_expression=n)
        terms["param_expression"].backward()
        grads[n] = e.grad.clone()
    assert float(grads[None][..., n_named:].abs().sum()) > 0
    assert float(grads[n_named][..., n_named:].abs().sum()) == 0  # free coefficients: not by their parameters
    assert float(grads[n_named][..., :n_named].abs().sum()) > 0
    e = off.clone().requires_grad_(True)
    terms = pretrain_losses(prediction(e), batch, scales, fm, lips, n_param_expression=n_named)
    (terms["vertices_mm"] + terms["lip_vertices_mm"]).backward()
    assert float(e.grad[..., n_named:].abs().sum()) > 0  # ... but by the surface they make
    plain = pretrain_losses(prediction(off), batch, scales, fm, lips)
    heavy = pretrain_losses(prediction(off), batch, scales, fm, lips, lip_vertex_weight=4.0)
    assert float(heavy["lip_vertices_mm"]) == pytest.approx(4.0 * float(plain["lip_vertices_mm"]), rel=1e-6)
    for k in plain:
        if k not in ("lip_vertices_mm", "total"):
            assert float(heavy[k]) == pytest.approx(float(plain[k]), rel=1e-6)

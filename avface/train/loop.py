"""The per-worker training loop of one stage (run by Ray Train's ``TorchTrainer`` on every worker).

Numbered steps, as in Ray's training examples:

1. context: rank, world size, device, seeds;
2. model: face model + AVFace, initial weights (resume checkpoint > previous stage > pretrained files), stage;
3. optimiser: Adam over exactly the stage's trainable parameters (paper 3.5: lr 1e-4, weight decay 5e-4);
4. data: this rank's speaker-grouped, exactly-once batches from the resume point (avface.train.data);
5. loop: :func:`train_step` (augment, forward, the stage's losses, backward, gradients averaged over ranks, step;
   the occlusion fine-tune adds :func:`clean_consistency_loss` against a frozen teacher);
6. validation on held-out speakers (rank 0), early stopping decided by rank 0 and broadcast;
7. checkpoint + report: ``ray.train.report`` on every rank at the same steps (a barrier); rank 0 writes the
   checkpoint and logs to MLflow; at the end rank 0 exports the best model as ``final.pt``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray.train
import torch
import torch.distributed as dist

from avface.face_model import FaceModel
from avface.face_model.starter import semantic_expression_count
from avface.losses.geometry import vertex_distance_loss
from avface.losses.landmarks import landmark_loss
from avface.losses.params import parameter_loss
from avface.models.avface import AVFace
from avface.models.checkpoints import load_deca_encoder, load_normals_net
from avface.render.cameras import pixels_to_ndc
from avface.train.augment import random_zoom_shift
from avface.train.checkpoints import CHECKPOINT_FILE, check_compatible, read_checkpoint, save_checkpoint
from avface.train.config import MODEL_STAGE, TrainConfig
from avface.train.data import OCC_SUFFIX, BatchStream, ShardIndex, make_loader
from avface.train.selection import STAGE_MONITOR, Selection, kept_best_state
from avface.train.validation import Baselines, flat_frames, ground_truth_vertices, validate
from avface.train.viz import validation_strip
from avface.utils.tracking import StageTracker

log = logging.getLogger(__name__)

__all__ = ["StepContext", "stage_worker", "train_step", "pretrain_losses", "average_gradients",
           "load_pretrained"]

def pretrain_losses(out, batch, scales: dict[str, torch.Tensor], face_model: FaceModel | None = None,
                    lip_ids: torch.Tensor | None = None, landmark_weight: float = 0.0,
                    fit_lip_detail: bool = False, lip_vertex_weight: float = 1.0,
                    n_param_expression: int | None = None) -> dict[str, torch.Tensor]:
    """The pretraining stage's supervised terms: each predicted parameter group against the synthetic ground
    truth, divided by its spread over the corpus (``scales``: name -> (k,) std; albedo and light are per clip in
    the targets and per frame in the prediction), and with ``face_model`` the mean vertex distance (mm) of the
    predicted identity + expression + jaw under the true pose, over all vertices and over ``lip_ids``; with
    ``landmark_weight`` DECA's weighted 2D landmark loss against the ground-truth landmarks. ``lip_vertex_weight``
    weighs the lip term; ``n_param_expression``: only the first that many expression coefficients in the parameter
    term (None: all)."""
    tg = batch.targets
    t = batch.window
    pred = {"shape": out.shape, "expression": out.expression, "jaw": out.jaw, "global_pose": out.global_pose,
            "cam": out.cam}
    target = {"shape": tg.shape, "expression": tg.expression, "jaw": tg.jaw, "global_pose": tg.global_pose,
              "cam": tg.cam}
    if tg.albedo is not None:
        pred["albedo"] = out.albedo
        target["albedo"] = tg.albedo[:, None].expand(-1, t, -1)
    if tg.light is not None:
        pred["light"] = out.light.reshape(*out.light.shape[:2], -1)
        target["light"] = tg.light.reshape(tg.light.shape[0], 1, -1).expand(-1, t, -1)
    scale = {k: scales[k].to(pred[k]) for k in pred}
    weights = None
    if n_param_expression is not None:
        n = n_param_expression
        pred["expression"], target["expression"] = pred["expression"][..., :n], target["expression"][..., :n]
        scale["expression"] = scale["expression"][..., :n]
        weights = {"expression": 0.0} if n == 0 else None  # no coefficient left: the group is not scored
    terms = parameter_loss(pred, {k: v.to(pred[k]) for k, v in target.items()}, scale, weights)
    terms = {f"param_{k}": v for k, v in terms.items()}
    if landmark_weight > 0 and out.landmarks2d is not None:
        # the 2D reprojection that NME measures: pose and camera errors weighted by what they do to the image
        gt = pixels_to_ndc(batch.landmarks.to(out.landmarks2d), tuple(batch.images.shape[-2:]))
        terms["landmark"] = landmark_weight * landmark_loss(out.landmarks2d, gt, batch.landmarks_valid)
    if face_model is not None:
        # The geometry the parameters make, in mm: weighs each coefficient by how much it moves the surface
        # (the std-normalised terms weigh a coefficient that barely moves a vertex like one that opens the jaw).
        # The true pose is used, so these terms train identity and expression, not the camera. The target has the
        # lips' detail only with ``fit_lip_detail`` (the exact mesh, reached as far as the expression space allows).
        gt_v = ground_truth_vertices(face_model, tg, lip_detail=fit_lip_detail)
        pred_v = ground_truth_vertices(face_model, tg, expression=flat_frames(out.expression), jaw=flat_frames(out.jaw),
                                       shape=flat_frames(out.shape))
        dist = (pred_v - gt_v).norm(dim=-1) * 1000.0  # (N, V) mm
        terms["vertices_mm"] = dist.mean()
        terms["lip_vertices_mm"] = lip_vertex_weight * dist[:, lip_ids].mean()
    terms["total"] = sum(terms.values())
    return terms


def average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """Mean of the gradients over ranks, one all-reduce over a flat buffer (the model's outputs are dataclasses
    and its losses a method, so we average by hand instead of wrapping it in DDP)."""
    if world <= 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    at = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[at:at + n].view_as(p).clone()
        at += n


@dataclass
class StepContext:
    """What one optimisation step needs besides the model and the batch (built once per stage)."""

    stage: str  # a TrainConfig stage name: pretrain, coarse, lip, detail, occlusion
    augment_zoom: float  # StageConfig.augment_zoom
    augment_shift: float  # StageConfig.augment_shift
    landmark_weight: float  # StageConfig.landmark_weight (pretraining only)
    scales: dict[str, torch.Tensor]  # pretraining parameter spreads, name -> (k,)
    face_model: FaceModel
    lip_ids: torch.Tensor  # (L,) long, the face model's lip vertices
    world: int = 1  # ranks whose gradients are averaged
    autocast: Any = field(default_factory=contextlib.nullcontext)  # torch.autocast(...) under mixed precision
    teacher: AVFace | None = None  # the stage's starting model, frozen (clean-twin consistency)
    clean_consistency: float = 0.0  # StageConfig.clean_consistency
    fit_lip_detail: bool = False  # StageConfig.fit_lip_detail (pretraining only)
    lip_vertex_weight: float = 1.0  # StageConfig.lip_vertex_weight (pretraining only)
    n_param_expression: int | None = None  # expression coefficients in the parameter term (None: all)


def train_step(model: AVFace, optimiser: torch.optim.Optimizer, params: list[torch.nn.Parameter], batch,
               ctx: StepContext, generator: torch.Generator) -> tuple[dict[str, torch.Tensor], int]:
    """One step of the loop: augment -> forward -> the stage's losses -> backward -> gradients averaged over
    ranks -> optimiser step. ``batch`` is on the model's device already (the augmentation then runs there too);
    ``generator`` draws the zoom and shift. Returns (the loss terms, detached, ``total`` included; the number of
    windows in the batch)."""
    batch = random_zoom_shift(batch, ctx.augment_zoom, ctx.augment_shift, generator)
    with ctx.autocast:
        # pretraining has no image-space term: skip the coarse rendering (half the step time); the lip stage's
        # losses render in their own frame
        out = model(batch, render=ctx.stage != "pretrain" and not model.losses_render)
        terms = (pretrain_losses(out, batch, ctx.scales, ctx.face_model, ctx.lip_ids, ctx.landmark_weight,
                                 ctx.fit_lip_detail, ctx.lip_vertex_weight, ctx.n_param_expression)
                 if ctx.stage == "pretrain" else model.losses(batch, out))
        if ctx.teacher is not None and ctx.clean_consistency > 0:
            terms["clean_consistency"] = ctx.clean_consistency * clean_consistency_loss(model, out, ctx.teacher, batch)
            terms["total"] = terms["total"] + terms["clean_consistency"]
    optimiser.zero_grad(set_to_none=True)
    terms["total"].backward()
    average_gradients(params, ctx.world)
    optimiser.step()
    return {k: v.detach() for k, v in terms.items()}, batch.batch_size


def clean_consistency_loss(model: AVFace, out, teacher: AVFace, batch) -> torch.Tensor:
    """Mean vertex distance (mm) between the model's face on ``batch`` (``out``) and the frozen ``teacher``'s face
    on the same windows without the occluder (``batch.clean_images``): shape, expression and jaw, no head pose.

    Why: the occluded copies carry the clean frames' landmarks, but the landmark and photometric terms see the
    mouth's 3D shape only through a few pixels; the clean twin says what the face under the hand is. The teacher
    (the stage's starting weights) sees no occluder, so the term asks the network to be as good under occlusion
    as it already is without one, and on clean windows it holds the network where it started. The pose is left
    to the landmark term (the 3D metrics align it away)."""
    if batch.clean_images is None:
        raise ValueError("the clean-twin consistency needs Batch.clean_images (BatchStream(clean_twins=True))")
    with torch.no_grad():
        ref = teacher(replace(batch, images=batch.clean_images, occlusion_mask=None), render=False)
        target = teacher.canonical_vertices(ref)
    return vertex_distance_loss(model.canonical_vertices(out), target)


def _teacher(model: AVFace, state: dict[str, torch.Tensor]) -> AVFace:
    """A frozen eval-mode copy of ``model`` (same config, face model and stage) holding ``state``; no renderer."""
    teacher = AVFace(model.config, model.face_model, renderer=False, stage=model.stage)
    teacher.load_trainable_state_dict(state)
    teacher.requires_grad_(False)
    return teacher.eval()


def _lr_schedule(optimiser: torch.optim.Optimizer, scfg, step: int):
    """Cosine decay from ``lr`` to ``lr_min_ratio * lr`` over the stage's steps, positioned at ``step`` (resume);
    None for a constant learning rate."""
    if scfg.lr_schedule == "constant":
        return None

    def factor(s: int) -> float:
        t = min(s, scfg.steps) / max(scfg.steps, 1)
        return scfg.lr_min_ratio + (1 - scfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    for g in optimiser.param_groups:
        g.setdefault("initial_lr", g["lr"] if step == 0 else scfg.lr)
    return torch.optim.lr_scheduler.LambdaLR(optimiser, factor, last_epoch=step - 1)


def _broadcast_model(model: AVFace, world: int) -> None:
    """Every rank starts from rank 0's weights (random init differs per process otherwise)."""
    if world <= 1:
        return
    for t in list(model.trainable_state_dict().values()):
        if t.is_floating_point():
            dist.broadcast(t.data, src=0)


def _broadcast_flag(flag: bool, world: int, device: torch.device) -> bool:
    if world <= 1:
        return flag
    x = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.broadcast(x, src=0)
    return bool(x.item() > 0.5)


def load_pretrained(model: AVFace, tracker: StageTracker | None = None) -> dict[str, str]:
    """DECA's encoder / the face-normals network when the config names them; what was loaded is returned (and
    logged to MLflow)."""
    done: dict[str, str] = {}
    cfg = model.config
    if cfg.coarse.deca_checkpoint:
        rep = load_deca_encoder(model.coarse, cfg.coarse.deca_checkpoint)
        done["deca_checkpoint"] = f"{cfg.coarse.deca_checkpoint}: {rep.summary()}"
        # E_v of the expression branch starts from DECA's ResNet too (as EMOCA's expression encoder does)
        rep = load_deca_encoder(model.expression, cfg.coarse.deca_checkpoint)
        done["deca_checkpoint.expression"] = f"{cfg.coarse.deca_checkpoint}: {rep.summary()}"
    if cfg.detail.normals_checkpoint and model.detail is not None:
        rep = load_normals_net(model.detail, cfg.detail.normals_checkpoint)
        done["normals_checkpoint"] = f"{cfg.detail.normals_checkpoint}: {rep.summary()}"
    for k, v in done.items():
        log.info("initialised from %s", v)
        if tracker is not None:
            tracker.set_tag(f"init.{k}", v)
    return done


def _val_batches(index: ShardIndex | None, n: int, image_size: int) -> list:
    """A fixed, evenly spaced subset of ``n`` held-out windows, in batches of 8 (same windows every validation)."""
    if index is None or n <= 0 or len(index) == 0:
        return []
    return index.batches(index.spread(n), image_size)


def stage_worker(payload: dict[str, Any]) -> None:
    """Train one stage. ``payload`` (plain data, resolved on the driver): ``config`` (TrainConfig dict), ``stage``,
    ``init`` (checkpoint to start from or None), ``export`` (final.pt path), ``scales`` (pretraining parameter
    std, name -> list), ``baselines`` (mean expression/jaw), ``audio_kind``, ``tracking`` (uri, run_id)."""
    # 1. context ---------------------------------------------------------------------------------------------
    cfg = TrainConfig.from_dict(payload["config"])
    stage = payload["stage"]
    scfg = cfg.stages[stage]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device() if cfg.scaling.use_gpu else torch.device("cpu")
    torch.manual_seed(cfg.seed)
    tracker = StageTracker(payload["tracking"]) if rank == 0 and payload.get("tracking") else None
    stage_dir = Path(payload["export"]).parent
    stage_dir.mkdir(parents=True, exist_ok=True)
    (stage_dir / f"worker-{rank}.pid").write_text(str(os.getpid()))  # which process is which rank (ops, tests)

    # 2. model -----------------------------------------------------------------------------------------------
    mcfg = cfg.model
    face_model = cfg.build_face_model()
    model = AVFace(mcfg, face_model)
    resume = ray.train.get_checkpoint()
    step, epoch, step_in_epoch = 0, 0, 0
    selection_extras: dict[str, Any] = {}  # a resumed checkpoint's selection state
    opt_state = None
    start_state: dict[str, torch.Tensor] | None = None  # the stage's starting weights (the teacher's)
    if resume is not None:
        with resume.as_directory() as d:
            ck = read_checkpoint(Path(d) / CHECKPOINT_FILE)
        check_compatible(ck, face_model=face_model, audio_kind=payload["audio_kind"], audio_dim=mcfg.audio_dim)
        model.load_trainable_state_dict(ck["model"])
        opt_state = ck.get("optimizer")
        step, epoch = int(ck["step"]), int(ck["epoch"])
        step_in_epoch = int(ck["extras"].get("step_in_epoch", 0))
        selection_extras = ck["extras"]
        log.info("rank %d resumes %s at step %d (epoch %d, batch %d)", rank, stage, step, epoch, step_in_epoch)
        if scfg.clean_consistency > 0 and payload.get("init"):
            start_state = read_checkpoint(payload["init"])["model"]
    elif payload.get("init"):
        ck = read_checkpoint(payload["init"])
        check_compatible(ck, face_model=face_model, audio_kind=payload["audio_kind"], audio_dim=mcfg.audio_dim)
        model.load_trainable_state_dict(ck["model"])
        start_state = ck["model"]
        if tracker is not None:
            tracker.set_tag("init.checkpoint", str(payload["init"]))
    else:
        load_pretrained(model, tracker)
    model.set_stage(MODEL_STAGE[stage])
    model.to(device)
    _broadcast_model(model, world)
    started_trained = bool(payload.get("init")) or bool(mcfg.coarse.deca_checkpoint)
    model.freeze_batchnorm(started_trained if scfg.freeze_batchnorm is None else scfg.freeze_batchnorm)
    # the selection (step 6): the lowest held-out monitor; a stage that starts trained trades no error for another
    selection = Selection.from_state(STAGE_MONITOR[stage],
                                     started_trained if scfg.no_regression is None else scfg.no_regression,
                                     selection_extras)
    model.train()
    teacher = None
    if scfg.clean_consistency > 0:
        if start_state is None:  # no init checkpoint: the stage starts (or, resumed, restarts) from these weights
            log.warning("stage %s: no init checkpoint, the clean-twin teacher is the model as loaded", stage)
            start_state = model.trainable_state_dict()
        teacher = _teacher(model, start_state).to(device)

    # 3. optimiser -------------------------------------------------------------------------------------------
    params = model.trainable_parameters()
    optimiser = torch.optim.Adam(params, lr=scfg.lr, weight_decay=scfg.weight_decay)
    if opt_state is not None:
        optimiser.load_state_dict(opt_state)
    schedule = _lr_schedule(optimiser, scfg, step)
    scales = {k: torch.tensor(v, dtype=torch.float32).clamp_min(1e-2) for k, v in (payload.get("scales") or {}).items()}
    baselines = Baselines.from_statistics(payload["statistics"]) if payload.get("statistics") else None

    # 4. data ------------------------------------------------------------------------------------------------
    d = cfg.data
    splits = [d.train_split] + ([d.train_split + OCC_SUFFIX] if scfg.occluded_ratio > 0 else [])
    index = ShardIndex.build(d.shards, splits)
    stream = BatchStream(index, rank, world, d.batch_windows, d.windows_per_speaker, mcfg.image_size, cfg.seed,
                         occluded_ratio=scfg.occluded_ratio, start_epoch=epoch, start_step=step_in_epoch,
                         clean_twins=teacher is not None)
    loader = make_loader(stream, d.loader_workers)
    val, val_occ = [], []
    if rank == 0:
        val = _val_batches(ShardIndex.build(d.shards, [d.val_split]), d.val_windows, mcfg.image_size)
        if d.val_occluded_windows > 0:
            try:
                val_occ = _val_batches(ShardIndex.build(d.shards, [d.val_split + OCC_SUFFIX]), d.val_occluded_windows,
                                       mcfg.image_size)
            except ValueError:
                val_occ = []  # no occluded held-out windows were preprocessed
    step_ctx = StepContext(stage, scfg.augment_zoom, scfg.augment_shift, scfg.landmark_weight, scales, face_model,
                           torch.as_tensor(face_model.region("lips")).long().to(device), world,
                           torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.scaling.mixed_precision),
                           teacher, scfg.clean_consistency, fit_lip_detail=scfg.fit_lip_detail,
                           lip_vertex_weight=scfg.lip_vertex_weight,
                           n_param_expression=(semantic_expression_count(face_model.name)
                                               if scfg.named_expression_only else None))

    def evaluate() -> dict[str, float]:
        m = validate(model, [b.to(device) for b in val], baselines, "val/")
        if val_occ:
            m.update(validate(model, [b.to(device) for b in val_occ], baselines, "val_occ/"))
        return m

    def snapshot(extras: dict[str, Any], path: Path, with_optimiser: bool) -> Path:
        return save_checkpoint(path, model=model, stage=stage, step=step, epoch=epoch, audio_kind=payload["audio_kind"],
                               face_model_source=cfg.face_model, train_config=payload["config"],
                               optimizer=optimiser if with_optimiser else None, extras=extras)

    # 5. loop ------------------------------------------------------------------------------------------------
    sums: dict[str, float] = {}
    n_sum, t0, samples_seen, stop = 0, time.perf_counter(), 0, False
    best_file = stage_dir / "best.pt"  # the selected weights, so that a resumed stage still exports them
    best_state = kept_best_state(best_file, step, selection.best) if resume is not None and rank == 0 else None
    last_val: dict[str, float] = {}

    def keep_best() -> dict[str, torch.Tensor]:
        snapshot(selection.state(), best_file, with_optimiser=False)
        return {k: v.detach().cpu().clone() for k, v in model.trainable_state_dict().items()}

    if step == 0 and scfg.val_every > 0:
        # The starting weights are the first candidate: a stage never ends worse (on the held-out windows) than
        # it began, and the curve shows where it started.
        if rank == 0 and val:
            last_val = evaluate()
            selection.offer(last_val, start=True)
            best_state = keep_best()
            if tracker is not None:
                tracker.log_metrics(last_val, 0)
        ray.train.report({**last_val, "step": 0, "epoch": epoch})
    for epoch, step_in_epoch, batch in loader:
        if step >= scfg.steps or stop:
            break
        # one draw per (seed, rank, step): a resumed run sees the same augmentation
        augment = torch.Generator().manual_seed(cfg.seed * 1_000_003 + rank * 7919 + step)
        terms, windows = train_step(model, optimiser, params, batch.to(device), step_ctx, augment)
        step += 1
        if schedule is not None:
            schedule.step()
        step_in_epoch += 1
        samples_seen += windows
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        n_sum += 1
        last = step >= scfg.steps
        do_val = (scfg.val_every > 0 and step % scfg.val_every == 0) or last
        do_ckpt = (scfg.checkpoint_every > 0 and step % scfg.checkpoint_every == 0) or last or do_val
        if not (step % scfg.report_every == 0 or do_val or do_ckpt):
            continue
        # 6. validation (rank 0), early stopping -------------------------------------------------------------
        elapsed = time.perf_counter() - t0
        metrics = {f"train/{k}": v / max(n_sum, 1) for k, v in sums.items()}
        metrics.update({"lr": optimiser.param_groups[0]["lr"], "samples_per_s": samples_seen * world / elapsed,
                        "step": step, "epoch": epoch})
        sums, n_sum, samples_seen, t0 = {}, 0, 0, time.perf_counter()
        if do_val and rank == 0 and val:
            last_val = evaluate()
            metrics.update(last_val)
            if selection.guarded:  # how many of the guarded errors are above the start's (what the guard refuses)
                metrics["val/regressed_terms"] = float(len(selection.regressed(last_val)))
            if selection.offer(last_val):
                best_state = keep_best()
            stop = scfg.patience > 0 and selection.stale >= scfg.patience
            if tracker is not None:
                tracker.log_image(validation_strip(model, val[0].to(device)), f"validation/step_{step:06d}.png")
        if do_val:
            stop = _broadcast_flag(stop, world, device)
        # 7. checkpoint + report (every rank, same steps) ----------------------------------------------------
        checkpoint = None
        if do_ckpt and rank == 0:
            tmp = Path(tempfile.mkdtemp(prefix="avface-ckpt-"))
            snapshot({"step_in_epoch": step_in_epoch, **selection.state()},
                     tmp / CHECKPOINT_FILE, with_optimiser=True)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        if tracker is not None:
            tracker.log_metrics(metrics, step)
        ray.train.report(metrics, checkpoint=checkpoint if do_ckpt else None)
    # 8. export (rank 0): the best validated weights, else the last ------------------------------------------
    if rank == 0:
        if best_state is not None:
            model.load_trainable_state_dict(best_state)
        final_metrics = evaluate() if val else {}
        model_stage = payload.get("model_stage", MODEL_STAGE[stage])
        snapshot({**selection.state(), "metrics": final_metrics, "model_stage": model_stage,
                  "statistics": payload.get("statistics") or {}}, Path(payload["export"]), with_optimiser=False)
        Path(payload["export"]).with_suffix(".json").write_text(json.dumps(
            {"stage": stage, "steps": step, "best": selection.best, "monitor": selection.monitor,
             "guard_start": selection.guard_start, "metrics": final_metrics}, indent=2))
        best_file.unlink(missing_ok=True)  # final.pt holds the selected weights now
        if tracker is not None:
            tracker.log_metrics({f"final/{k}": v for k, v in final_metrics.items()}, step)
            if val:
                tracker.log_image(validation_strip(model, val[0].to(device)), "validation/final.png")
            tracker.log_artifact(payload["export"], "model")

"""One training stage: :func:`run_stage` (no Ray needed) and :func:`stage_worker`, its Ray Train wrapper.

``run_stage(payload, world, reporter)`` reads as numbered steps, as in Ray's training examples:

1. data: this rank's speaker-grouped, exactly-once batches from the start point (avface.train.data) and, on
   rank 0, the fixed held-out validation batches;
2. model: face model + AVFace, initial weights (resume checkpoint > previous stage > pretrained files), the
   stage's model depth (``STAGE_TABLE``); the occlusion fine-tune's frozen teacher;
3. optimiser: Adam over exactly the stage's trainable parameters (paper 3.5: lr 1e-4, weight decay 5e-4);
4. loop: :func:`train_step` (augment, forward, the stage's objective from ``avface.train.objectives``,
   backward, gradients averaged over ranks by the :class:`World`, step);
5. validation on held-out speakers (rank 0), selection and early stopping decided by rank 0 and broadcast;
6. checkpoint + report: ``reporter.report`` on every rank at the same steps (Ray's is a barrier); rank 0 writes
   the checkpoint and logs to MLflow; at the end rank 0 exports the selected model as ``final.pt``.

``stage_worker(payload)`` (what ``TorchTrainer`` runs on every worker) takes the rank, world size, device and
resume checkpoint from Ray and calls ``run_stage`` with a :class:`RayReporter`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import ray.train
import torch
import torch.distributed as dist

from avface.data.shard_index import ShardIndex
from avface.face_model import FaceModel
from avface.metrics.ground_truth import Baselines
from avface.models.avface import AVFace
from avface.models.checkpoints import load_deca_encoder, load_normals_net
from avface.models.stages import STAGE_TABLE, Stage, model_stage
from avface.train.augment import random_zoom_shift
from avface.train.config import StageConfig, TrainConfig
from avface.train.data import OCC_SUFFIX, BatchStream, make_loader
from avface.train.objectives import objective, renders_in_forward
from avface.train.selection import Selection, kept_best_state
from avface.train.validation import validate
from avface.train.viz import validation_strip
from avface.trained.checkpoints import CHECKPOINT_FILE, check_compatible, read_checkpoint, save_checkpoint
from avface.utils.tracking import StageTracker

log = logging.getLogger(__name__)

#: the AVFace networks that take the audio window (an init checkpoint's audio features matter for them only)
AUDIO_NETWORKS = {"expression", "lip", "detail"}

__all__ = ["World", "Reporter", "RecordingReporter", "RayReporter", "LocalReporter", "latest_local_checkpoint",
           "StepContext", "run_stage", "stage_worker",
           "train_step", "average_gradients", "load_pretrained"]


# ------------------------------------------------------------------------------------------------ collectives
def average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """Mean of the gradients over ``world`` ranks, one all-reduce over a flat buffer (the model's outputs are
    dataclasses and its objective a function, so we average by hand instead of wrapping it in DDP)."""
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


@dataclass(frozen=True)
class World:
    """This process's rank among ``size`` training processes; every collective is a no-op for one process (no
    process group needed), a ``torch.distributed`` call otherwise (Ray Train sets the group up)."""

    rank: int = 0
    size: int = 1

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        average_gradients(params, self.size)

    def broadcast_model(self, model: AVFace) -> None:
        """Every rank starts from rank 0's weights (random init differs per process otherwise)."""
        if self.size <= 1:
            return
        for t in list(model.trainable_state_dict().values()):
            if t.is_floating_point():
                dist.broadcast(t.data, src=0)

    def broadcast_flag(self, flag: bool, device: torch.device) -> bool:
        """Rank 0's ``flag`` on every rank."""
        if self.size <= 1:
            return flag
        x = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.broadcast(x, src=0)
        return bool(x.item() > 0.5)


# ------------------------------------------------------------------------------------------------ reporting
class Reporter(Protocol):
    """Where a stage reports: called on every rank at the same steps with the metrics of the last steps and, on
    the rank that wrote one, a directory holding ``checkpoint.pt`` (None otherwise)."""

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None = None) -> None: ...


class RayReporter:
    """``ray.train.report``: a barrier over the ranks; Ray persists the checkpoint directory and hands it back to
    a restarted worker group (``ray.train.get_checkpoint``). The local directory is removed once the report returns
    (the upload is synchronous; Ray keeps the source, and each checkpoint would stay in the worker's temp dir)."""

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None = None) -> None:
        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir is not None else None
        ray.train.report(metrics, checkpoint=checkpoint)
        if checkpoint_dir is not None:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)


@dataclass
class RecordingReporter:
    """Keeps every report: ``calls`` = [(metrics, checkpoint_dir), ...] (tests, single-process runs)."""

    calls: list[tuple[dict[str, float], Path | None]] = field(default_factory=list)

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None = None) -> None:
        self.calls.append((dict(metrics), checkpoint_dir))


@dataclass
class LocalReporter:
    """A Ray-free run's reporter: keeps the newest ``keep`` checkpoint directories it is handed (as Ray's
    ``CheckpointConfig(num_to_keep)``), the last of which a re-run resumes from (:func:`latest_local_checkpoint`)."""

    keep: int = 2
    dirs: list[Path] = field(default_factory=list)

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None = None) -> None:
        if checkpoint_dir is None:
            return
        self.dirs.append(Path(checkpoint_dir))
        for old in self.dirs[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        self.dirs = self.dirs[-self.keep:]


def latest_local_checkpoint(scratch: Path) -> Path | None:
    """The newest ``checkpoint.pt`` a Ray-free run of a stage wrote under ``scratch`` (None: none)."""
    found = sorted(Path(scratch).glob(f"avface-ckpt-*/{CHECKPOINT_FILE}"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


# ------------------------------------------------------------------------------------------------ one step
@dataclass
class StepContext:
    """What one optimisation step needs besides the model and the batch (built once per stage); also the
    ``ctx`` of the objectives (``avface.train.objectives.ObjectiveInputs``)."""

    stage: str  # a training stage (avface.models.stages.Stage): pretrain, coarse, lip, detail, occlusion
    augment_zoom: float  # StageConfig.augment_zoom
    augment_shift: float  # StageConfig.augment_shift
    landmark_weight: float  # StageConfig.landmark_weight (pretraining only)
    scales: dict[str, torch.Tensor]  # pretraining parameter spreads, name -> (k,)
    face_model: FaceModel
    lip_ids: torch.Tensor  # (L,) long, the face model's lip vertices
    world: World = field(default_factory=World)  # the ranks whose gradients are averaged
    autocast: Any = field(default_factory=contextlib.nullcontext)  # torch.autocast(...) under mixed precision
    teacher: AVFace | None = None  # the stage's starting model, frozen (clean-twin consistency)
    clean_consistency: float = 0.0  # StageConfig.clean_consistency (occlusion only)
    fit_lip_detail: bool = False  # StageConfig.fit_lip_detail (pretraining only)
    lip_vertex_weight: float = 1.0  # StageConfig.lip_vertex_weight (pretraining only)
    n_param_expression: int | None = None  # expression coefficients in the parameter term (None: all)


def train_step(model: AVFace, optimiser: torch.optim.Optimizer, params: list[torch.nn.Parameter], batch,
               ctx: StepContext, generator: torch.Generator) -> tuple[dict[str, torch.Tensor], int]:
    """One step of the loop: augment -> forward -> the stage's objective -> backward -> gradients averaged over
    ranks -> optimiser step. ``batch`` is on the model's device already (the augmentation then runs there too);
    ``generator`` draws the zoom and shift. Returns (the loss terms, detached, ``total`` included; the number of
    windows in the batch)."""
    batch = random_zoom_shift(batch, ctx.augment_zoom, ctx.augment_shift, generator)
    with ctx.autocast:
        out = model(batch, render=renders_in_forward(model, ctx.stage))
        terms = objective(ctx.stage)(model, batch, out, ctx)
    optimiser.zero_grad(set_to_none=True)
    terms["total"].backward()
    ctx.world.average_gradients(params)
    optimiser.step()
    return {k: v.detach() for k, v in terms.items()}, batch.batch_size


# ------------------------------------------------------------------------------------------------ building blocks
@dataclass
class StartPoint:
    """Where a stage starts: its own resume checkpoint, else the ``init`` checkpoint (the previous stage), else
    fresh weights (+ the pretrained files the config names)."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    weights: dict[str, torch.Tensor] | None = None  # trainable state to load (None: fresh + pretrained files)
    optimiser: dict[str, Any] | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # the resumed checkpoint's (selection state)
    teacher: dict[str, torch.Tensor] | None = None  # the stage's starting weights (the clean-twin teacher's)
    resumed: bool = False
    partial: bool = False  # ``weights`` holds some networks only (StageConfig.init_networks): the rest stay fresh


def start_point(payload: dict[str, Any], resume: Path | None, face_model: FaceModel, audio_dim: int,
                scfg: StageConfig) -> StartPoint:
    """Read (and check against ``face_model`` / the audio) the checkpoint the stage starts from: ``resume`` (a
    ``checkpoint.pt`` of this stage), else ``payload["init"]``."""
    def read(path: str | Path, audio: bool = True) -> dict[str, Any]:
        ck = read_checkpoint(path)
        check_compatible(ck, face_model=face_model, audio_kind=payload["audio_kind"] if audio else None,
                         audio_dim=audio_dim if audio else None)
        return ck

    init = payload.get("init")
    partial = scfg.init_networks is not None
    if resume is not None:
        ck = read(resume)
        teacher = read_checkpoint(init)["model"] if scfg.clean_consistency > 0 and init and not partial else None
        return StartPoint(int(ck["step"]), int(ck["epoch"]), int(ck["extras"].get("step_in_epoch", 0)), ck["model"],
                          ck.get("optimizer"), ck["extras"], teacher, resumed=True)
    if init:
        # networks taken from the checkpoint that hear no audio (E_c) are compatible with any audio features
        ck = read(init, audio=not partial or bool(set(scfg.init_networks) & AUDIO_NETWORKS))
        if partial:
            keep = tuple(f"{n}." for n in scfg.init_networks)
            return StartPoint(weights={k: v for k, v in ck["model"].items() if k.startswith(keep)}, partial=True)
        return StartPoint(weights=ck["model"], teacher=ck["model"])
    return StartPoint()


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


@dataclass
class StageData:
    """The stage's inputs: this rank's training batches and (rank 0) the fixed validation batches."""

    loader: Any  # iterable of (epoch, step_in_epoch, Batch)
    val: list = field(default_factory=list)
    val_occ: list = field(default_factory=list)  # occluded held-out windows (empty where none were made)


def stage_data(cfg: TrainConfig, scfg: StageConfig, world: World, start: StartPoint) -> StageData:
    """Training batches from ``start`` (``occluded_ratio`` of them occluded; with their clean twins when the
    stage has a clean-twin teacher; pretraining's targets exact or fitted, ``StageConfig.target``) and, on rank 0,
    the validation batches (always the exact ground truth, where the shards carry it)."""
    d = cfg.data
    splits = [d.train_split] + ([d.train_split + OCC_SUFFIX] if scfg.occluded_ratio > 0 else [])
    index = ShardIndex.build(d.shards, splits)
    stream = BatchStream(index, world.rank, world.size, d.batch_windows, d.windows_per_speaker,
                         cfg.model.image_size, cfg.seed, occluded_ratio=scfg.occluded_ratio,
                         start_epoch=start.epoch, start_step=start.step_in_epoch,
                         clean_twins=scfg.clean_consistency > 0, targets=scfg.target,
                         fit_max_residual=scfg.fit_max_residual)
    data = StageData(make_loader(stream, d.loader_workers))
    if world.rank == 0:
        data.val = _val_batches(ShardIndex.build(d.shards, [d.val_split]), d.val_windows, cfg.model.image_size)
        if d.val_occluded_windows > 0:
            try:
                data.val_occ = _val_batches(ShardIndex.build(d.shards, [d.val_split + OCC_SUFFIX]),
                                            d.val_occluded_windows, cfg.model.image_size)
            except ValueError:
                data.val_occ = []  # no occluded held-out windows were preprocessed
    return data


def snapshot(path: Path, model: AVFace, payload: dict[str, Any], cfg: TrainConfig, step: int, epoch: int,
             extras: dict[str, Any], optimiser: torch.optim.Optimizer | None = None) -> Path:
    """One checkpoint of the stage (the resumable one with ``optimiser``, ``best.pt``, ``final.pt``)."""
    return save_checkpoint(path, model=model, stage=str(payload["stage"]), step=step, epoch=epoch,
                           audio_kind=payload["audio_kind"], face_model_source=cfg.face_model,
                           train_config=payload["config"], optimizer=optimiser, extras=extras,
                           input_contract=payload["input_contract"])


# ------------------------------------------------------------------------------------------------ one stage
def run_stage(payload: dict[str, Any], world: World | None = None, reporter: Reporter | None = None,
              device: torch.device | str = "cpu", resume: Path | None = None,
              scratch: Path | None = None) -> dict[str, Any]:
    """Train one stage in this process, the numbered steps of the module docstring.

    Args:
        payload: plain data resolved by the driver (``avface.train.trainer.stage_payload``): ``config``
            (TrainConfig dict), ``stage``, ``init`` (checkpoint to start from or None), ``export`` (final.pt
            path), ``model_stage`` (how far the exported model runs), ``scales`` (pretraining parameter std, name
            -> list), ``statistics`` (ground-truth statistics: validation baselines), ``audio_kind``,
            ``input_contract`` (the shards' ``InputContract`` dict, written into every checkpoint),
            ``tracking`` (MLflow uri, run_id; None: no MLflow).
        world: this process's rank and the number of ranks (default: one process, no collectives).
        reporter: receives the metrics and checkpoints (default: a :class:`RecordingReporter`).
        device: where the model trains.
        resume: this stage's ``checkpoint.pt`` to continue from (None: start from ``init``).
        scratch: where the resumable checkpoints handed to ``reporter`` are written (None: a temporary directory).
    Returns:
        On rank 0 the stage's report (``final.json``: stage, steps, best, monitor, guard_start, metrics); on the
        other ranks ``{"stage", "steps"}``.
    """
    world = world or World()
    reporter = reporter if reporter is not None else RecordingReporter()
    device = torch.device(device)
    cfg = TrainConfig.from_dict(payload["config"])
    stage = Stage(payload["stage"])
    spec, scfg, mcfg = STAGE_TABLE[stage], cfg.stages[stage], cfg.model
    torch.manual_seed(cfg.seed)
    rank0 = world.rank == 0
    tracker = StageTracker(payload["tracking"]) if rank0 and payload.get("tracking") else None
    stage_dir = Path(payload["export"]).parent
    stage_dir.mkdir(parents=True, exist_ok=True)
    face_model = cfg.build_face_model()
    start = start_point(payload, resume, face_model, mcfg.audio_dim, scfg)
    if start.resumed:
        log.info("rank %d resumes %s at step %d (epoch %d, batch %d)", world.rank, stage, start.step, start.epoch,
                 start.step_in_epoch)

    # 1. data ------------------------------------------------------------------------------------------------
    data = stage_data(cfg, scfg, world, start)

    # 2. model -----------------------------------------------------------------------------------------------
    model = AVFace(mcfg, face_model)
    if start.weights is not None:
        model.load_trainable_state_dict({**model.trainable_state_dict(), **start.weights} if start.partial
                                        else start.weights)
        if tracker is not None and not start.resumed:
            tracker.set_tag("init.checkpoint", str(payload["init"]))
    else:
        load_pretrained(model, tracker)
    model.set_stage(spec.depth, tuple(scfg.networks) if scfg.networks is not None else None)
    model.to(device)
    world.broadcast_model(model)
    started_trained = bool(payload.get("init")) or bool(mcfg.coarse.deca_checkpoint)
    model.freeze_batchnorm(started_trained if scfg.freeze_batchnorm is None else scfg.freeze_batchnorm)
    # selection (step 5): the lowest held-out monitor; a stage that starts trained trades no error for another
    guarded = started_trained if scfg.no_regression is None else scfg.no_regression
    selection = Selection.from_state(spec.monitor, guarded, start.extras)
    model.train()
    teacher = None
    if scfg.clean_consistency > 0:
        teacher_state = start.teacher
        if teacher_state is None:  # no init checkpoint: the stage starts (or, resumed, restarts) from these weights
            log.warning("stage %s: no init checkpoint, the clean-twin teacher is the model as loaded", stage)
            teacher_state = model.trainable_state_dict()
        teacher = _teacher(model, teacher_state).to(device)

    # 3. optimiser -------------------------------------------------------------------------------------------
    params = model.trainable_parameters()
    optimiser = torch.optim.Adam(params, lr=scfg.lr, weight_decay=scfg.weight_decay)
    if start.optimiser is not None:
        optimiser.load_state_dict(start.optimiser)
    schedule = _lr_schedule(optimiser, scfg, start.step)
    scales = {k: torch.tensor(v, dtype=torch.float32).clamp_min(1e-2) for k, v in (payload.get("scales") or {}).items()}
    baselines = Baselines.from_statistics(payload["statistics"]) if payload.get("statistics") else None
    step_ctx = StepContext(stage, scfg.augment_zoom, scfg.augment_shift, scfg.landmark_weight, scales, face_model,
                           torch.as_tensor(face_model.region("lips")).long().to(device), world,
                           torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.scaling.mixed_precision),
                           teacher, scfg.clean_consistency, fit_lip_detail=scfg.fit_lip_detail,
                           lip_vertex_weight=scfg.lip_vertex_weight,
                           n_param_expression=(face_model.n_semantic_expression
                                               if scfg.named_expression_only else None))

    def evaluate() -> dict[str, float]:
        m = validate(model, [b.to(device) for b in data.val], baselines, "val/")
        if data.val_occ:
            m.update(validate(model, [b.to(device) for b in data.val_occ], baselines, "val_occ/"))
        return m

    best_file = stage_dir / "best.pt"  # the selected weights, so that a resumed stage still exports them

    def keep_best() -> dict[str, torch.Tensor]:
        snapshot(best_file, model, payload, cfg, step, epoch, selection.state())
        return {k: v.detach().cpu().clone() for k, v in model.trainable_state_dict().items()}

    # 4. loop ------------------------------------------------------------------------------------------------
    step, epoch, step_in_epoch = start.step, start.epoch, start.step_in_epoch
    sums: dict[str, float] = {}
    n_sum, t0, samples_seen, stop = 0, time.perf_counter(), 0, False
    best_state = kept_best_state(best_file, step, selection.best) if start.resumed and rank0 else None
    if step == 0 and scfg.val_every > 0:
        # The starting weights are the first candidate: a stage never ends worse (on the held-out windows) than
        # it began, and the curve shows where it started.
        last_val: dict[str, float] = {}
        if rank0 and data.val:
            last_val = evaluate()
            if scfg.keep_start:
                selection.offer(last_val, start=True)
                best_state = keep_best()
            if tracker is not None:
                tracker.log_metrics(last_val, 0)
        reporter.report({**last_val, "step": 0, "epoch": epoch})
    for epoch, step_in_epoch, batch in data.loader:
        if step >= scfg.steps or stop:
            break
        # one draw per (seed, rank, step): a resumed run sees the same augmentation
        augment = torch.Generator().manual_seed(cfg.seed * 1_000_003 + world.rank * 7919 + step)
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
        elapsed = time.perf_counter() - t0
        metrics = {f"train/{k}": v / max(n_sum, 1) for k, v in sums.items()}
        metrics.update({"lr": optimiser.param_groups[0]["lr"], "samples_per_s": samples_seen * world.size / elapsed,
                        "step": step, "epoch": epoch})
        sums, n_sum, samples_seen, t0 = {}, 0, 0, time.perf_counter()

        # 5. validation (rank 0), selection, early stopping --------------------------------------------------
        if do_val and rank0 and data.val:
            last_val = evaluate()
            metrics.update(last_val)
            if selection.guarded:  # how many of the guarded errors are above the start's (what the guard refuses)
                metrics["val/regressed_terms"] = float(len(selection.regressed(last_val)))
            if selection.offer(last_val):
                best_state = keep_best()
            stop = scfg.patience > 0 and selection.stale >= scfg.patience
            if tracker is not None:
                tracker.log_image(validation_strip(model, data.val[0].to(device)), f"validation/step_{step:06d}.png")
        if do_val:
            stop = world.broadcast_flag(stop, device)

        # 6. checkpoint + report (every rank, same steps) ----------------------------------------------------
        checkpoint_dir = None
        if do_ckpt and rank0:
            checkpoint_dir = Path(tempfile.mkdtemp(prefix="avface-ckpt-", dir=scratch))
            snapshot(checkpoint_dir / CHECKPOINT_FILE, model, payload, cfg, step, epoch,
                     {"step_in_epoch": step_in_epoch, **selection.state()}, optimiser)
        if tracker is not None:
            tracker.log_metrics(metrics, step)
        reporter.report(metrics, checkpoint_dir)
    if not rank0:
        return {"stage": str(stage), "steps": step}
    return export_stage(model, best_state, evaluate if data.val else None, selection, payload, cfg, step, epoch,
                        tracker, data.val[0].to(device) if data.val and tracker is not None else None)


def export_stage(model: AVFace, best_state: dict[str, torch.Tensor] | None, evaluate, selection: Selection,
                 payload: dict[str, Any], cfg: TrainConfig, step: int, epoch: int, tracker: StageTracker | None,
                 strip_batch=None) -> dict[str, Any]:
    """Rank 0's end of a stage: the selected weights (else the last) as ``final.pt`` + ``final.json``; returns
    the report."""
    export = Path(payload["export"])
    if best_state is not None:
        model.load_trainable_state_dict(best_state)
    final_metrics = evaluate() if evaluate is not None else {}
    furthest = payload.get("model_stage") or model_stage(payload["stage"])
    snapshot(export, model, payload, cfg, step, epoch,
             {**selection.state(), "metrics": final_metrics, "model_stage": str(furthest),
              "statistics": payload.get("statistics") or {}})
    report = {"stage": str(payload["stage"]), "steps": step, "best": selection.best, "monitor": selection.monitor,
              "guard_start": selection.guard_start, "metrics": final_metrics}
    export.with_suffix(".json").write_text(json.dumps(report, indent=2))
    (export.parent / "best.pt").unlink(missing_ok=True)  # final.pt holds the selected weights now
    if tracker is not None:
        tracker.log_metrics({f"final/{k}": v for k, v in final_metrics.items()}, step)
        if strip_batch is not None:
            tracker.log_image(validation_strip(model, strip_batch), "validation/final.png")
        tracker.log_artifact(payload["export"], "model")
    return report


# ------------------------------------------------------------------------------------------------ Ray
def stage_worker(payload: dict[str, Any]) -> None:
    """Ray Train's per-worker function: :func:`run_stage` with this worker's rank, world size, device and resume
    checkpoint, reporting through ``ray.train.report``."""
    ctx = ray.train.get_context()
    world = World(ctx.get_world_rank(), ctx.get_world_size())
    use_gpu = TrainConfig.from_dict(payload["config"]).scaling.use_gpu
    device = ray.train.torch.get_device() if use_gpu else torch.device("cpu")
    stage_dir = Path(payload["export"]).parent
    stage_dir.mkdir(parents=True, exist_ok=True)
    (stage_dir / f"worker-{world.rank}.pid").write_text(str(os.getpid()))  # which process is which rank (ops, tests)
    checkpoint = ray.train.get_checkpoint()
    with checkpoint.as_directory() if checkpoint is not None else contextlib.nullcontext() as d:
        run_stage(payload, world, RayReporter(), device, resume=Path(d) / CHECKPOINT_FILE if d else None)

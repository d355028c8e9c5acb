"""The training driver: what the shards hold -> the stage chain -> one Ray Train ``TorchTrainer`` per stage.

``run_training(cfg)`` is what ``pipelines/train.py`` calls, locally (it starts a local Ray) and under
``ray job submit`` (it joins the cluster). Re-running the same ``name`` and ``out`` resumes: finished stages are
skipped (their ``final.pt`` is there), an unfinished stage continues from its last Ray Train checkpoint with its
step counter, and MLflow continues the same runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avface.data.batch import FIT_OPTION
from avface.data.shard_index import ShardIndex, audio_statistics, data_summary, fit_statistics, target_statistics
from avface.face_model import FaceModel
from avface.landmarks.detector import POINT_SETS
from avface.models.stages import STAGE_TABLE, Stage, furthest
from avface.train.config import TrainConfig, stage_label
from avface.train.data import OCC_SUFFIX
from avface.train.loop import AUDIO_NETWORKS, LocalReporter, latest_local_checkpoint, run_stage, stage_worker
from avface.trained.checkpoints import FINAL_FILE, check_compatible, read_checkpoint
from avface.trained.contract import contract_from_summary
from avface.utils.files import atomic_path
from avface.utils.jsonable import json_default
from avface.utils.ray_utils import init_ray
from avface.utils.tracking import (
    default_tracking_uri,
    find_or_create_run,
    flatten_params,
    log_params,
    register_final_model,
    setup_tracking,
)

log = logging.getLogger(__name__)

__all__ = ["run_training", "prepare_training", "PreparedRun", "plan_stages", "estimate_cam_scale", "stage_payload"]


def plan_stages(cfg: TrainConfig, summary: dict[str, Any], shards: Path) -> list[Stage]:
    """The stages to run, checked against what the shards hold (a stage whose targets are missing stops here,
    before any training, with the preprocessing option that provides them)."""
    chain = cfg.chain()
    supervised = [s for s in chain if STAGE_TABLE[s].supervised]

    def has_targets(stage: Stage) -> bool:
        return bool(summary["has_fit"] if cfg.stages[stage].target == "fitted" else summary["has_targets"])

    for stage in supervised:
        if cfg.stage == "all" and (not has_targets(stage) or cfg.model.coarse.deca_checkpoint):
            why = ("DECA's encoder is given" if cfg.model.coarse.deca_checkpoint else
                   "the shards carry no fitted pseudo-ground truth" if cfg.stages[stage].target == "fitted" else
                   "the shards carry no ground truth")
            log.info("stage=all: skipping %s because %s", stage_label(stage, cfg.stages[stage]), why)
            chain.remove(stage)
    for stage in chain:
        spec = STAGE_TABLE[stage]
        if spec.supervised and cfg.stages[stage].target == "fitted" and not summary["has_fit"]:
            raise ValueError(f"{stage_label(stage, cfg.stages[stage])} (stages.{stage}.target=fitted) needs the "
                             f"fitted parameters (fit_params.npy), but {summary['without_fit']} has none: "
                             f"{FIT_OPTION}, or train with stages.{stage}.target=exact on a corpus with ground truth")
        if spec.supervised and cfg.stages[stage].target == "exact" and not summary["has_targets"]:
            raise ValueError(f"stage {stage} needs ground-truth parameters, but the shards in {shards} carry none: "
                             "it trains on the synthetic corpus (pipelines/synthesize.py, then preprocess with "
                             "data.carry_ground_truth=true); for real data set model.coarse.deca_checkpoint, or "
                             f"stages.{stage}.target=fitted on shards preprocessed with fit.enabled=true")
        if spec.needs_normals and not summary["has_normals"]:
            raise ValueError(f"stage {stage} needs pseudo-ground-truth normals, but the shards in {shards} have "
                             "none: preprocess with normals.source=auto (the renderer's exact normals for synthetic "
                             "clips; normals.checkpoint=<face-normals network> for real ones)")
        if summary["occluded_windows"] == 0 and cfg.stages[stage].occluded_ratio > 0:
            raise ValueError(f"stage {stage} needs occluded windows ({cfg.data.train_split}_occ shards), but "
                             f"{shards} has none: preprocess with occlusion.windows={{train: 3000}}")
    return chain


def estimate_cam_scale(index: ShardIndex, face_model: FaceModel, stats: dict | None, probe: int = 64) -> float:
    """The orthographic camera scale the data implies: the ground-truth mean where the shards carry it, else the
    ratio of the landmarks' inter-ocular distance (NDC) to the mean face's (metres)."""
    if stats is not None and "cam" in stats:
        return float(stats["cam"]["mean"][0])
    with torch.no_grad():
        lm3 = face_model(shape=torch.zeros(1, face_model.n_shape),
                         expression=torch.zeros(1, face_model.n_expression),
                         global_pose=torch.zeros(1, 3)).landmarks68[0]
    model_iod = float((lm3[36, :2] - lm3[45, :2]).norm())
    ratios = []
    for r in index.spread(probe):
        s = index.read(int(r))
        size = s["frames"].shape[1]
        lm = s["landmarks"][s["landmarks_valid"]]
        if len(lm):
            iod = np.linalg.norm(lm[:, 36] - lm[:, 45], axis=-1) * 2.0 / size
            ratios.append(np.median(iod) / model_iod)
    if not ratios:
        raise ValueError(f"{index.root}: no valid landmarks to estimate the camera scale from")
    return float(np.median(ratios))


@dataclass
class PreparedRun:
    """What the driver resolves before any stage runs (``prepare_training``)."""

    cfg: TrainConfig  # with the data's audio size, camera scale and audio statistics filled in
    summary: dict[str, Any]  # data_summary of the training shards (+ occluded_windows)
    stats: dict[str, Any] | None  # ground-truth statistics (None without ground truth)
    chain: list[Stage]  # the stages to run, checked against the shards
    init_ck: dict[str, Any] | None  # the ``init`` checkpoint, read and checked
    input_contract: dict[str, Any]  # InputContract.to_dict(): how the shards' inputs were made
    # statistics of the fitted pseudo-ground truth (pretraining with target=fitted: its parameter scales; None
    # otherwise)
    fit_stats: dict[str, Any] | None = None

    def stage_statistics(self, stage: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(statistics of the stage's parameter scales, statistics of its validation baselines): the fitted
        parameters' for pretraining on fitted targets (baselines from the exact ground truth where there is
        one), else the ground truth's."""
        if self.fit_stats is not None and Stage(stage) is Stage.PRETRAIN and \
                self.cfg.stages[stage].target == "fitted":
            return self.fit_stats, self.stats or self.fit_stats
        return self.stats, self.stats


def prepare_training(cfg: TrainConfig | dict[str, Any]) -> PreparedRun:
    """Step 1 of :func:`run_training`: read what the shards hold, plan and check the stage chain, fill in what the
    config takes from the data (audio size, camera scale, audio statistics) and check the ``init`` checkpoint."""
    cfg = cfg if isinstance(cfg, TrainConfig) else TrainConfig.from_dict(cfg)
    shards = Path(cfg.data.shards).expanduser().resolve()
    cfg.data.shards = str(shards)
    # one index of the clean and occluded training windows (the tars' headers are read once)
    both = ShardIndex.build(shards, [cfg.data.train_split, cfg.data.train_split + OCC_SUFFIX])
    index = both.select(~both.table["occluded"])
    summary = data_summary(index)
    summary["occluded_windows"] = int(both.table["occluded"].sum())
    chain = plan_stages(cfg, summary, shards)
    if cfg.model.audio_dim != summary["audio_dim"]:
        log.info("model.audio_dim %d -> %d (%s features in the shards)", cfg.model.audio_dim, summary["audio_dim"],
                 summary["audio_kind"])
        cfg.model.audio_dim = summary["audio_dim"]
    if cfg.model.landmark_input:
        _landmark_input_from_data(cfg, summary, shards)
    stats = target_statistics(index) if summary["has_targets"] else None
    fit_stats = None
    if any(STAGE_TABLE[st].supervised and cfg.stages[st].target == "fitted" for st in chain):
        fit_stats = fit_statistics(index, cfg.stages[Stage.PRETRAIN].fit_max_residual)
    face_model = cfg.build_face_model()
    if stats is not None and summary["gt_face_model"] and summary["gt_face_model"] != [face_model.name]:
        raise ValueError(f"{shards}: ground truth made with face model {summary['gt_face_model']}, training with "
                         f"{face_model.name!r}: use the corpus's face model (face_model=...)")
    if cfg.cam_scale_from_data:
        # pretraining on fitted targets reads nothing of the exact ground truth (a corpus treated as real)
        cfg.model.coarse.init_cam_scale = estimate_cam_scale(index, face_model, fit_stats or stats)
        log.info("camera scale initialised from the data: %.3f", cfg.model.coarse.init_cam_scale)
    init_ck = read_checkpoint(cfg.init) if cfg.init else None  # read once: checked, statistics, furthest stage
    first = cfg.stages[chain[0]] if chain else None
    if init_ck is not None and first is not None and first.init_networks is not None \
            and not set(first.init_networks) & AUDIO_NETWORKS:
        # only networks that hear no audio come from `init` (the ablation grid's shared E_c): the audio features,
        # their statistics and the furthest stage are this run's own
        init_ck = None
    if init_ck is not None:
        init_model = init_ck.get("model_config", {})
        cfg.model.audio_mean, cfg.model.audio_std = init_model.get("audio_mean"), init_model.get("audio_std")
    elif cfg.audio_stats_from_data and cfg.model.audio_mean is None:
        cfg.model.audio_mean, cfg.model.audio_std = audio_statistics(index)
        log.info("audio features standardised with the shards' statistics (%d channels)", len(cfg.model.audio_mean))
    if not getattr(face_model, "has_albedo", False):
        log.warning("the face model has no albedo model: the photometric loss sees shading only")
    if init_ck is not None:
        check_compatible(init_ck, face_model=face_model, audio_kind=summary["audio_kind"],
                         audio_dim=summary["audio_dim"],
                         landmark_points=summary.get("detector_points") if cfg.model.landmark_input else None)
    # how the inputs were made, carried by every checkpoint (inference frames and times videos the same way)
    contract = contract_from_summary(summary, face_model=face_model, audio_mean=cfg.model.audio_mean,
                                     audio_std=cfg.model.audio_std, landmark_input=cfg.model.landmark_input)
    return PreparedRun(cfg, summary, stats, chain, init_ck, contract.to_dict(), fit_stats)


def _landmark_input_from_data(cfg: TrainConfig, summary: dict[str, Any], shards: Path) -> None:
    """``model.landmark_input``: the landmark encoder's point set and size from the shards' detector points."""
    point_set = summary.get("detector_points")
    if point_set is None:
        raise ValueError(f"{shards}: model.landmark_input=true but the shards store no detector points (written "
                         "before they existed, or with landmarks.detector=none / landmarks.store_points=false): "
                         "preprocess again with a landmark detector, or train with model.landmark_input=false")
    lm = cfg.model.landmarks
    if lm.point_set != point_set:
        log.info("model.landmarks.point_set %s -> %s (the shards' detector points)", lm.point_set, point_set)
    lm.point_set, lm.n_points = str(point_set), POINT_SETS[str(point_set)]


def stage_payload(cfg: TrainConfig, stage: str, init: str | None, export: Path, model_stage: str,
                  stats: dict[str, Any] | None, audio_kind: str, tracking: dict[str, str] | None, *,
                  input_contract: dict[str, Any], scale_stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """What one stage's workers get (plain data: ``avface.train.loop.run_stage``'s ``payload``);
    ``input_contract`` (``PreparedRun.input_contract``) is written into every checkpoint; ``stats`` the
    statistics of the validation baselines, ``scale_stats`` those of the pretraining's parameter scales (None:
    ``stats``; ``PreparedRun.stage_statistics`` gives both)."""
    scale_stats = stats if scale_stats is None else scale_stats
    return {"config": cfg.to_dict(), "stage": str(stage), "init": init, "export": str(export),
            "model_stage": str(model_stage),
            "scales": {k: v["std"] for k, v in scale_stats.items()} if scale_stats else None, "statistics": stats,
            "audio_kind": audio_kind, "input_contract": input_contract, "tracking": tracking}


def run_training(cfg: TrainConfig | dict[str, Any], start_ray: bool = True) -> dict[str, Any]:
    """Train the configured stage(s); returns (and writes to ``<out>/<name>/summary.json``) what each stage
    reached, the final model and its registered version."""
    from mlflow.tracking import MlflowClient
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    # 1. configuration and data ------------------------------------------------------------------------------
    prepared = prepare_training(cfg)
    cfg, summary, chain, init_ck = prepared.cfg, prepared.summary, prepared.chain, prepared.init_ck
    out = Path(cfg.out).resolve()
    run_dir = out / cfg.name

    # 2. tracking (created here, before any worker: a fresh sqlite store races) ---------------------------
    uri = cfg.tracking.tracking_uri or default_tracking_uri(out)
    experiment = setup_tracking(uri, cfg.tracking.experiment)
    parent, resumed = find_or_create_run(uri, experiment, str(run_dir), cfg.name, cfg.tracking.parent_run_id)
    log_params(uri, parent, flatten_params({**cfg.to_dict(), "data_summary": summary}))
    log.info("MLflow %s run %s (%s)", uri, parent, "resumed" if resumed else "new")

    # 3. Ray ------------------------------------------------------------------------------------------------
    if start_ray and cfg.use_ray:
        init_ray(cfg.ray_address, cfg.num_cpus)

    # 4. the stages -----------------------------------------------------------------------------------------
    results: dict[str, Any] = {}
    prev = cfg.init
    sc = cfg.scaling
    resources = {"CPU": sc.cpus_per_worker, **({"GPU": 1} if sc.use_gpu else {})}
    deepest = Stage.COARSE
    if init_ck is not None:
        deepest = Stage(init_ck.get("extras", {}).get("model_stage", Stage.COARSE))
    for stage in chain:
        # how far the final model runs: the furthest model stage trained so far (the occlusion fine-tune of the
        # coarse stage keeps the lip refiner and detail network trained before it)
        deepest = furthest(deepest, stage)
        export = run_dir / stage / FINAL_FILE
        report = export.with_suffix(".json")
        if export.exists() and report.exists():
            log.info("stage %s already finished (%s): skipping", stage, export)
            results[stage] = json.loads(report.read_text())
            prev = str(export)
            continue
        label = stage_label(stage, cfg.stages[stage])
        child, _ = find_or_create_run(uri, experiment, str(run_dir), f"{cfg.name}/{stage}", parent, stage)
        MlflowClient(uri).set_tag(child, "stage_label", label)
        log_params(uri, child, flatten_params({"stage": stage, **dataclasses.asdict(cfg.stages[stage]),
                                               "init": prev or "", "model.coarse.init_cam_scale":
                                                   cfg.model.coarse.init_cam_scale}))
        scale_stats, base_stats = prepared.stage_statistics(stage)
        payload = stage_payload(cfg, stage, prev, export, deepest, base_stats, summary["audio_kind"],
                                {"uri": uri, "run_id": child}, input_contract=prepared.input_contract,
                                scale_stats=scale_stats)
        if not cfg.use_ray:  # this process, no Ray: the same stage body, its checkpoints kept under scratch
            scratch = out / "ray" / f"{cfg.name}-{stage}" / "local"
            scratch.mkdir(parents=True, exist_ok=True)
            device = "cuda" if sc.use_gpu and torch.cuda.is_available() else "cpu"
            log.info("stage %s: in this process (%s), %d steps", label, device, cfg.stages[stage].steps)
            run_stage(payload, reporter=LocalReporter(), device=device, resume=latest_local_checkpoint(scratch),
                      scratch=scratch)
        else:
            trainer = TorchTrainer(
                stage_worker, train_loop_config=payload,
                scaling_config=ScalingConfig(num_workers=sc.num_workers, use_gpu=sc.use_gpu,
                                             resources_per_worker=resources),
                run_config=RunConfig(name=f"{cfg.name}-{stage}", storage_path=str(out / "ray"),
                                     failure_config=FailureConfig(max_failures=sc.max_failures),
                                     checkpoint_config=CheckpointConfig(num_to_keep=2)))
            log.info("stage %s: %d worker(s), %d steps", label, sc.num_workers, cfg.stages[stage].steps)
            trainer.fit()
        if not report.exists():
            raise RuntimeError(f"stage {stage} ended without exporting {export}")
        results[stage] = {**json.loads(report.read_text()), "label": label}
        MlflowClient(uri).set_terminated(child)
        prev = str(export)

    # 5. the final model ------------------------------------------------------------------------------------
    version = register_final_model(uri, parent, prev, cfg.tracking.registered_model) if prev else None
    MlflowClient(uri).set_terminated(parent)
    result = {"name": cfg.name, "stages": results, "final": prev, "chain": chain, "data": summary,
              "tracking_uri": uri, "mlflow_run_id": parent,
              "registered": f"models:/{cfg.tracking.registered_model}/{version}" if version else None}
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(run_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2, default=json_default))
    return result

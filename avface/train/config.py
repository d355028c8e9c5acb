"""Typed configuration of staged training (``pipelines/train.py``, ``conf/train.yaml``).

``stage=all`` runs ``pretrain -> coarse -> lip -> detail -> occlusion``; each stage starts from the previous one's
final model (``<out>/<name>/<stage>/final.pt``). ``pretrain`` is the open stand-in for DECA's pretrained encoder:
the encoders regress the synthetic corpus's exact parameters (labelled ``pretrain (synthetic ground truth)``
everywhere), or with ``stages.pretrain.target=fitted`` the pseudo-ground truth that preprocessing fitted to each
window's landmarks (``fit.enabled=true``; labelled ``pretrain (fitted pseudo-ground truth)``: a corpus of real
video without DECA's weights); it runs only on shards that carry its targets and is skipped when
``model.coarse.deca_checkpoint`` is set.
The paper's stages (coarse, lip, detail, occlusion) train without any 3D supervision.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from avface.data.batch import TargetSource
from avface.face_model import FaceModel, load_face_model
from avface.face_model.albedo import with_uv_albedo
from avface.models.config import AVFaceConfig
from avface.models.stages import TRAINING_ORDER, Stage, StageName
from avface.trained.checkpoints import DEFAULT_REGISTERED_MODEL, DEFAULT_TRAINING_OUT
from avface.utils.config import dataclass_from_dict, plain, store_config

__all__ = ["StageChoice", "StageConfig", "PRETRAIN_LABELS", "stage_label",
           "TrainDataConfig", "ScalingSettings", "TrackingConfig", "TrainConfig",
           "default_stages", "register_configs"]

#: ``TrainConfig.stage``: "all" (``TRAINING_ORDER``) or one stage (avface.models.stages.StageName)
StageChoice = Literal["all", "pretrain", "coarse", "lip", "detail", "occlusion"]


@dataclass
class StageConfig:
    """One stage's optimisation budget. Adam with the paper's lr 1e-4 and weight decay 5e-4 (sec. 3.5)."""

    steps: int = 1000  # optimiser steps (the budget; early stopping may end it sooner)
    lr: float = 1e-4
    weight_decay: float = 5e-4
    val_every: int = 100  # steps between validations on the held-out split (0: only at the end)
    report_every: int = 10  # steps between metric reports (ray.train.report is a barrier on every rank)
    checkpoint_every: int = 100  # steps between checkpoints (0: only at the end)
    patience: int = 0  # validations without improvement before stopping early (0: never stop early)
    occluded_ratio: float = 0.0  # share of occluded (_occ) windows in each epoch (occlusion stage)
    lr_schedule: Literal["constant", "cosine"] = "constant"  # cosine: lr decays to lr_min_ratio * lr at `steps`
    lr_min_ratio: float = 0.05
    landmark_weight: float = 0.0  # pretrain only: weight of DECA's 2D landmark loss beside the parameter terms
    # pretrain only: the vertex terms' target is the exact mesh with its lips' detail (what DECA's encoder, fitted to
    # real faces, approximates in FLAME's space); false: the mesh of the parameters alone
    fit_lip_detail: bool = False
    # pretrain only: weight of the lip vertices' distance (mm) beside the all-vertex one (1: the lips count twice)
    lip_vertex_weight: float = 1.0
    # pretrain only: the parameter term scores only the face model's named expression coefficients (the mouth
    # rig's); the free ones are scored by the vertex terms alone. Their ground truth is the generator's small noise
    # (std 0.015-0.08, 0.02-0.07 mm at the lips), and the lips' detail needs them far outside it (models README)
    named_expression_only: bool = False
    # pretrain only: what the parameters are regressed to: `exact` the synthetic corpus's ground truth (gt_params),
    # `fitted` the pseudo-ground truth fitted by preprocessing (fit.enabled=true: fit_params, any corpus)
    target: TargetSource = "exact"
    # pretrain with target=fitted: frames whose fit left a landmark residual (NME, inter-ocular fraction) above this
    # are not supervised (nor are frames without a fit)
    fit_max_residual: float = 0.05
    # random zoom (1 +- augment_zoom) and shift (+- augment_shift, NDC) of each training window, every target moved
    # with it (avface.train.augment); 0 and 0: off
    augment_zoom: float = 0.1
    augment_shift: float = 0.1
    # BatchNorm layers kept in eval mode while training (AVFace.freeze_batchnorm); None: when the stage starts
    # from trained weights (an init checkpoint or DECA's encoder), so a network trained from scratch still learns
    # its statistics
    freeze_batchnorm: bool | None = None
    # weight of the clean-twin consistency (mm): the model's face (shape, expression, jaw; no pose) on each window
    # against the stage's starting model's face on the same window without the occluder (occlusion stage only:
    # avface.train.objectives.occlusion_objective)
    clean_consistency: float = 0.0
    # selection guard: a validated candidate is selected only if none of the held-out errors of the selection score
    # (avface.train.validation.SCORE_TERMS: all-vertex, lip and expression mm, clean windows) is above the stage's
    # start, so a fine-tuning stage trades none of them for another; None: when the stage starts from trained weights
    no_regression: bool | None = None
    # the stage's starting weights are its first selection candidate (a stage never ends worse on its monitor than
    # it began); false: they are validated and logged but not selectable, so the stage exports what its own steps
    # reached (the ablation grid: each row reports what its recipe gives)
    keep_start: bool = True
    # only these of the stage's networks train (STAGE_TABLE[stage].networks; None: all of them), e.g. ["expression"]:
    # the expression-jaw branch on a frozen E_c (the ablation grid's shared coarse encoder)
    networks: list[str] | None = None
    # only these networks' weights come from the init checkpoint / previous stage (None: all); the others start
    # fresh (with their own architecture: an ablation row's expression branch differs from the checkpoint's)
    init_networks: list[str] | None = None


#: how each pretraining target is named in logs, MLflow (tag ``stage_label``) and the reports
PRETRAIN_LABELS: dict[str, str] = {"exact": "pretrain (synthetic ground truth)",
                                   "fitted": "pretrain (fitted pseudo-ground truth)"}


def stage_label(stage: str, config: StageConfig) -> str:
    """The stage's name in logs and reports: pretraining says what it regresses (:data:`PRETRAIN_LABELS`)."""
    return PRETRAIN_LABELS[config.target] if Stage(stage) is Stage.PRETRAIN else str(stage)


def default_stages() -> dict[str, StageConfig]:
    return {"pretrain": StageConfig(steps=1500, lr=1e-3, patience=6, lr_schedule="cosine", landmark_weight=10.0,
                                    augment_zoom=0.15, fit_lip_detail=True,
                                    named_expression_only=True, lip_vertex_weight=4.0),
            "coarse": StageConfig(steps=300, patience=3),
            "lip": StageConfig(steps=300, patience=3),
            "detail": StageConfig(steps=300, patience=3),
            # lr 3e-5, not the paper's 1e-4: see the occlusion fine-tune in avface/models/README.md
            "occlusion": StageConfig(steps=300, lr=3e-5, patience=3, occluded_ratio=0.5, clean_consistency=10.0)}


@dataclass
class TrainDataConfig:
    shards: str = "???"  # preprocessing output dir (index.parquet + tars)
    train_split: str = "train"
    val_split: str = "test"  # held-out speakers
    batch_windows: int = 8  # 16-frame windows per batch (per worker)
    windows_per_speaker: int = 4  # consecutive windows of one speaker in a batch (shape consistency)
    loader_workers: int = 1  # torch DataLoader worker processes per training worker
    val_windows: int = 64  # held-out windows per validation (a fixed, evenly spaced subset)
    val_occluded_windows: int = 32  # held-out occluded windows per validation (0: none)


@dataclass
class ScalingSettings:
    """Ray Train ``ScalingConfig``. On a 2-core machine leave CPU to the loaders: ``cpus_per_worker`` 0.5
    (workers that reserve every CPU leave Ray Data none, and ingest hangs). On a GPU cluster: ``use_gpu=true``,
    ``num_workers`` = GPUs, ``cpus_per_worker`` = data-loader workers + 1, ``mixed_precision=true``."""

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 0.5
    mixed_precision: bool = False  # torch.autocast (bf16 on CUDA)
    max_failures: int = 2  # FailureConfig: restarts of the worker group from the last checkpoint


@dataclass
class TrackingConfig:
    tracking_uri: str | None = None  # None: sqlite:///<out>/mlflow.db
    experiment: str = "avface-train"
    # the final model is registered under this name ("" = do not register)
    registered_model: str = DEFAULT_REGISTERED_MODEL
    # the run's MLflow run is a child of this run (an ablation grid's parent run); None: a top-level run
    parent_run_id: str | None = None


@dataclass
class TrainConfig:
    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    model: AVFaceConfig = field(default_factory=AVFaceConfig.tiny)
    stage: StageChoice = "all"
    stages: dict[str, StageConfig] = field(default_factory=default_stages)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    out: str = DEFAULT_TRAINING_OUT  # run directory root: <out>/<name>/<stage>/final.pt, <out>/ray, <out>/mlflow.db
    name: str = "avface"  # run name: re-running the same name resumes it
    init: str | None = None  # checkpoint to start the first stage from (None: previous stage / from scratch)
    # the stages to run, in this order (each from the previous one's final model), instead of `stage`; empty: `stage`
    stage_chain: list[StageName] = field(default_factory=list)
    face_model: str | None = None  # None: open starter model; or a FLAME generic_model.pkl / saved .npz
    landmark_embedding: str | None = None  # FLAME: DECA's landmark_embedding.npy
    # UV albedo model for the photometric terms with a real FLAME (FLAME_texture.npz or DECA's
    # FLAME_albedo_from_BFM.npz); None: the face model's own (the starter model has one; FLAME alone has none and
    # the photometric loss then sees shading only)
    albedo_model: str | None = None
    cam_scale_from_data: bool = True  # set model.coarse.init_cam_scale from the shards (ground truth or landmarks)
    # set model.audio_mean/audio_std (the audio encoders' input standardisation) from the shards, unless the model
    # config gives them; with `init`, the checkpoint's own statistics (its weights were trained with them)
    audio_stats_from_data: bool = True
    ray_address: str | None = None  # None: $RAY_ADDRESS or a local Ray
    num_cpus: int | None = None  # local Ray only
    # false: every stage runs in this process (avface.train.loop.run_stage, one worker, the first GPU with
    # scaling.use_gpu), no Ray at all; resumes from its own last checkpoint like a Ray run
    use_ray: bool = True
    seed: int = 0
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Any) -> TrainConfig:
        d = plain(d)
        d = dict((dataclasses.asdict(d) if dataclasses.is_dataclass(d) else d) or {})
        # A partial ``stages`` mapping overrides each stage's own defaults (pretrain has its own lr), not the
        # plain StageConfig defaults.
        stages = {k: dataclasses.asdict(v) for k, v in default_stages().items()}
        for name, s in dict(d.get("stages") or {}).items():
            if name not in TRAINING_ORDER:
                raise ValueError(f"stages.{name}: unknown stage; stages are {[str(s) for s in TRAINING_ORDER]}")
            given = dataclasses.asdict(s) if dataclasses.is_dataclass(s) else dict(s)
            stages[name] = {**stages[name], **given}
            if stages[name].get("clean_consistency", 0) > 0 and name != Stage.OCCLUSION:
                # the term is part of the occlusion fine-tune's objective only (avface.train.objectives)
                raise ValueError(f"stages.{name}.clean_consistency: only the occlusion stage has the clean-twin term")
            if stages[name].get("target", "exact") != "exact" and name != Stage.PRETRAIN:
                # the self-supervised stages regress no parameters
                raise ValueError(f"stages.{name}.target: only the pretrain stage has parameter targets")
        d["stages"] = stages
        return dataclass_from_dict(cls, d)

    def build_face_model(self) -> FaceModel:
        """The face model of this run (``face_model`` + ``landmark_embedding`` + ``albedo_model``) with the model
        config's shape/expression sizes."""
        kwargs = {"landmark_embedding": self.landmark_embedding} if self.landmark_embedding else {}
        data = load_face_model(self.face_model, **kwargs)
        if self.albedo_model:
            data = with_uv_albedo(data, self.albedo_model, n_albedo=self.model.coarse.n_albedo)
        return FaceModel(data, n_shape=self.model.coarse.n_shape, n_expression=self.model.expression.n_expression)

    def chain(self) -> list[Stage]:
        """The training stages this config runs, in order."""
        if self.stage_chain:
            return [Stage(s) for s in self.stage_chain]
        return list(TRAINING_ORDER) if self.stage == "all" else [Stage(self.stage)]


def register_configs() -> None:
    """Register ``train_schema`` (every key and default of :class:`TrainConfig`) in Hydra's ConfigStore."""
    store_config("train_schema", TrainConfig)

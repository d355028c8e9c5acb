"""Typed config of the main job (``pipelines/main.py``, ``conf/main.yaml``, Hydra ConfigStore ``main_schema``).

``size`` picks the corpus and the training budget (:data:`SIZES`); a key set explicitly (not None) overrides it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from avface.audio.config import AudioKind
from avface.synth.config import CorpusSize
from avface.utils.config import store_config
from avface.viz.turntable import TurntableConfig

__all__ = ["DemoSize", "SIZES", "SizePreset", "CorpusStage", "ShardStage", "TrainingStage", "EvaluationStage",
           "ReconstructionStage", "MainConfig", "register_configs"]

#: ``tiny``: the CI-sized run (a couple of minutes; numbers mean nothing); ``default``: what ``make demo`` runs
DemoSize = Literal["tiny", "default"]


@dataclass(frozen=True)
class SizePreset:
    train_speakers: int  # synthetic training speakers (one clip each)
    test_speakers: int  # held-out speakers: the evaluation and the reconstructed clip
    image_size: int  # px of the corpus's face-crop videos (and of the model's crops)
    occluded_windows: int  # occluded copies of training windows (half as many held-out ones)
    steps: dict[str, int]  # optimiser steps per training stage
    val_windows: int  # held-out windows each validation scores
    eval_windows: int  # held-out windows of the evaluation (0: all)


SIZES: dict[str, SizePreset] = {
    "tiny": SizePreset(train_speakers=2, test_speakers=1, image_size=64, occluded_windows=2,
                       steps={"pretrain": 3, "coarse": 2, "lip": 2, "detail": 2, "occlusion": 2},
                       val_windows=4, eval_windows=8),
    "default": SizePreset(train_speakers=60, test_speakers=12, image_size=64, occluded_windows=24,
                          steps={"pretrain": 240, "coarse": 20, "lip": 20, "detail": 20, "occlusion": 20},
                          val_windows=32, eval_windows=96),
}


@dataclass
class CorpusStage:
    """The synthetic talking-head corpus (VoxCeleb2 + Multiface layouts) under ``<out>/corpus``."""

    enabled: bool = True
    size: CorpusSize = "tiny"  # the Multiface stand-in's size preset (the VoxCeleb2 part follows ``MainConfig.size``)
    occlusion_share: float = 0.25
    multiface: bool = True
    train_speakers: int | None = None  # None: the size's
    test_speakers: int | None = None


@dataclass
class ShardStage:
    """WebDataset shards of the corpus under ``<out>/shards`` and a preview sheet of them."""

    enabled: bool = True
    audio_kind: AudioKind = "mel"
    preview_samples: int = 4


@dataclass
class TrainingStage:
    """Every training stage (tiny model config) with Ray Train, tracked in MLflow, the final model registered."""

    enabled: bool = True
    # None: runs/train (avface.trained.checkpoints.DEFAULT_TRAINING_OUT), where `avface reconstruct` looks first,
    # its MLflow store runs/train/mlflow.db (the registry `avface reconstruct` reads)
    out: str | None = None
    name: str = "demo"  # the run's name: <out>/<name>/<stage>/final.pt
    steps: dict[str, int] | None = None  # None: the size's


@dataclass
class EvaluationStage:
    """Table 4 (held-out shards) and Table 5 (the synthetic Multiface stand-in) beside the paper's numbers."""

    enabled: bool = True
    windows: int | None = None  # None: the size's


@dataclass
class ReconstructionStage:
    """One held-out clip through ``avface.inference`` and its exports."""

    enabled: bool = True
    exports: list[str] = field(default_factory=lambda: ["npz", "obj", "mp4", "glb"])


@dataclass
class MainConfig:
    out: str = "runs/demo"
    size: DemoSize = "default"
    face_model: str | None = None  # None: the open starter model; a FLAME .pkl; a saved .npz
    landmark_embedding: str | None = None  # FLAME only; None: landmark_embedding.npy beside the .pkl
    seed: int = 0
    num_cpus: int | None = None  # local Ray only
    turntable: TurntableConfig = field(default_factory=TurntableConfig)
    corpus: CorpusStage = field(default_factory=CorpusStage)
    shards: ShardStage = field(default_factory=ShardStage)
    training: TrainingStage = field(default_factory=TrainingStage)
    evaluation: EvaluationStage = field(default_factory=EvaluationStage)
    reconstruction: ReconstructionStage = field(default_factory=ReconstructionStage)

    @property
    def preset(self) -> SizePreset:
        return SIZES[self.size]


def register_configs() -> None:
    """Register ``main_schema`` (every key and default of :class:`MainConfig`) in Hydra's ConfigStore."""
    store_config("main_schema", MainConfig)

"""Typed config of the main job (``pipelines/main.py``, ``conf/main.yaml``, Hydra ConfigStore ``main_schema``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from avface.audio.config import AudioKind
from avface.synth.config import CorpusSize
from avface.utils.config import store_config
from avface.viz.turntable import TurntableConfig

__all__ = ["CorpusStage", "MainConfig", "ShardStage", "register_configs"]


@dataclass
class CorpusStage:
    """The synthetic talking-head corpus (VoxCeleb2 + Multiface layouts) under ``<out>/corpus``."""

    enabled: bool = True
    size: CorpusSize = "tiny"
    occlusion_share: float = 0.25
    multiface: bool = True


@dataclass
class ShardStage:
    """WebDataset shards of the corpus under ``<out>/shards`` and a preview sheet of them."""

    enabled: bool = True
    audio_kind: AudioKind = "mel"
    preview_samples: int = 4


@dataclass
class MainConfig:
    out: str = "runs/demo"
    face_model: str | None = None  # None: the open starter model; a FLAME .pkl; a saved .npz
    landmark_embedding: str | None = None  # FLAME only; None: landmark_embedding.npy beside the .pkl
    seed: int = 0
    turntable: TurntableConfig = field(default_factory=TurntableConfig)
    corpus: CorpusStage = field(default_factory=CorpusStage)
    shards: ShardStage = field(default_factory=ShardStage)


def register_configs() -> None:
    """Register ``main_schema`` (every key and default of :class:`MainConfig`) in Hydra's ConfigStore."""
    store_config("main_schema", MainConfig)

"""Typed config of the occlude command (``pipelines/occlude.py``, ``conf/occlude.yaml``, Hydra ConfigStore
``occlude_schema``); the occlusion itself is configured by :class:`occlusion_synth.OcclusionConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from avface.utils.config import store_config

from .sequence import OcclusionConfig

__all__ = ["OccludeConfig", "register_configs"]


@dataclass
class OccludeConfig:
    """input: "astronaut" (demo), an .mp4 (decoded with PyAV) or a folder of frames (sorted by name).
    boxes: .json ([[x1, y1, x2, y2], ...] or {"boxes": ...}) or .npy, (T, 4) or one (4,) box; required for real
    input unless `landmarks` (.npy (T, 68, 2) pixels) is given. num_frames: demo length, or the first N frames of
    the input (0 = all). size / shake_px: demo frame size and camera shake. write: "mp4" (occluded.mp4) or "png"
    (frames/%06d.png)."""

    input: str = "astronaut"
    boxes: str | None = None
    landmarks: str | None = None
    out: str = "runs/occlude"
    seed: int = 0
    num_frames: int = 16
    size: int = 224
    shake_px: float = 3.0
    fps: float = 25.0  # of the demo and of a frame folder
    write: Literal["mp4", "png"] = "mp4"
    strip_frames: int = 8
    occlusion: OcclusionConfig = field(default_factory=OcclusionConfig)


def register_configs() -> None:
    """Register ``occlude_schema`` (every key and default of :class:`OccludeConfig`) in Hydra's ConfigStore."""
    store_config("occlude_schema", OccludeConfig)

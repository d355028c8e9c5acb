"""Typed configuration of the synthetic corpus (``pipelines/synthesize.py``, ``conf/synthesize.yaml``).

``size`` picks a preset for every count left at ``None``; explicit counts always win::

    python pipelines/synthesize.py out=/tmp/corpus size=tiny
    python pipelines/synthesize.py out=/data/synth size=large vox.dev_identities=500 occlusion_share=0.3
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from avface.utils.config import dataclass_from_dict, store_config

__all__ = ["SIZE_PRESETS", "STYLES", "AppearanceStyle", "CorpusSize", "VoxConfig", "MultifaceConfig", "FaceConfig",
           "SpeechConfig", "SynthesizeConfig", "resolve_config", "register_configs"]

#: tiny: a few seconds (tests) | small | medium | large: thousands of clips
CorpusSize = Literal["tiny", "small", "medium", "large"]
#: how the VoxCeleb2 clips look (avface/synth/style.py): "studio" (smooth Lambertian faces, one key light, flat
#: hair, blurred backgrounds) | "real" (skin texture and specular, lights from several directions, hair strands
#: and fringe, rooms, camera blur, noise and JPEG); the geometry and ground truth do not depend on it
AppearanceStyle = Literal["studio", "real"]
STYLES: tuple[str, ...] = ("studio", "real")

#: size -> counts.
SIZE_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"vox": {"dev_identities": 1, "test_identities": 1, "videos_per_identity": 1, "clips_per_video": 2,
                     "sentences_per_clip": [1, 1]},
             "multiface": {"identities": 1, "cameras": 2, "sentences": 1}},
    "small": {"vox": {"dev_identities": 8, "test_identities": 2, "videos_per_identity": 2, "clips_per_video": 3,
                      "sentences_per_clip": [1, 2]},
              "multiface": {"identities": 2, "cameras": 3, "sentences": 2}},
    "medium": {"vox": {"dev_identities": 40, "test_identities": 8, "videos_per_identity": 3, "clips_per_video": 4,
                       "sentences_per_clip": [1, 2]},
               "multiface": {"identities": 3, "cameras": 4, "sentences": 4}},
    "large": {"vox": {"dev_identities": 200, "test_identities": 40, "videos_per_identity": 4,
                      "clips_per_video": 4, "sentences_per_clip": [1, 3]},
              "multiface": {"identities": 13, "cameras": 5, "sentences": 8}},
}


@dataclass
class VoxConfig:
    """Output A: VoxCeleb2 layout under ``<out>/voxceleb2``. Counts left None come from the size preset."""

    enabled: bool = True
    dev_identities: int | None = None
    test_identities: int | None = None
    videos_per_identity: int | None = None  # YouTube ids per identity (scene: background, light, framing)
    clips_per_video: int | None = None  # utterances per YouTube id
    sentences_per_clip: list[int] | None = None  # [min, max] sentences spoken in one clip
    image_size: int = 224
    fps: float = 25.0
    crf: int = 20  # H.264 quality
    store_vertices: bool = True  # (T, V, 3) float32 in the sidecar (the largest part)
    style: AppearanceStyle = "studio"  # appearance only (see AppearanceStyle); same seed, same ground truth


@dataclass
class MultifaceConfig:
    """Output B: Multiface layout under ``<out>/multiface``."""

    enabled: bool = True
    identities: int | None = None
    cameras: int | None = None  # including the frontal one (400030 for v1-style ids)
    sentences: int | None = None
    image_height: int = 512  # real: 2048 x 1334 (H x W); same aspect ratio, 4x smaller by default
    image_width: int = 334
    fps: float = 30.0
    camera_distance_mm: float = 1000.0
    write_obj: bool = True  # tracked_mesh/<SEG>/<frame>.obj next to .bin (as the real data set)


@dataclass
class FaceConfig:
    """Identity sampling and motion."""

    face_model: str | None = None  # None: open starter model; else path to FLAME generic_model.pkl
    landmark_embedding: str | None = None  # FLAME only (DECA's landmark_embedding.npy)
    shape_std: float = 0.8
    albedo_std: float = 0.8
    max_yaw_deg: float = 15.0
    max_pitch_deg: float = 10.0
    max_roll_deg: float = 6.0
    head_motion_seconds: float = 0.8  # time scale of the smooth random head motion
    blink_interval: list[float] = field(default_factory=lambda: [2.0, 6.0])  # seconds between blinks
    blink_duration: float = 0.15
    jaw_open_max: list[float] = field(default_factory=lambda: [0.2, 0.3])  # rad at jaw_open = 1 (per identity)
    articulation: list[float] = field(default_factory=lambda: [0.8, 1.15])  # speaker articulation strength
    expression_noise: float = 0.08  # smooth noise on the non-semantic expression coefficients
    # Lip motion outside the mouth rig's expression bases and jaw (avface.face_model.lip_detail): mm RMS over the
    # lips at full lip rounding / press / spread (protrusion / roll-in / corner pull); 0 = lips in the model's
    # parameters only. Stored per frame as ``lip_detail`` (T, 3) in the sidecar and the shards' targets.
    lip_detail_mm: float = 2.0


@dataclass
class SpeechConfig:
    voices_female: list[str] = field(default_factory=lambda: ["en+f2", "en+f3", "en-us+f3", "en+f4", "en-us+f2"])
    voices_male: list[str] = field(default_factory=lambda: ["en", "en-us", "en+m3", "en-us+m3", "en+m1"])
    rate: list[int] = field(default_factory=lambda: [140, 190])  # words per minute
    pitch: list[int] = field(default_factory=lambda: [30, 70])
    sample_rate: int = 16000
    lead_in: list[float] = field(default_factory=lambda: [0.1, 0.35])  # seconds of room tone before speech
    noise_db: list[float] = field(default_factory=lambda: [-62.0, -48.0])  # room tone level (dBFS RMS)


@dataclass
class SynthesizeConfig:
    out: str = "???"
    size: CorpusSize = "tiny"
    seed: int = 0
    occlusion_share: float = 0.25  # fraction of VoxCeleb2 clips with a moving hand occlusion
    occlusion: dict[str, Any] = field(default_factory=dict)  # occlusion_synth.OcclusionConfig.from_dict overrides
    vox: VoxConfig = field(default_factory=VoxConfig)
    multiface: MultifaceConfig = field(default_factory=MultifaceConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    speech: SpeechConfig = field(default_factory=SpeechConfig)
    num_cpus: int | None = None  # local Ray only; None = all
    max_in_flight: int = 64  # Ray tasks submitted at once
    # Ray memory resource per task (one clip / one Multiface sentence). Peaks measured (size=large, one core):
    # ~1.7 GB for a 6 s 224x224 VoxCeleb2 clip, ~2.5 GB for a Multiface sentence with 5 cameras at 512x334.
    task_memory_mb: int = 3000
    overwrite: bool = False  # False: skip clips whose outputs exist (resumable)
    progress: bool = True


def resolve_config(cfg: SynthesizeConfig | dict) -> SynthesizeConfig:
    """Typed config with every ``None`` count filled from the size preset; validates values."""
    if isinstance(cfg, dict):
        cfg = from_dict(cfg)
    if cfg.size not in SIZE_PRESETS:
        raise ValueError(f"size must be one of {sorted(SIZE_PRESETS)}, got {cfg.size!r}")
    preset = SIZE_PRESETS[cfg.size]
    vox = replace(cfg.vox, **{k: v for k, v in preset["vox"].items() if getattr(cfg.vox, k) is None})
    mf = replace(cfg.multiface, **{k: v for k, v in preset["multiface"].items() if getattr(cfg.multiface, k) is None})
    if not 0.0 <= cfg.occlusion_share <= 1.0:
        raise ValueError(f"occlusion_share must be in [0, 1], got {cfg.occlusion_share}")
    if vox.style not in STYLES:
        raise ValueError(f"vox.style must be one of {list(STYLES)}, got {vox.style!r}")
    if vox.image_size % 2:
        raise ValueError("vox.image_size must be even (H.264 yuv420p)")
    lo, hi = vox.sentences_per_clip
    if not 1 <= lo <= hi:
        raise ValueError(f"vox.sentences_per_clip must be [min, max] with 1 <= min <= max, got {[lo, hi]}")
    if mf.cameras is not None and mf.cameras < 1:
        raise ValueError("multiface.cameras must be >= 1 (the first is the frontal camera)")
    return replace(cfg, vox=vox, multiface=mf)


def from_dict(d: dict) -> SynthesizeConfig:
    """Build from a plain (resolved OmegaConf) dict; unknown keys raise ValueError."""
    return dataclass_from_dict(SynthesizeConfig, d)


def to_dict(cfg: SynthesizeConfig) -> dict:
    return asdict(cfg)


def register_configs() -> None:
    """Register ``synthesize_schema`` (every key and default of :class:`SynthesizeConfig`) in Hydra's ConfigStore."""
    store_config("synthesize_schema", SynthesizeConfig)

"""Typed config of the preprocessing pipeline (``conf/preprocess.yaml``, Hydra ConfigStore ``preprocess_schema``).

Ray tasks get the config as a plain dict (:meth:`PreprocessConfig.to_dict`) and rebuild it with
:meth:`PreprocessConfig.from_dict` (Hydra is resolved on the driver: GlobalHydra is a per-process
singleton, so a worker gets the plain dict).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from avface.audio.config import AudioConfig
from avface.utils.config import dataclass_from_dict, store_config

#: none: resize the whole frame | landmarks: square box around the face, smoothed over time
Crop = Literal["none", "landmarks"]
#: jpg: one vertical JPEG strip (T*H, W, 3) per sample | npy: raw (T, H, W, 3) u8
FramesFormat = Literal["jpg", "npy"]
#: auto: mediapipe in-process if importable, else in the side venv's worker, else none (with a warning)
#: | mediapipe (error if neither) | none (all frames invalid)
DetectorName = Literal["auto", "mediapipe", "none"]
#: none | auto (renderer's exact normals for synthetic clips, teacher for the others when a checkpoint is set)
#: | teacher | renderer
NormalsSource = Literal["none", "auto", "teacher", "renderer"]


@dataclass
class DataConfig:
    root: str = "???"  # VoxCeleb2 root: <root>/{dev,test}/mp4/idXXXXX/<ytid>/NNNNN.mp4 (+ aac/, txt/, gt/)
    splits: list[str] = field(default_factory=lambda: ["dev", "test"])
    # VoxCeleb2 split directory -> output split name (shard prefix)
    split_names: dict[str, str] = field(default_factory=lambda: {"dev": "train", "test": "test"})
    max_clips_per_split: int | None = None  # first N clips of each split in manifest order (debugging)
    probe_batch: int = 64  # clips probed per Ray task during discovery
    # Synthetic clips: carry the sidecar's exact model parameters into the shards (gt_params.npy), the targets of
    # the supervised `pretrain` stage and of 3D validation. Real clips have no sidecar and get none.
    carry_ground_truth: bool = True


@dataclass
class VideoConfig:
    fps: float = 25.0  # output frame rate (nearest-frame index selection)
    image_size: int = 224  # output frames are image_size x image_size (multiple of 16: clean JPEG strips)
    crop: Crop = "none"
    crop_scale: float = 1.6  # box side = crop_scale * landmark extent (crop=landmarks)
    max_width: int = 1920  # refuse larger videos ("huge resolution" failure)
    max_height: int = 1920
    min_fps: float = 5.0  # refuse clips whose frame rate is outside [min_fps, max_fps]
    max_fps: float = 120.0
    max_seconds: float = 600.0  # refuse longer clips (bounded task memory)
    frames_format: FramesFormat = "jpg"
    jpeg_quality: int = 90
    decode_threads: int = 1


@dataclass
class LandmarksConfig:
    use_ground_truth: bool = True  # synthetic sidecar landmarks2d when <root>/gt/... exists
    detector: DetectorName = "auto"
    min_detection_confidence: float = 0.5
    # python of the MediaPipe side venv; None: $AVFACE_MEDIAPIPE_PYTHON, else <repo>/.venv-mediapipe/bin/python
    mediapipe_python: str | None = None
    # store the detector's full point set per frame (``detector_points``: the model's landmark input), also for
    # synthetic clips, where the detector then runs on the rendered frames
    store_points: bool = True


@dataclass
class NormalsConfig:
    # auto (default): the renderer's exact normals for synthetic clips (the lip and detail stages' targets), the
    # teacher network for real clips when `checkpoint` is set, else none | none | teacher | renderer
    source: NormalsSource = "auto"
    checkpoint: str | None = None  # UNet-ResNet normals network checkpoint (state dict)
    arch: str = "avface.data.normals_teacher:default_normals_net"  # "module:callable" building the network
    batch_size: int = 16


@dataclass
class OcclusionConfig:
    # output split -> number of occluded 16-frame windows (paper: 3k train / 1k test); 0 disables
    windows: dict[str, int] = field(default_factory=lambda: {"train": 3000, "test": 1000})
    seed: int = 0
    config: dict[str, Any] = field(default_factory=dict)  # passed to occlusion_synth.occlude_sequence


@dataclass
class FitConfig:
    """Pseudo-ground truth (``fit.enabled``): the face model fitted to each window's landmarks with no network (the
    mean face's closed-form pose and camera, then L-BFGS with priors towards the mean face; the test-time fit's
    code, :mod:`avface.fitting.landmarks`), written as ``fit_params`` beside (never instead of) any exact ground
    truth. What ``pretrain`` trains on with ``target=fitted`` when a corpus has no exact parameters."""

    enabled: bool = False
    # weights of avface.fitting.landmarks.RefineConfig for a start with no network behind it: priors towards the
    # mean face stronger on the expression (10x) and shape (1x) than the test-time fit's towards a network (weaker
    # ones let the 68 points pull coefficients they barely see: worse 3D, lip and expression errors, with exact
    # points and the detector's alike), a weaker smoothness (it slows the convergence from the mean face) and more
    # iterations (measured in docs/research/2026-12-07-pseudo-ground-truth.md)
    iterations: int = 60  # L-BFGS iterations per window
    max_eval: int = 180  # bound on the evaluations of the loss per window
    sigma: float = 0.01  # pseudo-Huber scale of a landmark residual (stored frames' NDC)
    w_expression: float = 1e-1  # prior towards the mean face's expression (zero), per coefficient
    w_jaw: float = 1e-3  # prior towards a closed jaw (rad^2)
    w_shape: float = 1e-2  # prior towards the mean shape (zero), per coefficient
    w_smooth: float = 0.1  # squared landmark acceleration against the data term
    face_model: str | None = None  # the face model fitted (training's): None the starter model, FLAME .pkl / .npz
    landmark_embedding: str | None = None  # FLAME: DECA's landmark_embedding.npy


@dataclass
class ShardConfig:
    window: int = 16  # frames per sample
    stride: int = 16  # frames between window starts (16 = non-overlapping)
    max_samples: int = 512  # samples per shard (planned from the manifest)
    max_bytes: int = 2_000_000_000  # planning bound: max_samples is lowered so samples * bytes/sample fits


@dataclass
class RayConfig:
    address: str | None = None  # None: $RAY_ADDRESS or a local Ray
    num_cpus: int | None = None  # local Ray only
    task_cpus: float = 1.0
    task_memory_mb: int = 1500  # Ray memory resource per shard task
    max_retries: int = 3  # per shard task (node loss, worker crash)
    max_in_flight: int = 0  # 0: 2 x cluster CPUs


@dataclass
class PreprocessConfig:
    data: DataConfig = field(default_factory=DataConfig)
    out: str = "???"
    video: VideoConfig = field(default_factory=VideoConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    landmarks: LandmarksConfig = field(default_factory=LandmarksConfig)
    normals: NormalsConfig = field(default_factory=NormalsConfig)
    occlusion: OcclusionConfig = field(default_factory=OcclusionConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    seed: int = 0
    rediscover: bool = False  # rebuild <out>/manifest.parquet even if it exists
    overwrite: bool = False  # allow a config whose output differs from the one recorded in <out>/plan.json
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> PreprocessConfig:
        return dataclass_from_dict(cls, d)

    def fingerprint(self) -> str:
        """Hash of everything that changes the shards' content (not Ray settings, paths of the output or progress)."""
        d = self.to_dict()
        for k in ("ray", "out", "rediscover", "overwrite", "progress"):
            d.pop(k)
        d["landmarks"].pop("mediapipe_python")  # where the side venv lives, not what it computes
        if not d["fit"]["enabled"]:  # the fit's settings change nothing when it is off: shards made before it stay
            d.pop("fit")
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def register_configs() -> None:
    """Register ``preprocess_schema`` (every key and default of :class:`PreprocessConfig`) in Hydra's ConfigStore."""
    store_config("preprocess_schema", PreprocessConfig)

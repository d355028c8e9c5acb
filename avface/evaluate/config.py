"""Typed configuration of the evaluation (``pipelines/evaluate.py``, ``conf/evaluate.yaml``).

Two halves, each skipped when its input is None: ``faceset`` (Table 4 over the preprocessed test shards) and
``multiface`` (Table 5 over a Multiface-layout directory; the synthetic stand-in written by
``pipelines/synthesize.py`` by default). ``model_uri``: a checkpoint path or ``models:/NAME@ALIAS`` /
``models:/NAME/VERSION`` / ``models:/NAME/latest`` (the registry of ``tracking.tracking_uri``); None = the newest
checkpoint under ``runs/train``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from avface.utils.config import store_config

__all__ = ["FaceSetEvalConfig", "MultifaceEvalConfig", "NightlySettings", "EvalTrackingConfig", "EvaluateConfig",
           "register_configs"]


@dataclass
class FaceSetEvalConfig:
    shards: str | None = "data/shards"  # preprocessing output dir (index.parquet + tars); None: skip Table 4
    split: str = "test"  # held-out speakers
    occluded_split: str = "test_occ"  # the occluded copies of the held-out windows ("" / missing: no NME occ)
    max_windows: int = 0  # clean windows evaluated (0: all; else an evenly spaced subset)
    max_occluded_windows: int = 0
    batch_windows: int = 4  # windows per model call


@dataclass
class MultifaceEvalConfig:
    root: str | None = "data/synthetic/multiface"  # Multiface layout (identity dirs); None: skip Table 5
    camera: str | None = None  # None: the frontal camera of either rig (400030 / 400291)
    max_frames: int = 0  # per segment, evenly spaced 30 fps frames scored (0: all); all frames are reconstructed
    # face crop side = crop_scale x extent of the projected tracked-mesh landmarks; None: the framing the model was
    # trained on (its input contract), a value that differs from it warns
    crop_scale: float | None = None
    refine: bool = True  # NoW's rigid + scale refinement after the landmark Procrustes
    heatmap_frames: int = 1  # Fig. 6-style heat maps of this many frames (of the first segments)
    # 68 landmark vertex ids on the tracked meshes' topology (.npy or whitespace-separated text, iBUG order): what a
    # real Multiface evaluation needs (its 7,306-vertex meshes carry no landmarks); None: the synthetic sidecar's
    # landmarks or, for meshes of the face model's topology, its landmark embedding
    landmark_vertices: str | None = None


@dataclass
class NightlySettings:
    enabled: bool = False  # compare with the previous nightly and the champion; exit 1 on a regression
    model_name: str | None = None  # None: the name in model_uri (models:/NAME...), else "avface"
    alias: str = "champion"


@dataclass
class EvalTrackingConfig:
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///<out>/mlflow.db
    experiment: str = "avface-evaluate"
    run_name: str | None = None


@dataclass
class EvaluateConfig:
    model_uri: str | None = None
    out: str = "runs/evaluate"
    faceset: FaceSetEvalConfig = field(default_factory=FaceSetEvalConfig)
    multiface: MultifaceEvalConfig = field(default_factory=MultifaceEvalConfig)
    nightly: NightlySettings = field(default_factory=NightlySettings)
    tracking: EvalTrackingConfig = field(default_factory=EvalTrackingConfig)
    device: str = "auto"  # auto (cuda when the driver has one) | cpu | cuda
    ray_address: str | None = None  # None: $RAY_ADDRESS or a local Ray
    num_cpus: int | None = None  # local Ray only
    progress: bool = True


def register_configs() -> None:
    """Register ``evaluate_schema`` (every key and default of :class:`EvaluateConfig`) in Hydra's ConfigStore."""
    store_config("evaluate_schema", EvaluateConfig)

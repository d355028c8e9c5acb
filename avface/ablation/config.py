"""Typed configuration of the ablation grid (``pipelines/ablate.py``, ``conf/ablate.yaml``).

``profile`` picks the budget and the default rows and seeds: ``smoke`` (CI: two rows, one seed, a few steps),
``quick`` (iteration: Tables 1 and 3 on mel, one seed, under half an hour on a 2-core CPU), ``reduced`` (every row
that runs without user files, 3 seeds, the tiny model: about an hour on 2 cores), ``full`` (a GPU cluster: the
paper's model size, longer budgets). Any ``budget.*`` key given overrides the profile's value; ``rows`` / ``tables``
/ ``seeds`` given override its rows and seeds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from avface.audio.config import AudioConfig
from avface.models.config import AVFaceConfig
from avface.utils.config import dataclass_from_dict, plain, store_config

__all__ = ["Profile", "AblationBudget", "AblationCorpusConfig", "AblationConfig", "PROFILES", "register_configs"]

Profile = Literal["smoke", "quick", "reduced", "full"]


@dataclass
class AblationBudget:
    """The recipe's budget: the same for every row (the shared E_c once)."""

    shared_steps: int | None = None  # E_c (+ a reference expression branch) pretrained once on the synthetic truth
    expression_steps: int | None = None  # each row's own expression-jaw branch, E_c frozen
    lip_steps: int | None = None  # each lip row's own lip refiner
    occlusion_steps: int | None = None  # the occlusion fine-tune (Table 3 "with")
    val_every: int | None = None  # steps between validations (the selection's candidates)
    val_windows: int | None = None  # held-out windows per validation
    val_occluded_windows: int | None = None
    eval_windows: int | None = None  # held-out windows of the FaceSet-style evaluation (0: all)
    eval_occluded_windows: int | None = None


@dataclass
class AblationCorpusConfig:
    """Where the shards come from: a VoxCeleb2-layout corpus (``root``) or, None, the synthetic corpus made here
    (exact 3D truth); it is preprocessed once per audio feature kind the rows need into ``<out>/shards/<kind>``."""

    root: str | None = None
    dev_identities: int | None = None  # synthetic corpus: training speakers (None: the profile's)
    test_identities: int | None = None  # held-out speakers
    clips_per_identity: int | None = None
    image_size: int = 64
    occluded_windows: int | None = None  # occluded training windows (half as many held-out ones)
    preprocess: dict[str, Any] = field(default_factory=dict)  # more PreprocessConfig keys (not audio.kind)
    # shards made already, audio kind -> directory (used as they are: nothing is synthesized or preprocessed for
    # that kind; they must hold ground truth, the renderer's normals and occluded copies, like the grid's own)
    shards: dict[str, str] = field(default_factory=dict)


@dataclass
class AblationConfig:
    out: str = "runs/ablation"
    name: str = "ablation"  # the grid's MLflow parent run; re-running the same name and out resumes it
    profile: Profile = "reduced"
    rows: list[str] = field(default_factory=list)  # row names (avface.ablation.grid.ROWS); empty: the profile's
    tables: list[int] = field(default_factory=list)  # or every row of these tables
    seeds: list[int] = field(default_factory=list)  # empty: the profile's
    model: AVFaceConfig = field(default_factory=AVFaceConfig.tiny)
    corpus: AblationCorpusConfig = field(default_factory=AblationCorpusConfig)
    budget: AblationBudget = field(default_factory=AblationBudget)
    # the user's model files of the DeepSpeech / wav2vec 2.0 rows (audio.deepspeech_graph, audio.wav2vec2_weights);
    # a row whose files are missing is reported "not run (needs ...)"
    audio: AudioConfig = field(default_factory=AudioConfig)
    rows_in_parallel: int = 1  # rows trained at once (Ray tasks); 1: one after another in the driver
    workers_per_row: int = 1  # Ray Train workers of each row (GPUs per row with use_gpu)
    use_gpu: bool = False
    cpus_per_worker: float = 0.5  # leave CPU to the data loaders on a small machine
    mixed_precision: bool = False
    # false: no Ray at all (rows one after another, each stage in this process: avface.train's use_ray=false;
    # preprocessing in this process too): a laptop, or a machine where Ray cannot start
    use_ray: bool = True
    ray_address: str | None = None  # None: $RAY_ADDRESS or a local Ray
    num_cpus: int | None = None  # local Ray only
    tracking_uri: str | None = None  # None: sqlite:///<out>/mlflow.db
    experiment: str = "avface-ablation"
    # a headless-Chromium screenshot of the MLflow UI's compare view of the grid's child runs in the report (needs
    # Debian's `chromium`; skipped with a warning without it)
    screenshot: bool = True
    progress: bool = False

    @classmethod
    def from_dict(cls, d: Any) -> AblationConfig:
        d = plain(d)
        return dataclass_from_dict(cls, dataclasses.asdict(d) if dataclasses.is_dataclass(d) else dict(d or {}))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        return d

    def resolved(self) -> AblationConfig:
        """This config with the profile's values wherever a key was left unset."""
        p = PROFILES[self.profile]
        out = dataclasses.replace(self, budget=dataclasses.replace(self.budget),
                                  corpus=dataclasses.replace(self.corpus))
        for k, v in p["budget"].items():
            if getattr(out.budget, k) is None:
                setattr(out.budget, k, v)
        for k, v in p["corpus"].items():
            if getattr(out.corpus, k) is None:
                setattr(out.corpus, k, v)
        if not out.rows and not out.tables:
            out.rows, out.tables = list(p["rows"]), list(p["tables"])
        out.seeds = list(out.seeds or p["seeds"])
        return out


_SMALL_CORPUS = {"dev_identities": 3, "test_identities": 1, "clips_per_identity": 2, "occluded_windows": 8}
_REDUCED_CORPUS = {"dev_identities": 6, "test_identities": 2, "clips_per_identity": 2, "occluded_windows": 32}
#: each profile's budget, corpus, rows (or tables) and seeds
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"budget": dict(shared_steps=4, expression_steps=4, lip_steps=2, occlusion_steps=2, val_every=2,
                             val_windows=8, val_occluded_windows=4, eval_windows=8, eval_occluded_windows=4),
              "corpus": _SMALL_CORPUS, "rows": ["video", "av_dropout_temporal"], "tables": [], "seeds": [0]},
    "quick": {"budget": dict(shared_steps=150, expression_steps=60, lip_steps=30, occlusion_steps=30, val_every=20,
                             val_windows=16, val_occluded_windows=8, eval_windows=24, eval_occluded_windows=12),
              "corpus": _REDUCED_CORPUS, "rows": [], "tables": [1, 3], "seeds": [0]},
    "reduced": {"budget": dict(shared_steps=300, expression_steps=100, lip_steps=50, occlusion_steps=50,
                               val_every=25, val_windows=24, val_occluded_windows=12, eval_windows=32,
                               eval_occluded_windows=16),
                "corpus": _REDUCED_CORPUS, "rows": [], "tables": [1, 2, 3], "seeds": [0, 1, 2]},
    "full": {"budget": dict(shared_steps=20000, expression_steps=10000, lip_steps=3000, occlusion_steps=3000,
                            val_every=500, val_windows=256, val_occluded_windows=128, eval_windows=0,
                            eval_occluded_windows=0),
             "corpus": {"dev_identities": 200, "test_identities": 20, "clips_per_identity": 4,
                        "occluded_windows": 3000},
             "rows": [], "tables": [1, 2, 3], "seeds": [0, 1, 2]},
}


def register_configs() -> None:
    """Register ``ablate_schema`` (every key and default of :class:`AblationConfig`) in Hydra's ConfigStore."""
    store_config("ablate_schema", AblationConfig)

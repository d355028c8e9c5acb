"""The training stages: one vocabulary and one table for models, training and inference.

``Stage`` is a ``str`` enum, so a member is its name everywhere a string is expected (configs, YAML, checkpoints,
JSON, MLflow) and a plain string from any of those compares and hashes equal to its member
(``Stage("lip") is Stage.LIP``, ``Stage.LIP == "lip"``, ``STAGE_TABLE["lip"]``). Configs keep their ``Literal``
spellings (:data:`StageName`, :data:`ModelStageName`: OmegaConf checks strings, and checkpoints are read with
``weights_only=True``, which loads no enum); ``tests/test_configs.py`` checks that they match the table.

=========  ===========  ===========================  ==================================================
stage      model depth  trains (AVFace networks)     objective (``avface/train/objectives.py``)
=========  ===========  ===========================  ==================================================
pretrain   coarse       coarse, expression           synthetic ground truth: parameters, vertices (mm)
coarse     coarse       coarse, expression           L_coarse (DECA + EMOCA lip terms)
lip        lip          lip                          L_coarse in the re-fitted frame + lip normals
detail     detail       detail                       L_detail (photometric, normals, MRF, regularisers)
occlusion  coarse       coarse, expression           L_coarse + clean-twin consistency
=========  ===========  ===========================  ==================================================

The table's order is the training order of ``stage=all``. The *model depth* is the stage ``AVFace.set_stage``
takes: how far ``forward`` runs and which networks train; the model's own stages are :data:`MODEL_STAGES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

__all__ = ["Stage", "StageSpec", "STAGE_TABLE", "TRAINING_ORDER", "MODEL_STAGES", "StageName", "ModelStageName",
           "model_stage", "furthest"]


class Stage(StrEnum):
    PRETRAIN = "pretrain"
    COARSE = "coarse"
    LIP = "lip"
    DETAIL = "detail"
    OCCLUSION = "occlusion"


#: the names a config may hold (``TrainConfig.stage``, keys of ``TrainConfig.stages``)
StageName = Literal["pretrain", "coarse", "lip", "detail", "occlusion"]
#: the stages of the model itself (``AVFaceConfig.stages``, ``AVFace.set_stage``, ``avface reconstruct --stages``)
ModelStageName = Literal["coarse", "lip", "detail"]


@dataclass(frozen=True)
class StageSpec:
    """What a stage is, beside its objective and its optimisation budget (``avface.train.config.StageConfig``).

    ``depth``: the model stage it trains (how far ``AVFace.forward`` runs); ``networks``: the AVFace networks that
    train (every other one is frozen); ``monitor``: the held-out metric selection minimises (lower is better);
    ``supervised``: it regresses the synthetic corpus's ground truth (no image-space term, so no rendering);
    ``needs_normals``: its objective compares rendered normals with the shards' pseudo-ground-truth normals.
    """

    depth: Stage
    networks: tuple[str, ...]
    monitor: str
    supervised: bool = False
    needs_normals: bool = False


_COARSE_NETS = ("coarse", "expression")  # E_c and the expression-jaw branch

STAGE_TABLE: dict[Stage, StageSpec] = {
    Stage.PRETRAIN: StageSpec(Stage.COARSE, _COARSE_NETS, "val/score_mm", supervised=True),
    Stage.COARSE: StageSpec(Stage.COARSE, _COARSE_NETS, "val/score_mm"),
    Stage.LIP: StageSpec(Stage.LIP, ("lip",), "val/lip_mm", needs_normals=True),
    Stage.DETAIL: StageSpec(Stage.DETAIL, ("detail",), "val/normal_deg_detail", needs_normals=True),
    Stage.OCCLUSION: StageSpec(Stage.COARSE, _COARSE_NETS, "val_occ/score_mm"),
}
#: ``stage=all``'s order
TRAINING_ORDER: tuple[Stage, ...] = tuple(STAGE_TABLE)
#: the model's stages, in the order ``forward`` goes through them
MODEL_STAGES: tuple[Stage, ...] = (Stage.COARSE, Stage.LIP, Stage.DETAIL)


def model_stage(stage: str) -> Stage:
    """The model stage (forward depth) that training ``stage`` trains; ValueError for an unknown name."""
    return STAGE_TABLE[Stage(stage)].depth


def furthest(*stages: str) -> Stage:
    """The deepest of the model stages ``stages`` (training stages count as their depth)."""
    return max((model_stage(s) for s in stages), key=MODEL_STAGES.index)

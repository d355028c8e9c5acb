"""AVFace networks: coarse encoder, expression-jaw branch, lip refiner, fine-stage UNet, combined model."""

from avface.models.checkpoints import LoadReport, load_deca_encoder, load_normals_net, safe_load
from avface.models.config import (
    AudioEncoderConfig,
    AVFaceConfig,
    BackboneConfig,
    CoarseConfig,
    DetailConfig,
    ExpressionJawConfig,
    HeadConfig,
    LipRefinerConfig,
    LossWeights,
    TransformerConfig,
)
from avface.models.detail import DetailUNet, displacement_to_detail, position_map_normals
from avface.models.encoders import AudioEncoder, CoarseEncoder, ExpressionJawEncoder
from avface.models.inputs import Batch, ParamTargets
from avface.models.lip import LipRefiner
from avface.models.outputs import AVFaceOutput
from avface.models.stages import MODEL_STAGES, STAGE_TABLE, TRAINING_ORDER, Stage, StageSpec

__all__ = [
    "AVFaceConfig", "AVFaceOutput", "AudioEncoder", "AudioEncoderConfig", "BackboneConfig", "Batch", "CoarseConfig",
    "CoarseEncoder", "DetailConfig", "DetailUNet", "ExpressionJawConfig", "ExpressionJawEncoder", "HeadConfig",
    "LipRefiner", "LipRefinerConfig", "LoadReport", "LossWeights", "MODEL_STAGES", "ParamTargets", "STAGE_TABLE",
    "Stage", "StageSpec", "TRAINING_ORDER", "TransformerConfig", "displacement_to_detail", "load_deca_encoder",
    "load_normals_net", "position_map_normals", "safe_load",
]

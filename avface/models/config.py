"""Typed configuration of the AVFace networks and losses.

Every size of every network lives here. ``AVFaceConfig.paper()`` is the configuration of the paper (ResNet-50s,
224x224 input, sec. 3.5); ``AVFaceConfig.tiny()`` is a small one for CPU tests (64x64 input, narrow backbones).
:func:`register_configs` registers both as the options of Hydra's ``model`` group (``model=tiny`` on the command
line, ``- model: tiny`` in a pipeline's defaults list); ``AVFaceConfig.from_dict`` builds a config from such a
(Hydra/OmegaConf) mapping.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from avface.models.stages import ModelStageName
from avface.utils.config import dataclass_from_dict, store_config

# FLAME/DECA code sizes (sec. 3.1, 3.5): c = shape 100 + albedo 50 + SH light 27 + global pose 3 + camera 3 = 183.
COARSE_SPLITS: dict[str, int] = {"shape": 100, "albedo": 50, "light": 27, "global_pose": 3, "cam": 3}
# e = expression 50 + jaw 3 = 53.
EXPRESSION_SPLITS: dict[str, int] = {"expression": 50, "jaw": 3}


@dataclass
class BackboneConfig:
    """A ResNet image encoder (torchvision key layout).

    ``block`` "bottleneck" with ``layers`` (3, 4, 6, 3) and ``widths`` (64, 128, 256, 512) is exactly ResNet-50;
    "basic" with (2, 2, 2, 2) is ResNet-18. ``stem`` is the number of channels of the 7x7 stem convolution.
    """

    block: Literal["basic", "bottleneck"] = "bottleneck"
    layers: tuple[int, ...] = (3, 4, 6, 3)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    stem: int = 64

    @property
    def out_channels(self) -> int:
        return self.widths[-1] * (4 if self.block == "bottleneck" else 1)


@dataclass
class TransformerConfig:
    """Temporal transformer encoder (sec. 3.5: 3 layers, 4 heads, FF 256, no dropout, LayerNorm).

    ``d_model`` None means "the input width"; when the input width is not divisible by ``heads`` (183 for the
    coarse code) a linear layer lifts the input to ``d_model`` first.
    ``positional`` adds sinusoidal positional encodings over the T frames (the paper does not say; without them
    self-attention is permutation invariant and cannot know frame order).
    """

    layers: int = 3
    heads: int = 4
    ff: int = 256
    dropout: float = 0.0
    d_model: int | None = None
    positional: bool = True
    max_len: int = 256


@dataclass
class HeadConfig:
    """The "3 feed-forward layers with ReLU" projection after each transformer (sec. 3.5)."""

    hidden: tuple[int, ...] = (256, 256)


@dataclass
class CoarseConfig:
    """Coarse encoder E_c: ResNet -> per-frame 183-d embedding -> temporal transformer -> 3 FF -> c (183).

    ``embed_hidden`` is the hidden width of DECA's regression head (2048 -> 1024 -> code), kept so DECA's
    ``layers.*`` weights map onto ours.
    """

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    embed_hidden: int = 1024
    transformer: TransformerConfig = field(default_factory=lambda: TransformerConfig(d_model=184))
    head: HeadConfig = field(default_factory=HeadConfig)
    temporal: bool = True
    residual: bool = True
    n_shape: int = 100
    n_albedo: int = 50
    n_light: int = 27
    # Initial orthographic camera scale of a randomly initialised E_c (NDC per model unit); the trainer sets it
    # from the data (the synthetic corpus's cameras are about 5.6). DECA's weights replace it.
    init_cam_scale: float = 8.0
    deca_checkpoint: str | None = None

    @property
    def code_dim(self) -> int:
        return self.n_shape + self.n_albedo + self.n_light + 3 + 3


@dataclass
class AudioEncoderConfig:
    """1D convolutional audio encoder E_a over a (16, F) window: F channels, convolution along the 16 steps."""

    channels: tuple[int, ...] = (64, 128, 256)
    kernel: int = 3
    embed: int = 64


@dataclass
class ExpressionJawConfig:
    """Expression-jaw branch: E_a (audio) and E_v (video) -> concat -> transformer -> 3 FF -> e (53).

    Ablation switches (Table 1): ``modalities`` "video" / "audio" / "av"; ``temporal`` (transformer on/off, off =
    per-frame MLP of the same depth); ``modality_dropout`` with ``p_drop_audio`` / ``p_drop_video``.
    ``dropout_per`` "sequence" zeros a modality for a whole window, "frame" frame by frame.
    ``allow_both_dropped`` False: when both are drawn for dropping, one of them (chosen at random) is kept.
    """

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    video_embed: int = 64
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    modalities: Literal["av", "audio", "video"] = "av"
    temporal: bool = True
    modality_dropout: bool = True
    p_drop_audio: float = 0.4
    p_drop_video: float = 0.5
    dropout_per: Literal["sequence", "frame"] = "sequence"
    allow_both_dropped: bool = False
    n_expression: int = 50
    n_jaw: int = 3


@dataclass
class LandmarkEncoderConfig:
    """The per-frame landmark encoder of E_c and E_v (``AVFaceConfig.landmark_input``): the detector's points
    (``Batch.points``), normalised by the crop (x, y to [-1, 1], depth / half the side), flattened -> an MLP
    (``hidden``) -> ``embed - 1`` features and the validity flag as the last channel; a missing detection is the
    zero embedding with flag 0. Training drops a frame's points with ``p_drop`` (``dropout_per`` "frame" |
    "sequence"), like a dropped modality, so occluded frames learn to lean on the image, audio and time.
    ``point_set`` / ``n_points`` are what the detector gives (the trainer sets them from the shards)."""

    point_set: str = "mediapipe478"
    n_points: int = 478
    hidden: tuple[int, ...] = (256,)
    embed: int = 64
    p_drop: float = 0.2
    dropout_per: Literal["sequence", "frame"] = "frame"


@dataclass
class LipRefinerConfig:
    """SIREN MLP with FiLM layers conditioned on the audio window (NHA geometry network / pi-GAN style).

    Input per lip vertex: its coarse canonical position (centred on the lip centroid, divided by
    ``position_scale`` metres) concatenated with a learned per-vertex feature of size ``vertex_feature``.
    Output: 3D offset per lip vertex, multiplied by ``offset_scale`` metres.
    """

    hidden: int = 128
    layers: int = 4
    vertex_feature: int = 16
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    mapping_hidden: int = 128
    mapping_layers: int = 3
    first_omega: float = 30.0
    position_scale: float = 0.05
    offset_scale: float = 0.01
    zero_without_audio: bool = True


@dataclass
class DetailConfig:
    """Fine stage: UNet-ResNet of Abrevaya et al. 2020 predicting a 1-channel UV displacement D.

    ``backbone`` is the ResNet of the encoder (ResNet-18 in Abrevaya et al.). ``in_channels`` 3 = the input
    image unwrapped to UV space with the coarse geometry; 6 adds the coarse UV normal map.
    The audio window is mapped by a linear layer to one extra channel appended to the output of encoder stage
    ``audio_layer`` (3 = "the encoder's third layer"). D = tanh(raw) * ``displacement_scale`` (metres; DECA's
    detail decoder: at most 0.01).
    """

    backbone: BackboneConfig = field(
        default_factory=lambda: BackboneConfig(block="basic", layers=(2, 2, 2, 2), widths=(64, 128, 256, 512))
    )
    uv_size: int = 256
    in_channels: int = 3
    audio_layer: int = 3
    use_audio: bool = True
    displacement_scale: float = 0.01
    normals_checkpoint: str | None = None


@dataclass
class LossWeights:
    """Loss weights. Paper (sec. 3.5): lambda_l 0.5, lambda_c 1e-4, lambda_n 10, lambda_m 5e-2, lambda_s 5e-3,
    lambda_d 5e-3. The paper's equations use only lambda_n, lambda_m, lambda_s, lambda_d; our reading of the other
    two (documented in docs and the report): lambda_l weights the lip terms of L_coarse taken from EMOCA (mouth
    closure + lip corner), lambda_c weights the coefficient regularisers (shape / expression / albedo, DECA uses
    1e-4 for each). The remaining L_coarse weights are DECA's published values (landmark 1, eye 1, photometric 2,
    identity 0.2, shape consistency 1, lighting regulariser 1).

    ``regularizer_batch_frames``: DECA's coefficient regularisers ``sum(code**2)/2`` sum over its batch; ours take
    the per-frame mean times this many frames (the paper's batch: 4 windows x 16 frames), which keeps DECA's
    strength at that batch and makes the term batch-size invariant. Terms are defined in avface/models/README.md.
    """

    landmark: float = 1.0
    # the detector's 468 MediaPipe points (Batch.points) as a dense 2D target of the starter model's vertices
    # 0..467 (those ids), coarse stage and pretraining; 0 (the paper's losses): off; needs the starter model
    dense_landmarks: float = 0.0
    eye: float = 1.0
    lip: float = 0.5  # lambda_l: mouth closure and lip corner
    photometric: float = 2.0
    identity: float = 0.2
    shape_consistency: float = 1.0
    reg_shape: float = 1e-4  # lambda_c
    reg_expression: float = 1e-4  # lambda_c
    reg_albedo: float = 1e-4  # lambda_c
    light: float = 1.0  # DECA's reg_light
    regularizer_batch_frames: int = 64  # frames DECA's batch-summed regularisers are scaled to
    normals: float = 10.0  # lambda_n (lip-normals in the lip stage, face normals in the fine stage)
    # The lip stage's image frame. "model": its terms see the mesh through the coarse stage's own pose and camera
    # (the paper's eq. 1 as written). "landmarks": through a rotation + camera re-fitted per frame to the image's
    # non-lip landmarks (brows, nose, eyes), so that the refiner corrects the lips relative to the face instead of
    # bending them to make up for the coarse stage's head-pose and camera error (models README, "lip stage").
    lip_frame: str = "landmarks"
    # The lip stage's normals term: "laplacian" (eq. 1 as written) or "lowpass" (the maps blurred instead of
    # high-passed: at 64 px the Laplacian of a map off by a pixel outweighs the lips' shape; models README)
    lip_normals: str = "lowpass"
    # NHA's Laplacian smoothness on the refiner's lip offsets (mm^2 per unit weight; 0: off): the landmark terms
    # see 20 lip points, so without it the offsets of the vertices under them move alone
    lip_smooth: float = 0.0
    detail_photometric: float = 1.0  # L_i in eq. (4) has weight 1
    mrf: float = 5e-2  # lambda_m
    symmetry: float = 5e-3  # lambda_s
    displacement: float = 5e-3  # lambda_d


@dataclass
class AVFaceConfig:
    name: str = "paper"
    image_size: int = 224
    audio_dim: int = 29  # F: 29 DeepSpeech logits, 80 mel bins, ...
    audio_window: int = 16
    # Per-channel mean and spread (F,) of the audio features: the audio encoders (E_a, the lip refiner's)
    # standardise their input with them. The trainer sets them from the shards (TrainConfig.audio_stats_from_data);
    # a checkpoint's config carries them to inference. None: the raw features (log-mel is about -10..5, and the
    # transformer-headed E_a learns the jaw markedly slower from it: 1.75 vs 1.49 deg held-out after 2000 probe steps).
    audio_mean: list[float] | None = None
    audio_std: list[float] | None = None
    window: int = 16  # x = 16 frames
    coarse: CoarseConfig = field(default_factory=CoarseConfig)
    expression: ExpressionJawConfig = field(default_factory=ExpressionJawConfig)
    lip: LipRefinerConfig = field(default_factory=LipRefinerConfig)
    detail: DetailConfig = field(default_factory=DetailConfig)
    losses: LossWeights = field(default_factory=LossWeights)
    # the geometry channel: E_c and E_v also read the landmark detector's points (LandmarkEncoderConfig); False is
    # the paper's image-only model
    landmark_input: bool = False
    landmarks: LandmarkEncoderConfig = field(default_factory=LandmarkEncoderConfig)
    # the model's stages (avface.models.stages.MODEL_STAGES), in order (sec. 3.5): coarse (E_c + expression-jaw),
    # lip (refiner), detail (UNet); a model without "lip" / "detail" has no such network
    stages: tuple[ModelStageName, ...] = ("coarse", "lip", "detail")
    vgg19_weights: str | None = None  # ID-MRF (torchvision VGG19 state dict), user-provided
    identity_weights: str | None = None  # face recognition ResNet-50 state dict, user-provided

    @classmethod
    def paper(cls) -> AVFaceConfig:
        return cls()

    @classmethod
    def tiny(cls) -> AVFaceConfig:
        # E_c and E_v (one architecture: both start from DECA's encoder) twice as wide as the narrowest that runs:
        # pose and camera generalise to new speakers better (held-out pose error 0.77 -> 0.70 of its spread in a
        # 1000-step probe); E_a at the paper's widths (the jaw is read mostly from the audio; 1D convolutions over
        # 16 x 80 cost little beside the image encoders)
        small = BackboneConfig(block="basic", layers=(1, 1, 1, 1), widths=(16, 32, 64, 128), stem=16)
        tr = TransformerConfig(layers=2, heads=2, ff=64, d_model=None)
        head = HeadConfig(hidden=(64, 64))
        audio = AudioEncoderConfig(channels=(16, 32), kernel=3, embed=16)
        expression_audio = AudioEncoderConfig(channels=(64, 128, 256), kernel=3, embed=64)
        return cls(
            name="tiny",
            image_size=64,
            audio_dim=29,
            window=16,
            coarse=CoarseConfig(backbone=small, embed_hidden=128,
                                transformer=TransformerConfig(layers=2, heads=2, ff=64, d_model=184), head=head),
            expression=ExpressionJawConfig(backbone=small, audio=expression_audio, video_embed=16, transformer=tr,
                                           head=head),
            lip=LipRefinerConfig(hidden=32, layers=3, vertex_feature=8, audio=audio, mapping_hidden=32,
                                 mapping_layers=2),
            detail=DetailConfig(backbone=BackboneConfig(block="basic", layers=(1, 1, 1, 1), widths=(8, 16, 32, 64),
                                                        stem=8), uv_size=64),
            landmarks=LandmarkEncoderConfig(hidden=(128,), embed=16),
        )

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: Any) -> AVFaceConfig:
        """Build from a nested mapping (plain dict or OmegaConf DictConfig); unknown keys raise ValueError."""
        return dataclass_from_dict(cls, d)


def _to_plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _to_plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_to_plain(v) for v in x]
    return x


def register_configs() -> None:
    """Register the presets as the options of Hydra's ``model`` group: ``model/paper`` (:meth:`AVFaceConfig.paper`)
    and ``model/tiny`` (:meth:`AVFaceConfig.tiny`)."""
    store_config("paper", AVFaceConfig.paper(), group="model")
    store_config("tiny", AVFaceConfig.tiny(), group="model")

"""The paper's ablation grid (Tables 1-3 of AVFace, CVPR 2023) as configurations of the one model and training.

Each :class:`Row` is a set of switches of the existing ``AVFaceConfig.expression`` (``modalities``, ``temporal``,
``modality_dropout``), the shards' audio features, and which optional stages follow the expression-jaw branch's
training (the lip refiner, the synthetic-occlusion fine-tune): never a separate code path. A row that is another
row's configuration exactly (Table 2's DeepSpeech row = the last row of Table 1 in the paper, ours with mel; Table
3's "without") names it in ``same_as`` and is trained once. :data:`PAPER` holds the paper's numbers beside each row;
:data:`CLAIMS` the paper's statements that the report checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Row", "ROWS", "TABLES", "PAPER", "PAPER_COLUMNS", "Claim", "CLAIMS", "select_rows", "row_by_name"]


@dataclass(frozen=True)
class Row:
    """One configuration of the grid."""

    table: int  # the paper's table (1, 2, 3)
    name: str  # short id: MLflow tag `row`, file names
    label: str  # the paper's row label
    expression: dict[str, Any] = field(default_factory=dict)  # AVFaceConfig.expression overrides
    audio: str = "mel"  # the shards' audio features (AudioConfig.kind)
    lip: bool = False  # + the lip refiner (the paper's lip stage)
    occlusion: bool = False  # + the synthetic-occlusion fine-tune
    same_as: str | None = None  # another row with exactly this configuration (trained once)

    def switches(self) -> dict[str, Any]:
        """What this row sets (printed and logged as the row's config)."""
        return {"expression": dict(self.expression), "audio": self.audio, "lip": self.lip,
                "occlusion": self.occlusion}


_FULL = {"modalities": "av", "modality_dropout": True, "temporal": True}

ROWS: tuple[Row, ...] = (
    Row(1, "video", "e from Video", {"modalities": "video", "modality_dropout": False, "temporal": False}),
    Row(1, "video_temporal", "+ Temporal", {"modalities": "video", "modality_dropout": False, "temporal": True}),
    Row(1, "audio", "e from Audio", {"modalities": "audio", "modality_dropout": False, "temporal": False}),
    Row(1, "audio_temporal", "+ Temporal", {"modalities": "audio", "modality_dropout": False, "temporal": True}),
    Row(1, "av", "e from AV", {"modalities": "av", "modality_dropout": False, "temporal": False}),
    Row(1, "av_dropout", "+ Dropout", {"modalities": "av", "modality_dropout": True, "temporal": False}),
    Row(1, "av_dropout_temporal", "+ Temporal", dict(_FULL)),
    Row(1, "av_dropout_temporal_lip", "+ Lip Refine", dict(_FULL), lip=True),
    Row(2, "feat_mel", "Mel-spectrogram", dict(_FULL), lip=True, same_as="av_dropout_temporal_lip"),
    Row(2, "feat_phones", "Phone posteriors (pocketsphinx; not in the paper)", dict(_FULL), audio="phones",
        lip=True),
    Row(2, "feat_whisper", "Whisper tiny.en encoder (not in the paper)", dict(_FULL), audio="whisper", lip=True),
    Row(2, "feat_wav2vec2", "Wav2vec 2.0", dict(_FULL), audio="wav2vec2", lip=True),
    Row(2, "feat_deepspeech", "DeepSpeech (Ours)", dict(_FULL), audio="deepspeech", lip=True),
    Row(3, "occ_without", "Without synthetic occlusions", dict(_FULL), lip=True, same_as="av_dropout_temporal_lip"),
    Row(3, "occ_with", "With synthetic occlusions", dict(_FULL), lip=True, occlusion=True),
)
TABLES: dict[int, str] = {1: "Table 1: the coarse stage (modalities, modality dropout, temporal, lip refinement)",
                          2: "Table 2: audio features", 3: "Table 3: the synthetic-occlusion fine-tune"}

#: the paper's columns of each table (Table 3's are measured on the occluded test windows)
PAPER_COLUMNS: dict[int, tuple[str, ...]] = {1: ("nme", "auc", "nme_lips", "nme_occ"), 2: ("nme", "auc", "nme_lips"),
                                             3: ("nme", "auc", "nme_lips")}
_P1 = {"video": (2.60, 0.82, 1.78, 2.91), "video_temporal": (1.98, 0.82, 1.33, 2.68),
       "audio": (2.80, 0.81, 2.28, 2.86), "audio_temporal": (2.10, 0.81, 1.56, 2.55),
       "av": (2.91, 0.81, 2.05, 3.02), "av_dropout": (2.14, 0.82, 1.65, 2.79),
       "av_dropout_temporal": (1.73, 0.83, 0.99, 2.42), "av_dropout_temporal_lip": (1.63, 0.84, 0.91, 2.39)}
_P2 = {"feat_mel": (2.20, 0.82, 1.70), "feat_wav2vec2": (1.66, 0.83, 1.11), "feat_deepspeech": (1.63, 0.84, 0.91)}
_P3 = {"occ_without": (2.62, 0.74, 1.98), "occ_with": (2.39, 0.76, 1.73)}
#: the paper's numbers (AVFace, CVPR 2023, Tables 1-3), row name -> column -> value; NME in %
PAPER: dict[str, dict[str, float]] = {
    name: dict(zip(PAPER_COLUMNS[t], v, strict=True)) for t, rows in ((1, _P1), (2, _P2), (3, _P3))
    for name, v in rows.items()}


@dataclass(frozen=True)
class Claim:
    """A statement of the paper: ``better`` beats each of ``than`` on ``metrics`` (lower is better, except AUC)."""

    text: str
    better: str
    than: tuple[str, ...]
    metrics: tuple[str, ...]


CLAIMS: tuple[Claim, ...] = (
    Claim("temporal modelling helps the video-only branch", "video_temporal", ("video",), ("nme", "v3d_mm")),
    Claim("temporal modelling helps the audio-only branch", "audio_temporal", ("audio",), ("nme", "v3d_mm")),
    Claim("plain audio+video concatenation is worse than modality dropout", "av_dropout", ("av",), ("nme", "v3d_mm")),
    Claim("audio + video + dropout + temporal is the best coarse configuration", "av_dropout_temporal",
          ("video", "video_temporal", "audio", "audio_temporal", "av", "av_dropout"), ("nme", "v3d_mm")),
    Claim("lip refinement lowers the lip error", "av_dropout_temporal_lip", ("av_dropout_temporal",),
          ("nme_lips", "lip_mm")),
    Claim("the synthetic-occlusion fine-tune lowers the error on occluded windows", "occ_with", ("occ_without",),
          ("nme_occ",)),
    Claim("DeepSpeech features beat mel-spectrograms and wav2vec 2.0", "feat_deepspeech",
          ("feat_mel", "feat_wav2vec2"), ("nme", "nme_lips")),
)


def row_by_name(name: str) -> Row:
    for row in ROWS:
        if row.name == name:
            return row
    raise ValueError(f"unknown ablation row {name!r}; rows are {[r.name for r in ROWS]}")


def select_rows(names: list[str] | tuple[str, ...] | None = None, tables: list[int] | tuple[int, ...] | None = None
                ) -> list[Row]:
    """The rows asked for (``names``; else every row of ``tables``; else all), in the grid's order, with the rows
    they are ``same_as`` (which train for them)."""
    if names:
        chosen = {row_by_name(n).name for n in names}
    else:
        chosen = {r.name for r in ROWS if not tables or r.table in tables}
    chosen |= {row_by_name(n).same_as for n in list(chosen) if row_by_name(n).same_as}
    return [r for r in ROWS if r.name in chosen]

"""Which trained model to reconstruct with: a checkpoint path, ``models:/NAME@ALIAS`` or the newest checkpoint."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

NO_CHECKPOINT_HINT = ("train one with `python pipelines/train.py ...` (see README), or pass --checkpoint PATH or "
                      "--checkpoint models:/NAME@ALIAS")


class CheckpointNotFoundError(FileNotFoundError):
    """No checkpoint to reconstruct with; the message says how to get one."""


@dataclass
class LoadedModel:
    model: torch.nn.Module
    face_model: torch.nn.Module
    audio_kind: str
    audio_cfg: dict[str, Any]
    source: str
    meta_summary: dict[str, Any] = field(default_factory=dict)


def load_for_inference(checkpoint: str | os.PathLike | None, device: str) -> LoadedModel:
    from avface.train.checkpoints import find_latest_checkpoint, load_trained  # moved to the top after the merge

    if checkpoint is None:
        found = find_latest_checkpoint(Path("outputs"))
        if found is None:
            raise CheckpointNotFoundError(
                f"no --checkpoint given and no checkpoint under outputs/; {NO_CHECKPOINT_HINT}")
        checkpoint = found
    tm = load_trained(checkpoint, device)
    return LoadedModel(tm.model, tm.face_model, tm.audio_kind, {}, str(checkpoint), {})

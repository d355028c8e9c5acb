"""Which validated weights a training stage exports: model selection on the held-out validation.

``selection = Selection(monitor)``; at every validation ``selection.offer(metrics)`` says whether these weights
are the stage's new best (lower ``monitor`` is better). The stage's starting weights are the first candidate
(``offer(metrics, start=True)``), so a stage never ends worse on its monitor than it began. With ``guarded``, a
fine-tuning stage also may not trade one held-out error for another: a candidate whose all-vertex, lip or
expression error (``SCORE_TERMS``, clean windows) is above the start's is not selected, whatever its monitor says.
Without ground truth (real data) the monitor falls back to the landmark NME and there is nothing to guard.

The selected weights are kept on disk (``best.pt`` beside the stage's ``final.pt``), so that a stage killed and
resumed still exports them: ``kept_best_state(path, step, best)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from avface.models.stages import STAGE_TABLE
from avface.train.validation import SCORE_TERMS
from avface.trained.checkpoints import read_checkpoint

__all__ = ["STAGE_MONITOR", "FALLBACK_MONITOR", "Selection", "kept_best_state"]

#: the validation metric each stage early-stops and selects its final model on (lower is better;
#: ``STAGE_TABLE[stage].monitor``); without ground truth (real data) every stage falls back to the landmark NME
STAGE_MONITOR = {stage: spec.monitor for stage, spec in STAGE_TABLE.items()}
FALLBACK_MONITOR = "val/nme"


@dataclass
class Selection:
    """The selection state of one stage; ``state()`` / ``from_state`` carry it through a checkpoint's extras."""

    monitor: str
    guarded: bool = False
    best: float = math.inf
    stale: int = 0  # validations since the last selected candidate (early stopping)
    guard_start: dict[str, float] | None = None  # the start's guarded errors, mm

    def score(self, metrics: dict[str, float]) -> float:
        return metrics.get(self.monitor, metrics.get(FALLBACK_MONITOR, math.nan))

    def regressed(self, metrics: dict[str, float]) -> list[str]:
        """The guarded errors that ``metrics`` has above the start's (none without a guard)."""
        if not self.guard_start:
            return []
        return [k for k, v in self.guard_start.items() if metrics.get(f"val/{k}", math.inf) > v]

    def offer(self, metrics: dict[str, float], start: bool = False) -> bool:
        """True when the validated weights behind ``metrics`` are the new best; ``start``: the stage's starting
        weights, always selected (and, guarded, the reference of the guard)."""
        score = self.score(metrics)
        if start:
            self.best, self.stale = score, 0
            if self.guarded:
                self.guard_start = {k: metrics[f"val/{k}"] for k in SCORE_TERMS if f"val/{k}" in metrics} or None
            return True
        if score < self.best and not self.regressed(metrics):
            self.best, self.stale = score, 0
            return True
        self.stale += 1
        return False

    def state(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "guarded": self.guarded, "best": self.best, "stale": self.stale,
                "guard_start": self.guard_start}

    @classmethod
    def from_state(cls, monitor: str, guarded: bool, extras: dict[str, Any]) -> Selection:
        """The state a checkpoint's extras carry (checkpoints without it: nothing selected yet)."""
        return cls(monitor, guarded, best=float(extras.get("best", math.inf)), stale=int(extras.get("stale", 0)),
                   guard_start=extras.get("guard_start"))


def kept_best_state(path: str | Path, step: int, best: float) -> dict[str, torch.Tensor] | None:
    """The selected weights kept at ``path`` (``AVFace.trainable_state_dict()``) for a stage resumed at ``step``
    whose selection's best is ``best``; None when there are none, or when they are not that best: a file written
    after the resumed checkpoint (the run was killed in between) belongs to steps the resumed run repeats."""
    path = Path(path)
    if not path.is_file() or not math.isfinite(best):
        return None
    kept = read_checkpoint(path)
    if int(kept["step"]) > step or float(kept["extras"].get("best", math.nan)) != best:
        return None
    return kept["model"]

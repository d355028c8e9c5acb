"""The true face of a window with ground truth, and the two baseline faces every 3D error is reported beside.

Baselines: ``mean_face`` (zero shape and expression, the true pose) and ``constant`` (zero shape, the training
set's mean expression and jaw: on the synthetic corpus already well below the mean face, so the one to beat).
Shared by validation (``avface.train.validation``) and the evaluation (``avface.evaluate.faceset``); the errors
themselves are :func:`avface.metrics.vertices.vertex_errors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Baselines", "flat_frames", "ground_truth_vertices"]


@dataclass
class Baselines:
    """Training-set mean expression (NE,) and jaw (3,) (the constant-expression baseline)."""

    mean_expression: torch.Tensor
    mean_jaw: torch.Tensor

    @classmethod
    def from_statistics(cls, stats: dict[str, dict[str, list]]) -> Baselines:
        """From ``target_statistics`` (``avface.data.shard_index``): name -> {"mean", "std"} lists."""
        return cls(torch.tensor(stats["expression"]["mean"], dtype=torch.float32),
                   torch.tensor(stats["jaw"]["mean"], dtype=torch.float32))


def flat_frames(x: torch.Tensor) -> torch.Tensor:
    """(B, T, ...) -> (B*T, ...)."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def ground_truth_vertices(face_model: torch.nn.Module, targets: Any, expression: torch.Tensor | None = None,
                          jaw: torch.Tensor | None = None, shape: torch.Tensor | None = None,
                          lip_detail: bool | None = None) -> torch.Tensor:
    """Vertices (N, V, 3) of the true parameters (full pose: global, neck, jaw, eyes), N = B*T; ``expression``
    (N, NE) / ``jaw`` (N, 3) / ``shape`` (N, NS) replace the true ones (baselines, expression error).

    ``face_model``: the ``avface.face_model.FaceModel``; ``targets``: a ``ParamTargets`` of ``(B, T, k)`` fields
    (``avface.models.inputs``). ``lip_detail``: add the targets' lip detail (the lips' motion outside the
    expression space, when the targets carry it). Default: only for the true mesh itself (nothing replaced); a face
    made of replaced parameters is what a model of those parameters could show, which has no lip detail."""
    if lip_detail is None:
        lip_detail = expression is None and jaw is None and shape is None
    detail = flat_frames(targets.lip_detail) if lip_detail and targets.lip_detail is not None else None
    out = face_model(shape=flat_frames(targets.shape) if shape is None else shape,
                     expression=flat_frames(targets.expression) if expression is None else expression,
                     global_pose=flat_frames(targets.global_pose), neck_pose=flat_frames(targets.neck_pose),
                     jaw_pose=flat_frames(targets.jaw) if jaw is None else jaw, eye_pose=flat_frames(targets.eye_pose),
                     lip_detail=detail)
    return out.vertices

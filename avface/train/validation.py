"""Validation on held-out speakers: landmark NME (inter-ocular), lip NME, and on clips with ground truth the 3D
errors, always beside the two baselines computed the same way on the same windows (the true and baseline faces
and the errors are ``avface.metrics``: :mod:`~avface.metrics.ground_truth`, :func:`~avface.metrics.vertex_errors`).

3D errors (mm, mean over frames): ``v3d`` all vertices after a per-frame similarity alignment (fit on all
vertices), ``lip`` the lip vertices under that same alignment, ``expression`` the predicted expression and jaw on
the true shape and pose (no alignment: only the expression differs). Baselines:
``mean_face`` (zero shape and expression, the tracked pose) and ``constant`` (zero shape, the training set's mean
expression and jaw: on the synthetic corpus already well below the mean face, so the one to beat).
Normals (detail stage): mean angle in degrees between the rendered normals and the shards' pseudo-ground-truth
normals on the face pixels, for the coarse and the detailed surface.
"""

from __future__ import annotations

import numpy as np
import torch

from avface.face_model.lbs import batch_rodrigues
from avface.face_model.lip_detail import canonical_offsets_to_posed
from avface.metrics.ground_truth import Baselines, flat_frames, ground_truth_vertices
from avface.metrics.landmarks import landmark_nme, lip_nme
from avface.metrics.vertices import vertex_errors
from avface.models.avface import AVFace
from avface.render.cameras import ndc_to_pixels

#: the errors whose mean is the selection score ``score_mm``
SCORE_TERMS = ("v3d_mm", "lip_mm", "expression_mm")

__all__ = ["SCORE_TERMS", "normal_angle_deg", "validate"]


def normal_angle_deg(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean angle (degrees) between unit normal maps pred, target (N, 3, H, W) where mask (N, 1, H, W) > 0.5 and
    the target has a normal."""
    m = (mask[:, 0] > 0.5) & (target.norm(dim=1) > 0.5)
    cos = (torch.nn.functional.normalize(pred, dim=1) * target).sum(1).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cos[m])).mean() if m.any() else torch.tensor(float("nan"))



@torch.no_grad()
def validate(model: AVFace, batches: list, baselines: Baselines | None = None,
             prefix: str = "val/") -> dict[str, float]:
    """Metrics of ``model`` (eval mode, its current stage) over ``batches`` (a fixed list of held-out Batches)."""
    fm = model.face_model
    lip_ids = torch.as_tensor(fm.region("lips")).long()
    was_training = model.training
    model.eval()
    acc: dict[str, list[np.ndarray]] = {}

    def add(name: str, v: torch.Tensor | np.ndarray) -> None:
        acc.setdefault(name, []).append(np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v).ravel())

    for batch in batches:
        out = model(batch)
        size = batch.images.shape[-1]
        valid = flat_frames(batch.landmarks_valid).cpu().numpy()
        pred = ndc_to_pixels(flat_frames(out.landmarks2d), size).cpu().numpy()[valid]
        gt = flat_frames(batch.landmarks).cpu().numpy()[valid]
        if len(gt):
            add("nme", landmark_nme(pred, gt))
            add("lip_nme", lip_nme(pred, gt))
        if batch.targets is not None:
            tg = batch.targets
            gt_v = ground_truth_vertices(fm, tg)
            v3d, lip = vertex_errors(flat_frames(out.vertices), gt_v, lip_ids)
            add("v3d_mm", v3d)
            add("lip_mm", lip)
            expr_v = ground_truth_vertices(fm, tg, expression=flat_frames(out.expression), jaw=flat_frames(out.jaw))
            if out.lip_offsets is not None:  # the refined lips' offsets are part of the predicted motion
                expr_v = expr_v + canonical_offsets_to_posed(flat_frames(out.lip_offsets),
                                                             batch_rodrigues(flat_frames(tg.global_pose)), lip_ids,
                                                             expr_v.shape[1])
            add("expression_mm", (expr_v - gt_v).norm(dim=-1).mean(1) * 1000.0)
            if baselines is not None:
                n = gt_v.shape[0]
                zero_shape = torch.zeros_like(flat_frames(tg.shape))
                mean_e = baselines.mean_expression.to(gt_v)[None].expand(n, -1)
                mean_j = baselines.mean_jaw.to(gt_v)[None].expand(n, -1)
                for name, verts in (
                        ("mean_face", ground_truth_vertices(fm, tg, torch.zeros_like(mean_e),
                                                            torch.zeros_like(mean_j), zero_shape)),
                        ("constant", ground_truth_vertices(fm, tg, mean_e, mean_j, zero_shape))):
                    v, lp = vertex_errors(verts, gt_v, lip_ids)
                    add(f"{name}/v3d_mm", v)
                    add(f"{name}/lip_mm", lp)
                const_e = ground_truth_vertices(fm, tg, expression=mean_e, jaw=mean_j)
                add("constant/expression_mm", (const_e - gt_v).norm(dim=-1).mean(1) * 1000.0)
        if batch.normals is not None and model.renderer is not None:
            target = flat_frames(batch.normals)
            for tag in ("coarse", "detail"):
                normals, alpha = getattr(out, f"normals_{tag}", None), getattr(out, f"alpha_{tag}", None)
                if normals is None and tag == "coarse" and out.vertices is not None:
                    coarse = model.render(out, "coarse")
                    normals, alpha = coarse.normals_coarse, coarse.alpha_coarse
                if normals is not None:
                    add(f"normal_deg_{tag}", normal_angle_deg(flat_frames(normals), target, flat_frames(alpha)))
    model.train(was_training)
    out = {f"{prefix}{k}": float(np.nanmean(np.concatenate(v))) for k, v in acc.items()}
    if all(f"{prefix}{k}" in out for k in SCORE_TERMS):
        # one number for model selection: the identity (3D), the mouth (lip) and the expression errors alike
        out[f"{prefix}score_mm"] = float(np.mean([out[f"{prefix}{k}"] for k in SCORE_TERMS]))
    return out

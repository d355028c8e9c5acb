"""FaceSet-style evaluation (the paper's Table 4) over the held-out test shards, with the baselines computed by the
same harness on the same windows.

Every held-out window (``split``, 16 frames) goes through the model in eval mode; its occluded copies
(``occluded_split``) give the NME on occluded windows. Methods (rows):

``AVFace (ours)``           the model, windows of 16 frames (temporal transformers over the window)
``per-frame (window 1)``    the same model on windows of ONE frame (every frame its own window: the transformers see
                            a sequence of length 1), i.e. the model without temporal context
``video only``              audio zeroed as in modality dropout (``audio_valid = False``)
``audio only``              the expression branch's video embedding zeroed (``video_valid = False``); pose, shape and
                            camera still come from the coarse encoder's images
``AVFace + landmark fit``   the model's prediction fitted at test time to the window's landmarks (``avface
                            reconstruct --refine landmarks``, :mod:`avface.inference.refine`; frames without valid
                            landmarks keep the model's values). On the synthetic corpus the window's landmarks are
                            the exact points that the NME is measured against (the fit's best case)
``mean face``               zero shape, expression and jaw with the true pose and camera (no model)
``constant expression``     zero shape, the training set's mean expression and jaw, the true pose and camera

Columns: 2D landmark NME / AUC / lip NME / NME occ (inter-ocular, ``avface.metrics``) on frames with valid
landmarks; on windows with ground-truth parameters (the synthetic corpus): ``vertex_error_mm`` (per frame, mean
vertex distance after a similarity alignment onto the true mesh, ``avface.metrics.vertex_errors``),
``lve_mm2`` (lip vertex error on the aligned meshes: max over lip vertices of the squared error, mean over frames)
and ``jitter`` (mean vertex acceleration of the predicted sequence, mm / frame^2).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from avface.data.batch import Batch, samples_to_batch
from avface.data.shard_index import ShardIndex
from avface.evaluate.config import FaceSetEvalConfig
from avface.evaluate.results import MethodResult, faceset_summary
from avface.evaluate.tables import write_frame_results
from avface.face_model.lbs import batch_rodrigues
from avface.face_model.lip_detail import canonical_offsets_to_posed
from avface.fitting.landmarks import FitParams, RefineConfig, fit_landmarks, landmark_rig, lip_landmark_offsets
from avface.metrics import (
    Baselines,
    apply_similarity,
    ground_truth_vertices,
    jitter,
    landmark_nme,
    lip_nme,
    lip_vertex_error,
    similarity_procrustes,
    vertex_errors,
)
from avface.models.avface import AVFace
from avface.models.outputs import AVFaceOutput
from avface.render.cameras import ndc_to_pixels, pixels_to_ndc

__all__ = ["OURS", "REFINED", "MODEL_METHODS", "refined_output",
           "BASELINE_METHODS", "FaceSetOutcome", "per_frame_batch", "evaluate_faceset"]

OURS = "AVFace (ours)"
REFINED = "AVFace + landmark fit"
MODEL_METHODS: tuple[str, ...] = (OURS, REFINED, "per-frame (window 1)", "video only", "audio only")
BASELINE_METHODS: tuple[str, ...] = ("mean face", "constant expression")


@dataclass
class FaceSetOutcome:
    """Rows of Table 4, per-frame NMEs by method (CED plot), mean per-vertex aligned error (V,) mm by method (heat
    maps), per-frame rows for the parquet data set (empty when they were written as they came), failures (one
    dict per bad window / split) and notes."""

    results: list[MethodResult]
    nme: dict[str, np.ndarray]
    vertex_errors: dict[str, np.ndarray]
    frame_rows: list[dict]
    failures: list[dict]
    notes: dict[str, str] = field(default_factory=dict)
    num_frame_rows: int = 0  # returned in frame_rows or written under frames_root


def per_frame_batch(batch: Batch) -> Batch:
    """(B, T) windows -> (B*T, 1): every frame its own window (the model without temporal context)."""
    b, t = batch.images.shape[:2]

    def flat(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x.reshape(b * t, 1, *x.shape[2:])

    return Batch(images=flat(batch.images), landmarks=flat(batch.landmarks),
                 landmarks_valid=flat(batch.landmarks_valid), audio_valid=flat(batch.audio_valid),
                 video_valid=flat(batch.video_valid), identity=batch.identity.repeat_interleave(t),
                 audio=flat(batch.audio), occlusion_mask=flat(batch.occlusion_mask), points=flat(batch.points),
                 points_valid=flat(batch.points_valid))


def _unflat(x: torch.Tensor, b: int, t: int) -> torch.Tensor:
    """(B*T, 1, ...) -> (B, T, ...)."""
    return x.reshape(b, t, *x.shape[2:])


def refined_output(model: AVFace, batch: Batch, out: AVFaceOutput,
                   config: RefineConfig | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The model's output ``out`` of ``batch`` fitted to the batch's landmarks, each window a sequence (as the
    reconstruction fits a chunk): -> (vertices (B,T,V,3), landmarks2d (B,T,68,2) NDC, refined (B,T) bool). The lip
    offsets (lip stage on) are kept, rotated with the fitted head."""
    fm = model.face_model
    b, t = out.shape.shape[:2]
    rig = landmark_rig(fm)  # milliseconds: not worth a cache
    init = FitParams(out.shape, out.expression, out.jaw, out.global_pose, out.cam)
    offsets = None
    lip_ids = getattr(model, "lip_ids", None)
    if out.lip_offsets is not None and lip_ids is not None:
        offsets = lip_landmark_offsets(fm, out.lip_offsets.reshape(b * t, -1, 3), lip_ids).reshape(b, t, 68, 3)
    target = pixels_to_ndc(batch.landmarks.to(out.cam), batch.images.shape[-2:])
    valid = batch.landmarks_valid.bool() if batch.landmarks_valid is not None else torch.ones(b, t, dtype=torch.bool)
    res = fit_landmarks(rig, init, target, valid.to(target.device), config, offsets)
    p = res.params
    code = AVFaceOutput(shape=p.shape, albedo=out.albedo, light=out.light, global_pose=p.global_pose, cam=p.cam,
                        expression=p.expression, jaw=p.jaw)
    verts = model.decode(code).vertices
    if out.lip_offsets is not None and lip_ids is not None:
        rot = batch_rodrigues(p.global_pose.reshape(b * t, 3))
        verts = verts + canonical_offsets_to_posed(out.lip_offsets.reshape(b * t, -1, 3), rot, lip_ids,
                                                   verts.shape[2]).reshape(verts.shape)
    return verts, res.landmarks2d, res.refined


def _run_method(model: AVFace, batch: Batch, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (vertices (B,T,V,3) m, landmarks2d (B,T,68,2) NDC) of one model method."""
    b, t = batch.images.shape[:2]
    if method == OURS:
        out = model(batch)
    elif method == REFINED:
        return refined_output(model, batch, model(batch))[:2]
    elif method == "per-frame (window 1)":
        out = model(per_frame_batch(batch))
        return _unflat(out.vertices, b, t), _unflat(out.landmarks2d, b, t)
    elif method == "video only":
        out = model(dataclasses.replace(batch, audio_valid=torch.zeros_like(batch.audio_valid)))
    elif method == "audio only":
        out = model(dataclasses.replace(batch, video_valid=torch.zeros_like(batch.video_valid)))
    else:
        raise ValueError(f"unknown model method {method!r}")
    return out.vertices, out.landmarks2d


def _baseline(model: AVFace, batch: Batch, method: str, baselines: Baselines) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean face / constant expression: vertices with the true full pose (ground_truth_vertices), 2D landmarks
    with the true global pose, jaw and camera through the model's own decoder (its landmark projection)."""
    tg = batch.targets
    b, t = tg.shape.shape[:2]
    zero_shape = torch.zeros_like(tg.shape)
    if method == "mean face":
        expr, jaw = torch.zeros_like(tg.expression), torch.zeros_like(tg.jaw)
    elif method == "constant expression":
        expr = baselines.mean_expression.to(tg.expression)[None, None].expand_as(tg.expression)
        jaw = baselines.mean_jaw.to(tg.jaw)[None, None].expand_as(tg.jaw)
    else:
        raise ValueError(f"unknown baseline {method!r}")
    verts = ground_truth_vertices(model.face_model, tg, expr.reshape(b * t, -1), jaw.reshape(b * t, -1),
                                  zero_shape.reshape(b * t, -1)).reshape(b, t, -1, 3)
    code = AVFaceOutput(shape=zero_shape, albedo=None, light=None, global_pose=tg.global_pose, cam=tg.cam,
                        expression=expr, jaw=jaw)
    return verts, model.decode(code).landmarks2d


def _read_windows(index: ShardIndex, rows: list[int], failures: list[dict], split: str) -> list[dict]:
    samples = []
    for r in rows:
        try:
            samples.append(index.read(r))
        except (ValueError, OSError) as e:  # a corrupt sample: reported, the rest is evaluated
            failures.append({"table": "faceset", "item": str(index.table.iloc[r]["key"]), "split": split,
                             "problem": str(e)})
    return samples


class _Acc:
    """Per-method lists of per-frame / per-window numbers."""

    def __init__(self) -> None:
        self.d: dict[str, dict[str, list[np.ndarray]]] = {}

    def add(self, method: str, name: str, v) -> None:
        v = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
        self.d.setdefault(method, {}).setdefault(name, []).append(np.ravel(v).astype(np.float64))

    def get(self, method: str, name: str) -> np.ndarray | None:
        vs = self.d.get(method, {}).get(name)
        return np.concatenate(vs) if vs else None


@torch.no_grad()
def evaluate_faceset(model: AVFace, cfg: FaceSetEvalConfig, baselines: Baselines | None,
                     frames_root: str | Path | None = None) -> FaceSetOutcome:
    """Evaluate ``model`` (eval mode) on ``cfg.shards`` (see the module docstring). ``frames_root``: write the
    per-frame rows there batch by batch (partitioned parquet, :func:`avface.evaluate.write_frame_results`) instead
    of returning them in ``frame_rows``."""
    model.eval()
    fm = model.face_model
    lip_ids = torch.as_tensor(fm.region("lips")).long()
    size = int(model.config.image_size)
    dev = next(model.parameters()).device
    failures: list[dict] = []
    acc, vsum, vcount = _Acc(), {}, {}
    rows_out: list[dict] = []
    n_rows = 0
    gt_jitter: list[float] = []

    def splits() -> list[tuple[str, bool]]:
        out = [(cfg.split, False)]
        if cfg.occluded_split:
            out.append((cfg.occluded_split, True))
        return out

    for split, occluded in splits():
        try:
            index = ShardIndex.build(cfg.shards, [split])
        except (ValueError, FileNotFoundError) as e:  # an empty / missing split: reported, the rest goes on
            failures.append({"table": "faceset", "item": split, "split": split, "problem": str(e)})
            continue
        rows = [int(r) for r in index.spread(cfg.max_occluded_windows if occluded else cfg.max_windows)]
        step = max(cfg.batch_windows, 1)
        for i in range(0, len(rows), step):  # read batch by batch: memory does not grow with the test set
            chunk = _read_windows(index, rows[i:i + step], failures, split)
            if not chunk:
                continue
            batch = samples_to_batch(chunk, size)
            mb = batch if dev.type == "cpu" else batch.to(dev)  # the model's copy; metrics on the CPU
            b, t = batch.images.shape[:2]
            valid = batch.landmarks_valid.reshape(-1).numpy()
            gt_lmk = batch.landmarks.reshape(b * t, 68, 2).numpy()
            tg = batch.targets
            gt_v = ground_truth_vertices(fm, mb.targets).cpu() if tg is not None else None
            if gt_v is not None and not occluded:
                gt_jitter += [jitter(w) for w in gt_v.reshape(b, t, -1, 3).double()]
            methods = list(MODEL_METHODS) + (list(BASELINE_METHODS) if tg is not None and baselines else [])
            for method in methods:
                if method in MODEL_METHODS:
                    verts, lmk2 = _run_method(model, mb, method)
                else:
                    verts, lmk2 = _baseline(model, mb, method, baselines)
                verts, lmk2 = verts.float().cpu(), lmk2.float().cpu()
                pred = ndc_to_pixels(lmk2.reshape(b * t, 68, 2), size).numpy()
                nme = np.full(b * t, np.nan)
                nme_l = np.full(b * t, np.nan)
                if valid.any():
                    nme[valid] = landmark_nme(pred[valid], gt_lmk[valid])
                    nme_l[valid] = lip_nme(pred[valid], gt_lmk[valid])
                acc.add(method, "nme_occ" if occluded else "nme", nme[valid])
                v3d = np.full(b * t, np.nan)
                if not occluded:
                    acc.add(method, "nme_lips", nme_l[valid])
                    if gt_v is not None:
                        pv = verts.reshape(b * t, -1, 3)
                        v3d = vertex_errors(pv, gt_v, lip_ids)[0].numpy()
                        acc.add(method, "vertex_error_mm", v3d)
                        aligned = apply_similarity(pv.double(), similarity_procrustes(pv.double(), gt_v.double()))
                        per_vertex = torch.linalg.norm(aligned - gt_v.double(), dim=-1) * 1000.0  # (N, V)
                        vsum[method] = vsum.get(method, 0.0) + per_vertex.sum(0).numpy()
                        vcount[method] = vcount.get(method, 0) + per_vertex.shape[0]
                        al, g = aligned.reshape(b, t, -1, 3), gt_v.double().reshape(b, t, -1, 3)
                        acc.add(method, "lve_mm2", [lip_vertex_error(al[k], g[k], lip_ids) for k in range(b)])
                    acc.add(method, "jitter", [jitter(w) for w in verts.double()])
                for k, key in enumerate(batch.keys):
                    speaker = str(chunk[k]["meta"].get("identity", key.split("/")[1] if "/" in key else key))
                    for f in range(t):
                        n = k * t + f
                        rows_out.append({"method": method, "speaker": speaker, "key": key, "frame": f,
                                         "split": split, "occluded": occluded, "nme": float(nme[n]),
                                         "nme_lips": float(nme_l[n]), "vertex_error_mm": float(v3d[n])})
            if frames_root is not None and rows_out:
                write_frame_results(rows_out, frames_root, name=f"{split}-{i:08d}")
                n_rows += len(rows_out)
                rows_out = []
    results, nmes = [], {}
    for method in list(MODEL_METHODS) + list(BASELINE_METHODS):
        nme = acc.get(method, "nme")
        if nme is None or not np.isfinite(nme).any():
            continue
        extra = {k: float(np.nanmean(v)) for k in ("vertex_error_mm", "lve_mm2", "jitter")
                 if (v := acc.get(method, k)) is not None and len(v)}
        occ = acc.get(method, "nme_occ")
        results.append(MethodResult(method, "faceset", faceset_summary(nme, acc.get(method, "nme_lips"), occ,
                                                                         **extra), count=int(np.isfinite(nme).sum()),
                                    notes="baseline: true pose and camera, no model" if method in BASELINE_METHODS
                                    else ""))
        nmes[method] = nme
    if not results:
        failures.append({"table": "faceset", "item": cfg.split, "split": cfg.split,
                         "problem": f"{cfg.shards}: no window with valid landmarks was evaluated"})
    notes = {"faceset ground-truth jitter (mm/frame²)": f"{np.mean(gt_jitter):.3f}"} if gt_jitter else {}
    return FaceSetOutcome(results, nmes, {m: vsum[m] / vcount[m] for m in vsum}, rows_out, failures, notes,
                          n_rows + len(rows_out))

"""Multiface evaluation (the paper's Table 5): per frame, reconstruct from the frontal camera and score the NoW-style
scan-to-mesh error against the tracked mesh, coarse and detailed, beside the mean-face baseline.

One Ray task per segment (:func:`evaluate_segment`):

1. crops: every 30 fps frame of the frontal camera cropped around the tracked face (a square box of side
   ``crop_scale`` (default: the model's, from its input contract) x the extent of the projected 68 landmarks of
   the tracked mesh: the dataset's tracking stands in for a face detector), written with the segment's audio as a
   30 fps mp4; frames listed without a mesh hold the previous crop so the timeline stays aligned with the audio;
2. the inference API (:class:`avface.inference.Reconstructor`, ``crop=none`` on those crops): cached sliding
   windows on the model's timeline (the frame rate it was trained at), interpolated back to the 30 fps frames;
3. per scored frame and method, :func:`avface.metrics.scan_to_mesh` (crop around the scan's 7 NoW landmarks,
   landmark Procrustes, rigid + scale refinement) of the tracked mesh (mm) against the predicted mesh in its head
   frame; the distances of every cropped scan vertex are written as partitioned parquet
   (``<out>/parquet/multiface_distances/method=<m>/speaker=<identity>/``) and per-frame stats beside them.

The driver aggregates the distances with ``dask.dataframe`` on Ray (:func:`avface.evaluate.aggregate_frame_results`):
median / mean / std over all cropped scan vertices of all frames, as NoW does. Rows: ``AVFace (ours)`` (coarse
mesh, with the lip offsets of a lip-stage model), ``AVFace (ours, detailed)`` (plus the detail displacement along
the vertex normals; only for a model with the detail stage), ``mean face`` (the face model's template). Scan
landmarks: the synthetic stand-in's ``landmarks3d_mm`` sidecar; for a tracked-mesh topology the face model shares
(same vertex count), the face model's landmark embedding on the scan; real Multiface meshes (7,306 vertices)
have neither: give ``multiface.landmark_vertices`` (68 vertex ids of that topology), else their segments are
reported as failures.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from avface.data.multiface import MultifaceSegment, read_multiface
from avface.evaluate.config import MultifaceEvalConfig
from avface.evaluate.faceset import OURS
from avface.evaluate.results import MethodResult
from avface.evaluate.tables import aggregate_frame_results, write_frame_results
from avface.face_model import vertices2landmarks
from avface.inference.checkpoint import audio_config_for
from avface.inference.reconstruct import ReconstructConfig, Reconstructor
from avface.io.media import write_mp4
from avface.landmarks.crop import crop_resize
from avface.metrics import NOW_LANDMARKS_68, jitter, mesh_vertex_errors, scan_to_mesh
from avface.trained.checkpoints import load_trained

log = logging.getLogger(__name__)

__all__ = ["DETAILED", "MEAN_FACE", "SegmentOutcome", "MultifaceOutcome", "face_boxes", "evaluate_segment",
           "evaluate_multiface", "panels_of"]

DETAILED = "AVFace (ours, detailed)"
MEAN_FACE = "mean face"
DISTANCES = "multiface_distances"
FRAMES = "multiface_frames"


@dataclass
class SegmentOutcome:
    identity: str
    segment: str
    frames_scored: int = 0
    jitter: dict[str, float] = field(default_factory=dict)
    gt_jitter: float = float("nan")
    panels: list[dict] = field(default_factory=list)  # heat-map panels: title, vertices, faces, errors
    failures: list[dict] = field(default_factory=list)


@dataclass
class MultifaceOutcome:
    results: list[MethodResult]
    segments: list[SegmentOutcome]
    failures: list[dict]
    parquet: Path | None
    notes: dict[str, str] = field(default_factory=dict)


def face_boxes(points2d: np.ndarray, crop_scale: float) -> np.ndarray:
    """Square crop boxes around landmarks. points2d: (T, K, 2) pixels -> (T, 4) [x0, y0, x1, y1]."""
    lo, hi = points2d.min(1), points2d.max(1)
    centre, side = (lo + hi) / 2, crop_scale * (hi - lo).max(1)
    return np.concatenate([centre - side[:, None] / 2, centre + side[:, None] / 2], axis=1).astype(np.float32)


def _landmarks(vertices: torch.Tensor, fm) -> torch.Tensor:
    """Static 68-point embedding of the face model on (N, V, 3) vertices -> (N, 68, 3)."""
    n = vertices.shape[0]
    v = vertices.to(fm.faces.device, torch.float32)
    return vertices2landmarks(v, fm.faces, fm.lmk68_faces[None].expand(n, -1),
                              fm.lmk68_bary[None].expand(n, -1, -1)).cpu()


def read_landmark_vertices(path: str | os.PathLike, num_vertices: int) -> np.ndarray:
    """(68,) int vertex ids from a ``.npy`` or text file; errors name the file."""
    path = Path(path)
    try:
        ids = np.load(path, allow_pickle=False) if path.suffix == ".npy" else np.loadtxt(path, dtype=np.int64)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable list of landmark vertex ids: {e}") from e
    ids = np.asarray(ids).reshape(-1)
    if ids.size != 68 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{path}: expected 68 integer vertex ids (iBUG order), got {ids.size} of {ids.dtype}")
    if ids.min() < 0 or ids.max() >= num_vertices:
        raise ValueError(f"{path}: vertex ids must be in [0, {num_vertices}), got {ids.min()}..{ids.max()}")
    return ids.astype(np.int64)


def _scan_landmarks(seg: MultifaceSegment, meshes: np.ndarray, fm, landmark_vertices: str | None = None
                    ) -> np.ndarray:
    """(T, 68, 3) mm landmarks on the tracked meshes of ``seg.frames``: the configured vertex ids, else the
    synthetic sidecar's, else the face model's embedding when the meshes share its topology."""
    if landmark_vertices:
        return meshes[:, read_landmark_vertices(landmark_vertices, meshes.shape[1])]
    gt = seg.synthetic_ground_truth()
    if gt is not None and "landmarks3d_mm" in gt:
        pos = {int(f): i for i, f in enumerate(gt["frames"])}
        missing = [int(f) for f in seg.frames if int(f) not in pos]
        if missing:
            raise ValueError(f"{seg.root.parent / 'gt' / seg.identity}/{seg.segment}.npz: no landmarks for frames "
                             f"{missing[:5]}")
        return gt["landmarks3d_mm"][[pos[int(f)] for f in seg.frames]].astype(np.float64)
    if meshes.shape[1] == fm.num_vertices:
        return _landmarks(torch.as_tensor(meshes, dtype=torch.float32), fm).double().numpy()
    raise ValueError(f"{seg.root / 'tracked_mesh' / seg.segment}: no landmarks on the {meshes.shape[1]}-vertex "
                     f"tracked meshes (neither a landmarks3d_mm sidecar nor the face model's topology): give "
                     "multiface.landmark_vertices=<68 vertex ids of this topology>")


def _scored(frames: np.ndarray, max_frames: int) -> np.ndarray:
    if max_frames and max_frames < len(frames):
        return frames[np.unique(np.linspace(0, len(frames) - 1, num=max_frames).astype(int))]
    return frames


@torch.no_grad()
def evaluate_segment(checkpoint: str, seg: MultifaceSegment, cfg: MultifaceEvalConfig, out: str,
                     heatmap_frames: int = 0, device: str = "cpu") -> SegmentOutcome:
    """Reconstruct and score one segment (see the module docstring); writes its parquet fragments under
    ``<out>/parquet``. Problems of single frames become failure rows; a problem of the whole segment raises."""
    res = SegmentOutcome(seg.identity, seg.segment)
    tm = load_trained(checkpoint, device)
    fm = tm.face_model
    faces = fm.faces.cpu().numpy()
    size = int(tm.config.image_size)
    frames = seg.frames
    meshes = seg.meshes().astype(np.float64)  # (T, V, 3) mm
    gt_faces = seg.faces()
    lm3 = _scan_landmarks(seg, meshes, fm, cfg.landmark_vertices)
    pts = np.stack([seg.project(lm3[i], int(f))[0] for i, f in enumerate(frames)])
    boxes = face_boxes(pts, tm.contract.resolve("crop_scale", cfg.crop_scale, f"{seg.identity}/{seg.segment}"))
    # the 30 fps timeline from the first to the last usable frame; frames without a mesh hold the previous crop
    timeline = np.arange(int(frames[0]), int(frames[-1]) + 1)
    pos = np.searchsorted(frames, timeline, side="right") - 1
    crops = [crop_resize(seg.image(int(frames[p])), boxes[p], size)[0] for p in np.unique(pos)]
    crops = np.stack([crops[k] for k in np.unique(pos, return_inverse=True)[1]])
    audio = seg.audio(16000) if seg.audio_path is not None else None
    rec_cfg = ReconstructConfig(crop="none", progress=False, use_audio=audio is not None)
    with tempfile.TemporaryDirectory(prefix="avface-mf-") as tmp:
        clip = write_mp4(Path(tmp) / "clip.mp4", crops, seg.fps, audio, 16000)
        rec = Reconstructor.from_model(tm.model, fm, audio_config_for(tm.model, tm.audio_kind), device,
                                       rec_cfg, tm.contract).run(clip)
    if rec.num_frames != len(timeline):
        raise ValueError(f"{seg.identity}/{seg.segment}: {rec.num_frames} frames reconstructed, "
                         f"{len(timeline)} written")
    preds = {OURS: rec.vertices(fm, canonical=True) * 1000.0}
    if rec.displacement is not None:
        preds[DETAILED] = rec.vertices(fm, detailed=True, canonical=True) * 1000.0
    template = fm.v_template.detach().cpu().double().numpy()[None] * 1000.0
    res.jitter = {m: jitter(v, scale_to_mm=1.0) for m, v in preds.items() if len(v) >= 3}
    res.jitter[MEAN_FACE] = 0.0
    if len(meshes) >= 3:
        res.gt_jitter = jitter(meshes, scale_to_mm=1.0)
    dist_rows, frame_rows = [], []
    scored = _scored(frames, cfg.max_frames)
    for n_done, f in enumerate(scored):
        i, k = int(np.searchsorted(frames, f)), int(f - timeline[0])
        scan7 = lm3[i, list(NOW_LANDMARKS_68)]
        for method, verts in [*((m, v[k]) for m, v in preds.items()), (MEAN_FACE, template[0])]:
            try:
                v = np.asarray(verts, dtype=np.float64)
                lm = _landmarks(torch.as_tensor(v, dtype=torch.float32)[None], fm)[0].double().numpy()
                lm7 = lm[list(NOW_LANDMARKS_68)]
                r = scan_to_mesh(meshes[i], scan7, v, faces, lm7, refine=cfg.refine)
            except (ValueError, np.linalg.LinAlgError) as e:
                res.failures.append({"table": "multiface", "item": f"{seg.identity}/{seg.segment}/{int(f)}",
                                     "split": method, "problem": f"scan_to_mesh: {e}"})
                continue
            dist_rows.append({"method": method, "speaker": seg.identity, "segment": seg.segment,
                              "frame": np.full(len(r.distances), int(f)), "distance": r.distances})
            frame_rows.append({"method": method, "speaker": seg.identity, "segment": seg.segment, "frame": int(f),
                               "median": r.median, "mean": r.mean, "std": r.std, "iterations": r.iterations})
            if n_done < heatmap_frames:
                res.panels.append({"title": f"{method}\nframe {int(f)}",
                                   "vertices": r.aligned, "faces": faces,
                                   "errors": mesh_vertex_errors(r.aligned, meshes[i], gt_faces)})
        res.frames_scored += 1
    if dist_rows:
        import pandas as pd

        df = pd.concat([pd.DataFrame({**{k: v for k, v in d.items() if k not in ("frame", "distance")},
                                      "frame": d["frame"], "distance": d["distance"]}) for d in dist_rows])
        name = f"{seg.identity}-{seg.segment}"
        write_frame_results(df, Path(out) / "parquet" / DISTANCES, name=name)
        write_frame_results(frame_rows, Path(out) / "parquet" / FRAMES, name=name)
    return res


def evaluate_multiface(checkpoint: str, cfg: MultifaceEvalConfig, out: str | Path, device: str = "cpu",
                       use_ray: bool = True) -> MultifaceOutcome:
    """Every segment of ``cfg.root`` (one Ray task each when ``use_ray``; Ray must be initialised), then the
    dask aggregation of the distances into Table 5's rows."""
    out = Path(out)
    for name in (DISTANCES, FRAMES):  # a re-run replaces the previous run's rows
        if (out / "parquet" / name).exists():
            shutil.rmtree(out / "parquet" / name)
    ds = read_multiface(cfg.root, camera=cfg.camera)
    failures = [{"table": "multiface", "item": "/".join(str(x) for x in (r["identity"], r["segment"], r["frame"])
                                                           if x is not None),
                 "split": r["camera"] or "", "problem": r["problem"]} for r in ds.failure_rows()]
    segs = ds.segments
    heat = [cfg.heatmap_frames if i == 0 else 0 for i in range(len(segs))]  # heat maps of the first segment
    outcomes: list[SegmentOutcome] = []
    if use_ray and segs:
        import ray

        gpus = 1 if str(device).startswith("cuda") else 0  # a task sees a GPU only when it asks for one
        task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(evaluate_segment)
        refs = [task.remote(checkpoint, s, cfg, str(out), h, device) for s, h in zip(segs, heat, strict=True)]
        pending = list(zip(segs, refs, strict=True))
        for s, ref in pending:
            try:
                outcomes.append(ray.get(ref))
            except Exception as e:  # noqa: BLE001 - a bad segment is a failure row, the rest is evaluated
                failures.append({"table": "multiface", "item": f"{s.identity}/{s.segment}", "split": "",
                                 "problem": f"{type(e).__name__}: {str(e).splitlines()[-1][:500]}"})
    else:
        for s, h in zip(segs, heat, strict=True):
            try:
                outcomes.append(evaluate_segment(checkpoint, s, cfg, str(out), h, device))
            except Exception as e:  # noqa: BLE001
                failures.append({"table": "multiface", "item": f"{s.identity}/{s.segment}", "split": "",
                                 "problem": f"{type(e).__name__}: {e}"})
    for o in outcomes:
        failures += o.failures
    root = out / "parquet" / DISTANCES
    results: list[MethodResult] = []
    if any(o.frames_scored for o in outcomes) and root.exists():
        agg = aggregate_frame_results(root, by=["method"], metrics=["distance"],
                                      stats=("median", "mean", "std", "count"))
        order = {OURS: 0, DETAILED: 1, MEAN_FACE: 2}
        for _, row in sorted(agg.iterrows(), key=lambda r: order.get(r[1]["method"], 9)):
            m = row["method"]
            jit = [o.jitter[m] for o in outcomes if m in o.jitter]
            metrics = {"median": float(row["distance_median"]), "mean": float(row["distance_mean"]),
                       "std": float(row["distance_std"])}
            if jit:
                metrics["jitter"] = float(np.mean(jit))
            results.append(MethodResult(m, "multiface", metrics,
                                        count=sum(o.frames_scored for o in outcomes if m in o.jitter),
                                        notes=f"{int(row['distance_count'])} scan-vertex distances" +
                                        ("; baseline: template, no model" if m == MEAN_FACE else "")))
    gt_j = [o.gt_jitter for o in outcomes if np.isfinite(o.gt_jitter)]
    notes = {"multiface tracked-mesh jitter (mm/frame²)": f"{np.mean(gt_j):.3f}"} if gt_j else {}
    return MultifaceOutcome(results, outcomes, failures, root if root.exists() else None, notes)


def panels_of(outcomes: list[SegmentOutcome]) -> list[dict]:
    return [p for o in outcomes for p in o.panels]

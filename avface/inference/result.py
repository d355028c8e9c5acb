"""The result of reconstructing one video (:class:`Reconstruction`) and its ``.npz`` file (schema, save, load).

``<name>.npz`` schema (``np.load(path, allow_pickle=False)``; N = input video frames, at the input's frame times):

=================  ===============  =====================================================================
key                shape / dtype    meaning
=================  ===============  =====================================================================
schema_version     () int           1
times              (N,) f64         presentation time of each input frame, s from the first frame
shape              (N, 100|300) f32 FLAME shape (identity) coefficients per frame (``--flame-sizes``: 300)
expression         (N, 50|100) f32  FLAME expression coefficients (``--flame-sizes``: 100, zero-padded)
jaw_pose           (N, 3) f32       jaw rotation, axis-angle (rad)
global_pose        (N, 3) f32       head rotation about the root joint, axis-angle (rad)
neck_pose          (N, 3) f32       zeros: AVFace folds the neck into the global pose (FLAME convention kept)
eye_pose           (N, 6) f32       zeros: AVFace predicts no gaze (left eye 3, right eye 3)
cam                (N, 3) f32       orthographic camera (s, tx, ty) in the crop's NDC (see below)
crop_box           (N, 4) f32       (x0, y0, x1, y1) px in the upright input frame of the crop the model saw
albedo             (N, 50) f32      albedo coefficients
light              (N, 9, 3) f32    SH lighting
lip_offsets        (N, K, 3) f32    lip-refinement offsets (m, head frame) of vertices ``lip_vertex_ids``
lip_vertex_ids     (K,) i64         (both absent when the lip stage did not run)
displacement       (N, V) f16       detail-stage displacement along each vertex normal (m; only with detail)
face_detected      (N,) bool        the tracked face was detected in this frame (else the crop was interpolated)
refined            (N,) bool        shape, expression, jaw, pose and cam were fitted to the detected landmarks
                                    (``--refine landmarks``; else the network's values; absent in older files:
                                    read as all False)
landmarks          (N, 68, 2) f32   the detector's iBUG-68 points, input-frame pixels (zeros where not detected;
                                    absent with ``--crop none``, which runs no detector)
audio_valid        (N,) bool        audio was present at this frame (False everywhere in video-only mode)
valid              (N,) bool        the frame has a reconstruction (True for every decoded frame)
fps                () f64           the model's frame rate (its input contract); outputs are interpolated to ``times``
source_fps         () f64           the input's average frame rate
frame_size         (2,) i64         (width, height) of the upright input frames
rotation           () i64           counter-clockwise degrees applied to the decoded frames (display matrix)
image_size         () i64           side of the square crop fed to the model
meta               () str           JSON: input, audio, checkpoint, stages, face model, audio features, ...
=================  ===============  =====================================================================

Camera into the original frame: a model-space point X projects to crop NDC ``x = s (X_x + tx)``,
``y = -s (X_y + ty)`` (:func:`avface.render.cameras.orthographic_project`) and to input-frame pixels
``u = x0 + (x + 1) / 2 (x1 - x0)``, ``v = y0 + (y + 1) / 2 (y1 - y0)`` (pixel centres at +0.5). Vertices come from
``FaceModel(shape, expression, global_pose, neck_pose, jaw_pose, eye_pose)`` plus ``R(global_pose) lip_offsets`` at
``lip_vertex_ids`` (:meth:`Reconstruction.vertices`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avface.face_model.lbs import batch_rodrigues
from avface.render.shading import vertex_normals
from avface.utils.files import atomic_path
from avface.utils.jsonable import json_default

SCHEMA_VERSION = 1
FLAME_SHAPE, FLAME_EXPRESSION = 300, 100

_ARRAYS = ("times", "shape", "expression", "jaw_pose", "global_pose", "neck_pose", "eye_pose", "cam", "crop_box",
           "albedo", "light", "face_detected", "audio_valid", "valid")
_OPTIONAL = ("lip_offsets", "lip_vertex_ids", "displacement", "landmarks")
_SCALARS = ("fps", "source_fps", "rotation", "image_size")


@dataclass
class Reconstruction:
    """Per-input-frame parameters of one video (shapes in the module docstring) and what produced them."""

    times: np.ndarray
    shape: np.ndarray
    expression: np.ndarray
    jaw_pose: np.ndarray
    global_pose: np.ndarray
    neck_pose: np.ndarray
    eye_pose: np.ndarray
    cam: np.ndarray
    crop_box: np.ndarray
    albedo: np.ndarray
    light: np.ndarray
    face_detected: np.ndarray
    audio_valid: np.ndarray
    valid: np.ndarray
    fps: float
    source_fps: float
    frame_size: tuple[int, int]
    rotation: int
    image_size: int
    lip_offsets: np.ndarray | None = None
    lip_vertex_ids: np.ndarray | None = None
    displacement: np.ndarray | None = None
    refined: np.ndarray | None = None  # (N,) bool; None: nothing refined (read as all False)
    landmarks: np.ndarray | None = None  # (N, 68, 2) detector points, input-frame pixels
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.refined is None:
            self.refined = np.zeros(len(self.times), bool)

    @property
    def num_frames(self) -> int:
        return len(self.times)

    @property
    def frames_without_face(self) -> int:
        return int((~self.face_detected).sum())

    def with_flame_sizes(self) -> Reconstruction:
        """A copy with shape padded to FLAME's 300 and expression to 100 coefficients (zeros)."""
        def pad(x: np.ndarray, n: int) -> np.ndarray:
            return np.pad(x, ((0, 0), (0, max(0, n - x.shape[1]))))

        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["shape"], d["expression"] = pad(self.shape, FLAME_SHAPE), pad(self.expression, FLAME_EXPRESSION)
        d["meta"] = {**self.meta, "flame_sizes": True}
        return Reconstruction(**d)

    # ------------------------------------------------------------------------------------------------ geometry
    @torch.no_grad()
    def vertices(self, face_model: torch.nn.Module, start: int = 0, stop: int | None = None,
                 detailed: bool = False, canonical: bool = False) -> np.ndarray:
        """Vertices ``(n, V, 3)`` (m, model space) of frames ``[start, stop)``: the face model posed with the
        per-frame parameters, plus the lip offsets; ``detailed`` adds the detail displacement along the vertex
        normals; ``canonical`` leaves out the global rotation (head frame)."""
        stop = self.num_frames if stop is None else stop
        sl = slice(start, stop)
        fm = face_model
        dev = fm.v_template.device

        def t(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(x[sl]), dtype=torch.float32, device=dev)

        gp = t(self.global_pose)
        geo = fm(shape=t(self.shape)[:, : fm.n_shape], expression=t(self.expression)[:, : fm.n_expression],
                 global_pose=torch.zeros_like(gp) if canonical else gp, neck_pose=t(self.neck_pose),
                 jaw_pose=t(self.jaw_pose), eye_pose=t(self.eye_pose))
        v = geo.vertices
        if self.lip_offsets is not None and self.lip_vertex_ids is not None:
            off = t(self.lip_offsets)
            if not canonical:  # offsets are in the head (canonical) frame: rotate them with the head
                off = torch.einsum("bij,bkj->bki", batch_rodrigues(gp), off)
            v = v.index_add(1, torch.as_tensor(self.lip_vertex_ids, device=dev), off)
        if detailed:
            if self.displacement is None:
                raise ValueError("no displacement: the detail stage did not run")
            v = v + t(self.displacement.astype(np.float32))[..., None] * vertex_normals(v, fm.faces)
        return v.cpu().numpy()

    # ------------------------------------------------------------------------------------------------ npz
    def save_npz(self, path: str | os.PathLike) -> Path:
        """Write the ``.npz`` of the module docstring, atomically. Returns ``Path(path)``."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {"schema_version": np.asarray(SCHEMA_VERSION, np.int64)}
        for k in _ARRAYS:
            arrays[k] = np.asarray(getattr(self, k))
        for k in _OPTIONAL:
            v = getattr(self, k)
            if v is not None:
                arrays[k] = np.asarray(v)
        arrays["refined"] = np.asarray(self.refined, bool)
        arrays["fps"] = np.asarray(self.fps, np.float64)
        arrays["source_fps"] = np.asarray(self.source_fps, np.float64)
        arrays["rotation"] = np.asarray(self.rotation, np.int64)
        arrays["image_size"] = np.asarray(self.image_size, np.int64)
        arrays["frame_size"] = np.asarray(self.frame_size, np.int64)
        arrays["meta"] = np.asarray(json.dumps(self.meta, default=json_default))
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
        return path


def load_reconstruction(path: str | os.PathLike) -> Reconstruction:
    """Read a ``.npz`` written by :meth:`Reconstruction.save_npz` (no pickle); errors name the file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable reconstruction .npz ({type(e).__name__}: {e})") from e
    version = int(d.pop("schema_version", -1))
    if version != SCHEMA_VERSION:
        raise ValueError(f"{path}: reconstruction schema version {version}, this code reads {SCHEMA_VERSION}")
    missing = [k for k in (*_ARRAYS, *_SCALARS, "frame_size", "meta") if k not in d]
    if missing:
        raise ValueError(f"{path}: not a reconstruction .npz, missing {missing}")
    kw: dict[str, Any] = {k: d[k] for k in _ARRAYS}
    kw.update({k: d.get(k) for k in _OPTIONAL})
    kw["refined"] = d.get("refined")  # older files have none: nothing was refined
    kw["fps"], kw["source_fps"] = float(d["fps"]), float(d["source_fps"])
    kw["rotation"], kw["image_size"] = int(d["rotation"]), int(d["image_size"])
    kw["frame_size"] = tuple(int(v) for v in d["frame_size"])
    kw["meta"] = json.loads(str(d["meta"]))
    return Reconstruction(**kw)


"""The WebDataset sample schema: one sample = one window of T = 16 consecutive frames (25 fps) of one clip.

Key: ``{split}_{identity}_{ytid}_{utterance}_{start:06d}`` (``start`` = first frame of the window in the 25 fps
clip), every part sanitised so the key has no dots or slashes (:func:`sample_key`); occluded copies of a window
(occlusion fine-tuning, written to the ``{split}_occ`` shards) end with ``_occ``.

Fields (file name in the tar = ``<key>.<field>``; never pickle):

=====================  =========================================================================================
``frames.jpg``         the T frames as ONE vertical JPEG strip ``(T*H, W, 3)`` RGB (``video.frames_format=jpg``,
                       the default: ~8x smaller than raw; H, W multiples of 16 so no JPEG block straddles two
                       frames), or ``frames.npy`` ``(T, H, W, 3)`` u8 (``frames_format=npy``, lossless)
``audio_features.npy`` ``(T, 16, F)`` f32 (:mod:`avface.audio.features`)
``landmarks.npy``      ``(T, 68, 2)`` f32 iBUG-68 pixel coordinates in the stored frames (centre of pixel c is c+0.5)
``landmarks_valid.npy`` ``(T,)`` bool: False where no face was found (landmarks are then zeros)
``detector_points.npy`` optional: ``(T, P, 3)`` f32, the landmark detector's full point set on these frames (what
                       inference's detector gives; for synthetic clips too, while ``landmarks.npy`` holds the exact
                       points): x, y pixels in the stored frames, z relative depth in the same pixel units (0 for a
                       2D detector); zeros where not detected. ``meta["detector_points"]`` names the set
                       (``avface.landmarks.detector.POINT_SETS``: mediapipe478 | mediapipe468 | ibug68); shards
                       written before it (or with no detector) have neither: decoded without ``detector_points``
``detector_valid.npy`` optional, with ``detector_points.npy``: ``(T,)`` bool, the detector found the face
``normals.png``        optional: pseudo-GT normals, vertical PNG strip ``(T*H, W, 3)`` u8 = round((n + 1) * 127.5),
                       (0, 0, 0) = no face; decoded to ``(T, H, W, 3)`` f32 unit vectors (zeros off the face)
``gt_params.npy``     optional (synthetic clips): ``(T, D)`` f32 ground-truth model parameters of the window's frames,
                       columns laid out by ``meta["gt_layout"]`` (name -> [start, stop]): ``shape``, ``expression``,
                       ``jaw``, ``global_pose``, ``neck_pose``, ``eye_pose``, ``cam`` (in the stored frames' NDC)
                       per frame, optionally ``lip_detail`` (C) per frame, and the clip constants ``albedo`` and
                       ``light`` (9 x 3 SH) repeated per frame;
                       decoded to ``gt``: dict name -> ``(T, k)`` (``albedo (NA,)``, ``light (9, 3)``)
``fit_params.npy``     optional (preprocessing with ``fit.enabled``): ``(T, D)`` f32 pseudo-ground truth, the face
                       model fitted to the window's landmarks (:mod:`avface.data.fit`), columns by
                       ``meta["fit_layout"]``: ``shape``, ``expression``, ``jaw``, ``global_pose``, ``cam`` (stored
                       frames' NDC); decoded to ``fit``: dict name -> ``(T, k)``. Never read from nor written into
                       ``gt_params.npy``; ``meta["fit"]``: the window's mean ``residual`` and fitted ``frames``
``fit_valid.npy``      with ``fit_params.npy``: ``(T,)`` bool, the frame was fitted (it had landmarks)
``fit_residual.npy``   with ``fit_params.npy``: ``(T,)`` f32, NME of the fitted 68 points against the landmarks
                       (inter-ocular fraction; NaN where not fitted): the fit's quality
``occlusion_mask.png`` optional (``_occ`` samples and synthetic clips with a mask): vertical PNG strip ``(T*H, W)``
                       u8, 255 = occluded; decoded to ``(T, H, W)`` u8
``meta.json``          dict: key, clip_id, split, identity, ytid, utterance, start, num_frames, fps, height, width,
                       source_fps, source_indices, audio_kind, audio_dim, landmark_source (gt | mediapipe | none),
                       normals_source, occluded, occlusion (params), crop (none | landmarks), crop_scale (landmarks;
                       else null), crop boxes, vox meta, frames_format, ...
=====================  =========================================================================================

:func:`decode_sample` accepts the raw bytes of a tar (``webdataset`` without decoders) or values already decoded
by ``ray.data.read_webdataset`` (arrays / dicts), and returns the contract of docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import cv2
import numpy as np

from avface.utils.jsonable import json_default

__all__ = ["sample_key", "sanitize", "encode_sample", "decode_sample", "pack_gt_params", "unpack_gt_params", "FIELDS",
           "GT_FRAME_PARAMS", "GT_OPTIONAL_FRAME_PARAMS", "GT_CLIP_PARAMS", "FIT_FIELDS"]

FIELDS = ("frames.jpg", "frames.npy", "audio_features.npy", "landmarks.npy", "landmarks_valid.npy",
          "detector_points.npy", "detector_valid.npy", "normals.png", "occlusion_mask.png", "gt_params.npy",
          "fit_params.npy", "fit_valid.npy", "fit_residual.npy", "meta.json")

#: the pseudo-ground-truth fields (``fit.enabled``): all three or none
FIT_FIELDS = ("fit_params.npy", "fit_valid.npy", "fit_residual.npy")

#: Per-frame ground-truth parameter groups of ``gt_params.npy`` (in column order), then the optional per-frame
#: groups (``lip_detail``: FaceModel lip-detail coefficients, clips synthesised with ``face.lip_detail_mm > 0``),
#: then the per-clip constants.
GT_FRAME_PARAMS = ("shape", "expression", "jaw", "global_pose", "neck_pose", "eye_pose", "cam")
GT_OPTIONAL_FRAME_PARAMS = ("lip_detail",)
GT_CLIP_PARAMS = ("albedo", "light")

_BAD = re.compile(r"[^A-Za-z0-9_\-]")


def sanitize(part: str) -> str:
    """Key part without dots, slashes or spaces (anything but ``[A-Za-z0-9_-]`` becomes ``-``)."""
    return _BAD.sub("-", str(part))


def sample_key(split: str, identity: str, ytid: str, utterance: str, start: int, occluded: bool = False) -> str:
    key = "_".join(sanitize(p) for p in (split, identity, ytid, utterance)) + f"_{int(start):06d}"
    return key + ("_occ" if occluded else "")


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def _strip(images: np.ndarray) -> np.ndarray:
    t, h = images.shape[:2]
    return images.reshape(t * h, *images.shape[2:])


def _imencode(ext: str, img: np.ndarray, params: list[int]) -> bytes:
    if img.ndim == 3:
        img = img[..., ::-1]  # RGB -> BGR for OpenCV
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(img), params)
    if not ok:
        raise RuntimeError(f"cv2.imencode({ext}) failed")
    return buf.tobytes()


def _imdecode(data: bytes, color: bool) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError("could not decode image field")
    return img[..., ::-1].copy() if color else img


def encode_normals(normals: np.ndarray) -> np.ndarray:
    """``(..., 3)`` f32 unit normals (zeros off the face) -> u8; zero vectors stay (0, 0, 0)."""
    enc = np.clip(np.round((normals + 1.0) * 127.5), 1, 255).astype(np.uint8)
    enc[np.all(normals == 0, axis=-1)] = 0
    return enc


def decode_normals(enc: np.ndarray) -> np.ndarray:
    n = enc.astype(np.float32) / 127.5 - 1.0
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    n = np.where(norm > 0, n / np.maximum(norm, 1e-8), 0.0)
    n[np.all(enc == 0, axis=-1)] = 0.0
    return n.astype(np.float32)


def encode_sample(
    key: str,
    frames: np.ndarray,
    audio_features: np.ndarray,
    landmarks: np.ndarray,
    landmarks_valid: np.ndarray,
    meta: dict[str, Any],
    normals: np.ndarray | None = None,
    occlusion_mask: np.ndarray | None = None,
    frames_format: str = "jpg",
    jpeg_quality: int = 90,
    gt: dict[str, np.ndarray] | None = None,
    detector_points: np.ndarray | None = None,
    detector_valid: np.ndarray | None = None,
    point_set: str | None = None,
    fit: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Sample dict for a tar writer: ``{"__key__": key, "<field>": bytes}`` (see the module docstring);
    ``detector_points (T,P,3)`` with ``detector_valid (T,)`` and their ``point_set`` name, or none of the three;
    ``fit``: the pseudo-ground truth, ``{"params": (T, D) f32, "layout": {name: [a, b]}, "valid": (T,) bool,
    "residual": (T,) f32, "summary": dict}`` (:class:`avface.data.fit.WindowFit`, packed)."""
    if "." in key or "/" in key:
        raise ValueError(f"sample key must not contain dots or slashes: {key!r}")
    t, h, w, _ = frames.shape
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    meta = {**meta, "key": key, "num_frames": int(t), "height": int(h), "width": int(w),
            "frames_format": frames_format}
    s: dict[str, Any] = {"__key__": key}
    if frames_format == "jpg":
        s["frames.jpg"] = _imencode(".jpg", _strip(frames), [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    elif frames_format == "npy":
        s["frames.npy"] = _npy(frames)
    else:
        raise ValueError(f"frames_format must be jpg or npy, got {frames_format!r}")
    s["audio_features.npy"] = _npy(np.asarray(audio_features, np.float32))
    s["landmarks.npy"] = _npy(np.asarray(landmarks, np.float32))
    s["landmarks_valid.npy"] = _npy(np.asarray(landmarks_valid, bool))
    if (detector_points is None) != (point_set is None) or (detector_points is None) != (detector_valid is None):
        raise ValueError("detector_points, detector_valid and point_set come together")
    if detector_points is not None:
        pts = np.asarray(detector_points, np.float32)
        if pts.ndim != 3 or pts.shape[0] != t or pts.shape[2] != 3:
            raise ValueError(f"detector_points must be ({t}, P, 3), got {pts.shape}")
        s["detector_points.npy"] = _npy(pts)
        s["detector_valid.npy"] = _npy(np.asarray(detector_valid, bool).reshape(t))
        meta["detector_points"] = str(point_set)
    if normals is not None:
        s["normals.png"] = _imencode(".png", _strip(encode_normals(np.asarray(normals, np.float32))),
                                     [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if occlusion_mask is not None:
        m = np.asarray(occlusion_mask)
        if m.dtype != np.uint8:
            m = np.clip(np.round(m.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
        s["occlusion_mask.png"] = _imencode(".png", _strip(m), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if fit is not None:
        fp = np.asarray(fit["params"], np.float32)
        if fp.ndim != 2 or fp.shape[0] != t:
            raise ValueError(f"fit params must be ({t}, D), got {fp.shape}")
        s["fit_params.npy"] = _npy(fp)
        s["fit_valid.npy"] = _npy(np.asarray(fit["valid"], bool).reshape(t))
        s["fit_residual.npy"] = _npy(np.asarray(fit["residual"], np.float32).reshape(t))
        meta["fit_layout"] = fit["layout"]
        meta["fit"] = fit.get("summary", {})
    if gt is not None:
        params, layout = pack_gt_params(gt, t)
        s["gt_params.npy"] = _npy(params)
        meta["gt_layout"] = layout
    s["meta.json"] = json.dumps(meta, sort_keys=True, default=json_default).encode()
    return s


def pack_gt_params(gt: dict[str, np.ndarray], t: int) -> tuple[np.ndarray, dict[str, list[int]]]:
    """Ground-truth parameters -> ``(T, D)`` f32 and the column layout (name -> [start, stop]).

    gt: ``GT_FRAME_PARAMS`` as ``(T, k)`` arrays (all required), optional ``lip_detail (T, C)``, ``albedo (NA,)``,
    ``light (9, 3)``.
    """
    cols, layout, at = [], {}, 0
    per_frame = GT_FRAME_PARAMS + GT_OPTIONAL_FRAME_PARAMS
    for name in per_frame + GT_CLIP_PARAMS:
        if name not in gt:
            if name in GT_FRAME_PARAMS:
                raise KeyError(f"ground-truth parameters lack {name!r} (have {sorted(gt)})")
            continue
        a = np.asarray(gt[name], np.float32)
        a = a.reshape(t, -1) if name in per_frame else np.broadcast_to(a.reshape(1, -1), (t, a.size))
        cols.append(a)
        layout[name] = [at, at + a.shape[1]]
        at += a.shape[1]
    return np.concatenate(cols, axis=1), layout


def unpack_gt_params(params: np.ndarray, layout: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """Inverse of :func:`pack_gt_params`: per-frame groups ``(T, k)``, ``albedo (NA,)``, ``light (9, 3)``."""
    out = {}
    for name, (a, b) in layout.items():
        v = params[:, a:b]
        if name == "albedo":
            v = v[0]
        elif name == "light":
            v = v[0].reshape(9, 3)
        out[name] = np.ascontiguousarray(v, np.float32)
    return out


def _field(sample: dict[str, Any], name: str) -> Any:
    """Value of ``name`` in a sample from webdataset (``"frames.jpg"``) or Ray (``"frames.jpg"`` / ``"jpg"``)."""
    if name in sample:
        return sample[name]
    return None


def _load_npy(v: Any) -> np.ndarray:
    if isinstance(v, np.ndarray):
        return v
    if isinstance(v, bytes | bytearray | memoryview):
        return np.load(io.BytesIO(bytes(v)), allow_pickle=False)
    return np.asarray(v)


def _load_image(v: Any, color: bool) -> np.ndarray:
    if isinstance(v, bytes | bytearray | memoryview):
        return _imdecode(bytes(v), color)
    a = np.asarray(v)
    if not color and a.ndim == 3:
        a = a[..., 0]
    return a


def decode_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """Arrays of one sample: ``frames (T,H,W,3) u8``, ``audio_features (T,16,F) f32``, ``landmarks (T,68,2) f32``,
    ``landmarks_valid (T,) bool``, optional ``detector_points (T,P,3) f32`` with ``detector_valid (T,) bool``
    (their set: ``meta["detector_points"]``), optional ``normals (T,H,W,3) f32`` and ``occlusion_mask (T,H,W) u8``,
    optional ``gt`` (dict of ground-truth parameters, see ``gt_params.npy``), optional ``fit`` (dict of fitted
    pseudo-ground-truth parameters) with ``fit_valid (T,) bool`` and ``fit_residual (T,) f32``, ``meta`` (dict) and
    ``key``."""
    meta_v = _field(sample, "meta.json")
    if meta_v is None:
        raise KeyError(f"sample has no meta.json: fields {sorted(sample)}")
    meta = meta_v if isinstance(meta_v, dict) else json.loads(bytes(meta_v).decode())
    t, h, w = int(meta["num_frames"]), int(meta["height"]), int(meta["width"])
    out: dict[str, Any] = {"key": sample.get("__key__", meta.get("key")), "meta": meta}
    if _field(sample, "frames.jpg") is not None:
        out["frames"] = _load_image(sample["frames.jpg"], True).reshape(t, h, w, 3)
    elif _field(sample, "frames.npy") is not None:
        out["frames"] = _load_npy(sample["frames.npy"]).astype(np.uint8, copy=False)
    else:
        raise KeyError(f"sample {out['key']} has no frames field")
    out["audio_features"] = _load_npy(sample["audio_features.npy"]).astype(np.float32, copy=False)
    out["landmarks"] = _load_npy(sample["landmarks.npy"]).astype(np.float32, copy=False)
    out["landmarks_valid"] = _load_npy(sample["landmarks_valid.npy"]).astype(bool, copy=False)
    if _field(sample, "detector_points.npy") is not None:
        if "detector_points" not in meta or _field(sample, "detector_valid.npy") is None:
            raise KeyError(f"sample {out['key']} has detector_points.npy but no detector_valid.npy / "
                           "meta.detector_points")
        out["detector_points"] = _load_npy(sample["detector_points.npy"]).astype(np.float32, copy=False)
        out["detector_valid"] = _load_npy(sample["detector_valid.npy"]).astype(bool, copy=False)
    if _field(sample, "normals.png") is not None:
        out["normals"] = decode_normals(_load_image(sample["normals.png"], True).reshape(t, h, w, 3))
    if _field(sample, "occlusion_mask.png") is not None:
        out["occlusion_mask"] = _load_image(sample["occlusion_mask.png"], False).reshape(t, h, w).astype(np.uint8)
    if _field(sample, "gt_params.npy") is not None:
        if "gt_layout" not in meta:
            raise KeyError(f"sample {out['key']} has gt_params.npy but no meta.gt_layout")
        out["gt"] = unpack_gt_params(_load_npy(sample["gt_params.npy"]).astype(np.float32, copy=False),
                                     meta["gt_layout"])
    if _field(sample, "fit_params.npy") is not None:
        if "fit_layout" not in meta or any(_field(sample, f) is None for f in FIT_FIELDS):
            raise KeyError(f"sample {out['key']} has fit_params.npy but not all of {list(FIT_FIELDS)} and "
                           "meta.fit_layout")
        out["fit"] = unpack_gt_params(_load_npy(sample["fit_params.npy"]).astype(np.float32, copy=False),
                                      meta["fit_layout"])
        out["fit_valid"] = _load_npy(sample["fit_valid.npy"]).astype(bool, copy=False)
        out["fit_residual"] = _load_npy(sample["fit_residual.npy"]).astype(np.float32, copy=False)
    return out

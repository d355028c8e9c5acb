"""Process one clip into its window samples (runs inside a shard task; see :mod:`avface.data.shards`).

Steps, one function each (each failure raises :class:`~avface.utils.failures.ClipFailure` naming the stage; the
shard records it and moves on):

``validate``   probe results: unreadable / non-video file, zero length, huge resolution (> video.max_width x
               max_height), frame rate outside [min_fps, max_fps], longer than max_seconds, no audio stream
``decode_video`` the project's reader (:mod:`avface.io.video`, as inference reads a video): one pass for the frame
               times (and the video's own audio), one streaming pass for the frames, upright (rotation metadata
               applied); frames on the ``video.fps`` (25) timeline of :func:`avface.io.video.model_timeline`
               (nearest source frame in time); fewer than one window (16) -> ``too short``. When the reader
               decodes fewer frames than the container lists (truncated file), the timeline keeps the listed
               frames and up to ``MAX_FILLED_FRAMES`` (2) missing needed source frames are filled with the last
               decoded frame and marked (``meta.frames_filled`` = their positions in the window, and
               ``landmarks_valid`` False there); more missing -> the clip fails (``decode_video``)
``decode_audio`` 16 kHz mono on the video's clock (a late-starting audio stream is preceded by silence), cut or
               zero-padded to ``num_frames * 16000 / fps`` samples
``audio_features`` :func:`avface.audio.extract_audio_features` over the whole clip, then cut per window
``landmarks``  synthetic sidecar ``landmarks2d`` (indexed by the same source frames) when it exists, else the
               configured detector (MediaPipe, optional); frames without a face are marked invalid, never dropped.
               With ``landmarks.store_points`` (default) the detector's full point set is stored too
               (``detector_points``), for synthetic clips as well (run on the rendered frames: the model's
               landmark input sees what inference's detector sees, the sidecar's exact points stay the targets)
``fit``        optional (``fit.enabled``): pseudo-ground-truth parameters, the mean face fitted to the window's
               stored landmarks (:mod:`avface.data.fit`; never from the exact ground truth), with each frame's
               residual; frames without landmarks are not fitted
``normals``    optional pseudo-GT normals (sidecar / renderer for synthetic clips, teacher network otherwise)
``occlusion``  the planned windows also get an occluded copy (occlusion_synth) with its mask (and, with
               ``store_points``, the detector's points found on the occluded frames)

Windows start at 0, stride ``shards.stride``; trailing frames that do not fill a window are not used. All samples
of a clip are built before any is written, so a clip is either complete in its shard or absent (and in the
failures table).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from avface.audio import extract_audio_features
from avface.data.config import PreprocessConfig
from avface.data.sample import encode_sample, sample_key
from avface.io.video import (
    AudioTrack,
    InputError,
    InputLimits,
    VideoInfo,
    VideoScan,
    iter_model_frames,
    model_timeline,
    resize_frames,
    scan_video,
)
from avface.landmarks.crop import crop_resize
from avface.landmarks.detector import DetectedPoints
from avface.landmarks.factory import shared_detector
from avface.utils.boxes import boxes_from_landmarks
from avface.utils.failures import ClipFailure, stage
from avface.utils.jsonable import to_jsonable
from occlusion_synth import OcclusionConfig, occlude_sequence

#: Needed source frames that the reader may miss (truncated file) before the clip is a failure; the ones filled are
#: marked in the sample (``meta.frames_filled``, ``landmarks_valid`` False).
MAX_FILLED_FRAMES = 2


def window_starts(num_frames: int, window: int, stride: int) -> list[int]:
    if num_frames < window:
        return []
    return list(range(0, num_frames - window + 1, stride))


def estimate_windows(num_frames: int | None, src_fps: float | None, fps: float, window: int, stride: int) -> int:
    if not num_frames or not src_fps or src_fps <= 0:
        return 0
    n = int(np.floor(num_frames * fps / src_fps + 1e-6))
    return len(window_starts(n, window, stride))


def stable_seed(*parts: Any) -> int:
    return zlib.crc32("|".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


@dataclass
class ClipResources:
    """Per-task objects shared by the clips of one shard (detector, normals teacher)."""

    detector: Any = None
    teacher: Any = None
    fitter: Any = None  # avface.data.fit.LandmarkFitter with fit.enabled

    @classmethod
    def create(cls, cfg: PreprocessConfig) -> ClipResources:
        lmc = cfg.landmarks
        detector = shared_detector(lmc.detector, lmc.min_detection_confidence, lmc.mediapipe_python)
        teacher = None
        if cfg.normals.source in ("teacher", "auto") and cfg.normals.checkpoint:
            from avface.data.normals_teacher import UNetResNetTeacher  # torch: only imported for a teacher

            teacher = UNetResNetTeacher(cfg.normals.checkpoint, cfg.normals.arch, cfg.video.image_size,
                                        batch_size=cfg.normals.batch_size)
        elif cfg.normals.source == "teacher":
            raise ValueError("normals.source=teacher needs normals.checkpoint=/path/to/normals_net.pth")
        fitter = None
        if cfg.fit.enabled:
            from avface.data.fit import LandmarkFitter  # torch and the face model: only for fit.enabled

            fitter = LandmarkFitter(cfg.fit)
        return cls(detector, teacher, fitter)

    def close(self) -> None:
        """Release per-task objects; the process-wide detector stays (see
        :func:`avface.landmarks.factory.shared_detector`)."""
        self.teacher = None


def validate(row: dict[str, Any], cfg: PreprocessConfig) -> None:
    v = cfg.video
    if row.get("probe_error"):
        raise ClipFailure("validate", f"unreadable: {row['probe_error']}")
    w, h = row.get("width") or 0, row.get("height") or 0
    if w > v.max_width or h > v.max_height:
        raise ClipFailure("validate", f"huge resolution {w}x{h} > max {v.max_width}x{v.max_height}")
    if w <= 0 or h <= 0:
        raise ClipFailure("validate", f"bad frame size {w}x{h}")
    fps = row.get("fps")
    if fps is None or not (v.min_fps <= fps <= v.max_fps):
        raise ClipFailure("validate", f"frame rate {fps} outside [{v.min_fps}, {v.max_fps}]")
    dur = row.get("duration")
    if dur is not None and dur > v.max_seconds:
        raise ClipFailure("validate", f"too long: {dur:.1f} s > video.max_seconds={v.max_seconds}")
    if not row.get("has_audio"):
        raise ClipFailure("validate", "no audio stream")


def _load_sidecar(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def frame_maps(maps: np.ndarray, size: int, crop_box: list | None, interpolation: int) -> np.ndarray:
    """Per-frame maps of the source frames (occlusion masks ``(T, H, W)``, normals ``(T, H, W, 3)``) -> the stored
    frames' pixels ``(T, size, size[, 3])`` float32: the same landmark crop as the frames (``crop_box`` ``(T, 4)``,
    outside the source: zero) or, without one, the same plain resize."""
    maps = maps.astype(np.float32)
    if crop_box is not None:
        return np.stack([crop_resize(m, np.asarray(b), size, interpolation)[0] for m, b in zip(maps, crop_box,
                                                                                             strict=True)])
    if maps.shape[1:3] == (size, size):
        return maps
    return np.stack([cv2.resize(m, (size, size), interpolation=interpolation) for m in maps])


def process_clip(row: dict[str, Any], cfg: PreprocessConfig, out_split: str, occluded_starts: set[int] | frozenset,
                 resources: ClipResources) -> list[dict[str, Any]]:
    """All samples of one clip (``encode_sample`` dicts, clean windows then their ``_occ`` copies)."""
    validate(row, cfg)
    v, s = cfg.video, cfg.shards
    video = open_video(row, cfg)
    n = len(video.indices)
    audio = decode_audio(row, cfg, video, n)
    feats = clip_audio_features(audio, n, cfg)
    gt = load_ground_truth(row)
    gt_lm = gt.get("landmarks2d") if cfg.landmarks.use_ground_truth else None
    landmark_source = "gt" if gt_lm is not None else resources.detector.name
    store_points = cfg.landmarks.store_points and resources.detector.point_set != "none"
    if gt_lm is None or store_points:
        resources.detector.reset()

    normals_source = _normals_source(cfg, gt, resources)
    size = v.image_size
    samples: list[dict[str, Any]] = []
    occ_samples: list[dict[str, Any]] = []
    base_meta = {
        "clip_id": row["clip_id"], "split": out_split, "identity": row["identity"], "ytid": row["ytid"],
        "utterance": row["utterance"], "fps": v.fps, "source_fps": video.src_fps, "crop": v.crop,
        "crop_scale": v.crop_scale if v.crop == "landmarks" else None,
        "audio_kind": cfg.audio.kind, "audio_dim": int(feats.shape[-1]), "landmark_source": landmark_source,
        "normals_source": normals_source, "vggface2_id": row.get("vggface2_id"), "gender": row.get("gender"),
        "txt_reference": row.get("txt_reference"), "txt_offset": row.get("txt_offset"),
        "txt_conf": row.get("txt_conf"),
    }
    if resources.fitter is not None:
        base_meta["fit_landmark_source"] = landmark_source  # what the pseudo-ground truth was fitted to
    for start, raw in window_frames(video, s.window, v.decode_threads):
        src_idx = video.indices[start:start + s.window]
        filled = src_idx >= video.decoded  # copies of the last decoded frame (truncated file): no landmarks
        th, tw = raw.shape[1:3]
        detection = window_detection(raw, resources.detector) if store_points or gt_lm is None else None
        lm, valid = window_landmarks(raw, src_idx, gt_lm, detection)
        valid = valid & ~filled  # (their landmarks are zeroed below with the other invalid frames)
        frames, lm_out, crop_box = crop_window(raw, lm, valid, cfg)
        points = (None if not store_points or detection is None else
                  stored_points(detection, filled, crop_box, (th, tw), size))
        occ_mask = window_occlusion_mask(gt, src_idx, size, crop_box)
        normals = _normals(normals_source, gt, src_idx, frames, size, crop_box, resources)
        targets = window_targets(gt, src_idx, crop_box, (th, tw)) if cfg.data.carry_ground_truth else None
        fit = window_fit(lm_out, valid, size, resources.fitter) if resources.fitter is not None else None
        meta = {**base_meta, "decoder": "pyav", "start": int(start), "source_indices": src_idx.tolist(),
                "source_size": [tw, th],
                "occluded": False, "crop_boxes": crop_box}
        if targets is not None:
            meta["gt_face_model"] = str(gt["face_model"]) if "face_model" in gt else None
        if filled.any():
            meta["frames_filled"] = np.flatnonzero(filled).tolist()
        key = sample_key(out_split, row["identity"], row["ytid"], row["utterance"], start)
        samples.append(encode_sample(key, frames, feats[start:start + s.window], lm_out, valid, meta, normals=normals,
                                     occlusion_mask=occ_mask, frames_format=v.frames_format,
                                     jpeg_quality=v.jpeg_quality, gt=targets, fit=fit, **(points or {})))
        if start in occluded_starts:
            occ_samples.append(_occluded(out_split, row, start, frames, feats[start:start + s.window], lm_out, valid,
                                         meta, normals, cfg, targets,
                                         resources.detector if points is not None else None, fit))
    del video
    return samples + occ_samples


# ------------------------------------------------------------------------------------------ one function per stage
#: sidecar key -> sample ``gt`` name (avface.data.sample.GT_FRAME_PARAMS)
_SIDECAR_PARAMS = {"shape": "shape", "expression": "expression", "jaw_pose": "jaw", "global_pose": "global_pose",
                   "neck_pose": "neck_pose", "eye_pose": "eye_pose", "cam": "cam"}


def window_targets(gt: dict[str, np.ndarray], src_idx: np.ndarray, crop_box: list | None,
                   source_hw: tuple[int, int]) -> dict[str, np.ndarray] | None:
    """Ground-truth parameters of one window from a synthetic sidecar (None for clips without one).

    The camera is re-expressed in the stored frames' NDC: a plain resize of a square frame keeps NDC; a landmark
    crop (square boxes ``(T, 4)`` x0 y0 x1 y1 in source pixels) scales it by ``W / side`` and shifts it, exactly.
    A non-square source has no isotropic orthographic camera of the stored frames: no targets.
    """
    th, tw = source_hw
    if not all(k in gt for k in _SIDECAR_PARAMS) or src_idx.max() >= len(gt["shape"]) or th != tw:
        return None
    out = {name: gt[k][src_idx].astype(np.float32) for k, name in _SIDECAR_PARAMS.items()}
    if "lip_detail" in gt:
        out["lip_detail"] = gt["lip_detail"][src_idx].astype(np.float32)
    if "albedo" in gt:
        out["albedo"] = gt["albedo"].astype(np.float32)
    if "sh" in gt:
        out["light"] = gt["sh"].astype(np.float32).reshape(9, 3)
    if crop_box is not None:
        box = np.asarray(crop_box, np.float64)
        side = box[:, 2] - box[:, 0]
        k = tw / side
        # x' = k x + cx with x = s (X + tx): s' = k s, tx' = tx + cx / (k s); y is flipped (y = -s (Y + ty)).
        cx = k - 1.0 - 2.0 * box[:, 0] / side
        cy = k - 1.0 - 2.0 * box[:, 1] / side
        s, cam = out["cam"][:, 0].astype(np.float64), out["cam"]
        out["cam"] = np.stack([k * s, cam[:, 1] + cx / (k * s), cam[:, 2] - cy / (k * s)], 1).astype(np.float32)
    return out


@dataclass
class OpenVideo:
    """A decodable clip: its facts (upright size, rotation), the source frame of each model frame ``(n,)`` i64, how
    many source frames the reader decoded (source frames from there on are missing: a truncated file), the window
    starts, and its own audio on its clock (None when the clip's audio is a separate file)."""

    info: VideoInfo
    indices: np.ndarray
    decoded: int
    starts: list[int]
    audio: AudioTrack | None

    @property
    def src_fps(self) -> float:
        return self.info.fps


def open_video(row: dict[str, Any], cfg: PreprocessConfig) -> OpenVideo:
    """``decode_video``'s first pass (frame times, the video's own audio) and the ``validate`` checks that need the
    decoded stream (frame size, frame rate, length)."""
    v = cfg.video
    limits = InputLimits(max_width=v.max_width, max_height=v.max_height, min_fps=v.min_fps, max_fps=v.max_fps,
                         min_frames=1)
    with stage("decode_video"):  # any other reader error is a property of the file
        try:
            scan = scan_video(row["video_path"], limits, audio=not row.get("audio_path"),
                              sample_rate=cfg.audio.sample_rate, threads=v.decode_threads)
        except InputError as e:
            raise ClipFailure("validate" if e.limit else "decode_video", e.problem) from e
    try:
        return _timeline(scan, cfg)
    except BaseException:
        if scan.audio is not None:
            scan.audio.close()
        raise


def _timeline(scan: VideoScan, cfg: PreprocessConfig) -> OpenVideo:
    """The clip's model timeline and windows; a truncated file keeps the frames its container lists (the missing
    ones filled, at most ``MAX_FILLED_FRAMES`` of those the windows need)."""
    v, s = cfg.video, cfg.shards
    times, decoded = scan.times, len(scan.times)
    listed = scan.info.num_frames or 0
    if listed > decoded:
        dt = float(np.median(np.diff(times))) if decoded > 1 else 1.0 / scan.info.fps
        times = np.concatenate([times, times[-1] + dt * np.arange(1, listed - decoded + 1)])
    _, indices = model_timeline(times, v.fps)
    n = len(indices)
    starts = window_starts(n, s.window, s.stride)
    if not starts:
        raise ClipFailure("validate", f"too short: {n} frames at {v.fps:g} fps < one window of {s.window}")
    needed = {int(i) for st in starts for i in indices[st:st + s.window]}
    missing = [i for i in needed if i >= decoded]
    if len(missing) > MAX_FILLED_FRAMES:
        raise ClipFailure(
            "decode_video",
            f"PyAV decoded {decoded} frames of the {listed} the container lists: {len(missing)} of the "
            f"{len(needed)} needed source frames are missing (at most {MAX_FILLED_FRAMES} are filled)")
    return OpenVideo(scan.info, indices, decoded, starts, scan.audio)


def decode_audio(row: dict[str, Any], cfg: PreprocessConfig, video: OpenVideo, num_frames: int) -> np.ndarray:
    """``decode_audio``: mono at ``audio.sample_rate`` from video time 0 (the video's own audio on its clock, or a
    separate file from its first sample), cut or zero-padded to ``num_frames`` video frames, ``(N,)`` f32."""
    track = video.audio
    with stage("decode_audio"):
        if row.get("audio_path"):
            track = AudioTrack.from_file(row["audio_path"], cfg.audio.sample_rate)
        elif track is None:
            raise ClipFailure("decode_audio", "no audio stream")
    with track:
        if track.num_samples == 0:
            raise ClipFailure("decode_audio", "empty audio stream")
        need = int(round(num_frames * cfg.audio.sample_rate / cfg.video.fps))
        return track.window(0.0, need)


def clip_audio_features(audio: np.ndarray, n: int, cfg: PreprocessConfig) -> np.ndarray:
    """``audio_features`` over the whole clip, ``(n, 16, F)``. A missing model file is a configuration error of the
    whole job, not of this clip: ``FileNotFoundError`` propagates."""
    with stage("audio_features", passthrough=(FileNotFoundError,)):
        feats = extract_audio_features(audio, n, cfg.video.fps, cfg.audio)
    return feats


def load_ground_truth(row: dict[str, Any]) -> dict[str, np.ndarray]:
    """The synthetic clip's ground-truth sidecar (``{}`` without one); a broken one fails stage ``landmarks``."""
    if not row.get("gt_path"):
        return {}
    with stage("landmarks", context=f"sidecar {row['gt_path']}"):
        return _load_sidecar(row["gt_path"])


def window_frames(video: OpenVideo, window: int, threads: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``decode_video``'s second pass: ``(start, frames (window, H, W, 3) u8)`` of every window, upright, decoding
    the clip once and holding at most the frames of the windows in progress."""
    starts = video.starts
    frames = iter_model_frames(video.info, video.indices[:starts[-1] + window], threads)
    held: dict[int, np.ndarray] = {}
    w = 0  # next window to complete
    while w < len(starts):
        with stage("decode_video"):
            item = next(frames, None)
        if item is None:  # pragma: no cover - iter_model_frames yields every model frame asked for
            raise ClipFailure("decode_video", f"{video.info.path}: the frames ended before window {starts[w]}")
        k, img = item
        if k >= starts[w]:
            held[k] = img
        while w < len(starts) and k == starts[w] + window - 1:
            yield starts[w], np.stack([held[j] for j in range(starts[w], starts[w] + window)])
            w += 1
            first = starts[w] if w < len(starts) else k + 1
            held = {j: f for j, f in held.items() if j >= first}


def window_fit(landmarks: np.ndarray, valid: np.ndarray, size: int, fitter: Any) -> dict[str, Any]:
    """``fit``: the pseudo-ground truth of one window from its stored landmarks ``(T, 68, 2)`` (pixels of the
    ``size`` x ``size`` frames) and ``valid (T,)``, packed for ``encode_sample(fit=...)``."""
    from avface.data.fit import pack_fit_params  # torch: only for fit.enabled

    with stage("fit"):
        result = fitter(landmarks, valid, size)
        params, layout = pack_fit_params(result.params)
        if not np.all(np.isfinite(params[result.valid])):
            raise ValueError("the fit gave non-finite parameters")
    return {"params": params, "layout": layout, "valid": result.valid, "residual": result.residual,
            "summary": result.summary()}


def window_detection(raw: np.ndarray, detector: Any) -> DetectedPoints:
    """The detector on one window's source frames ``(T, H, W, 3)``: its 68 landmarks and full point set, source
    pixels."""
    with stage("landmarks"):
        return detector.detect_points(raw)


def stored_points(detection: DetectedPoints, filled: np.ndarray, crop_box: list | None, source_hw: tuple[int, int],
                  size: int) -> dict[str, Any]:
    """The detector's full point set in the stored frames' pixels (the same landmark crop or resize as the frames;
    depth scaled like x), zeros where not detected: ``encode_sample``'s ``detector_points``, ``detector_valid``,
    ``point_set``."""
    th, tw = source_hw
    pts = detection.points.astype(np.float32).copy()
    ok = detection.valid & ~filled
    if crop_box is not None:
        box = np.asarray(crop_box, np.float32)
        k = size / (box[:, 2] - box[:, 0])  # crop_resize's scale (square boxes)
        pts[..., :2] = (pts[..., :2] - box[:, None, :2]) * k[:, None, None]
        pts[..., 2] *= k[:, None]
    else:
        pts *= np.array([size / tw, size / th, size / tw], np.float32)
    pts[~ok] = 0.0
    return {"detector_points": pts, "detector_valid": ok, "point_set": detection.point_set}


def window_landmarks(raw: np.ndarray, src_idx: np.ndarray, gt_lm: np.ndarray | None,
                     detection: DetectedPoints | None) -> tuple[np.ndarray, np.ndarray]:
    """``landmarks`` of one window in source pixels: ``(T, 68, 2)`` f32 and ``valid (T,)``, from the sidecar's
    ``landmarks2d`` (indexed by the same source frames) when given, else the detector's ``detection``."""
    if gt_lm is not None:
        ok = src_idx < len(gt_lm)
        lm = np.zeros((len(src_idx), 68, 2), np.float32)
        lm[ok] = gt_lm[src_idx[ok]]
        valid = ok & np.all(np.isfinite(lm), axis=(1, 2))
        lm[~valid] = 0.0
        return lm, valid
    assert detection is not None, "window_landmarks: no sidecar landmarks and no detection"
    return detection.landmarks, detection.valid


def crop_window(raw: np.ndarray, lm: np.ndarray, valid: np.ndarray,
                cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray, list | None]:
    """Frames ``(T, S, S, 3)`` at ``video.image_size`` (landmark crop or plain resize), landmarks in those pixels
    (zero where invalid) and the crop boxes (None without a crop)."""
    v = cfg.video
    size = v.image_size
    th, tw = raw.shape[1:3]
    crop_box = None
    if v.crop == "landmarks":
        boxes = boxes_from_landmarks(lm, valid, v.crop_scale, (th, tw))
        frames, lm_out = [], np.zeros_like(lm)
        for i in range(len(raw)):
            img, sc, off = crop_resize(raw[i], boxes[i], size)
            frames.append(img)
            lm_out[i] = (lm[i] - off) * sc
        frames = np.stack(frames)
        crop_box = boxes.tolist()
    elif v.crop == "none":
        frames = resize_frames(raw, size, size)
        lm_out = lm * np.array([size / tw, size / th], np.float32)
    else:
        raise ValueError(f"video.crop must be none or landmarks, got {v.crop!r}")
    lm_out = np.where(valid[:, None, None], lm_out, 0.0).astype(np.float32)
    return frames, lm_out, crop_box


def window_occlusion_mask(gt: dict[str, np.ndarray], src_idx: np.ndarray, size: int,
                          crop_box: list | None = None) -> np.ndarray | None:
    """The sidecar's occlusion mask of one window in the stored frames' pixels (``crop_box``: the window's landmark
    crop, see :func:`frame_maps`), ``(T, S, S)`` f32 in [0, 1]; None without one."""
    if "occlusion_mask" not in gt:
        return None
    m = gt["occlusion_mask"]
    # Sidecars store uint8 0..255 (255 = hand), masks in flight are float in [0, 1].
    scale = 1.0 / 255.0 if m.dtype == np.uint8 else 1.0
    ok = src_idx < len(m)
    mm = np.zeros((len(src_idx), *m.shape[1:]), np.float32)
    mm[ok] = m[src_idx[ok]].astype(np.float32) * scale
    return frame_maps(mm, size, crop_box, cv2.INTER_LINEAR)


def _occluded(out_split, row, start, frames, feats, lm, valid, meta, normals, cfg, targets=None,
              detector=None, fit=None) -> dict[str, Any]:
    key = sample_key(out_split, row["identity"], row["ytid"], row["utterance"], start, occluded=True)
    seed = stable_seed(cfg.occlusion.seed, key)
    t, h, w, _ = frames.shape
    with stage("occlusion", context=f"window {start}"):
        kwargs: dict[str, Any] = {}
        if np.all(valid):
            kwargs["landmarks"] = lm
        else:  # boxes from the valid frames (nearest), or the centred square; the hand's colour from the skin of
            # the first frame with a detection (NaN: none)
            kwargs["face_boxes"] = boxes_from_landmarks(lm, valid, 1.1, (h, w), smooth=1)
            kwargs["landmarks"] = np.where(valid[:, None, None], lm, np.nan)
        res = occlude_sequence(frames, config=OcclusionConfig.from_dict(cfg.occlusion.config), seed=seed, **kwargs)
    params = to_jsonable(res.params)
    occ_meta = {**meta, "occluded": True, "occlusion": params, "occlusion_seed": seed}
    points = None
    if detector is not None:  # the detector's points on the occluded frames: what inference sees on a covered face
        detector.reset()  # its own short track (the clip's next clean window starts a fresh one)
        detection = window_detection(res.frames, detector)
        detector.reset()
        points = stored_points(detection, np.zeros(t, bool), None, (h, w), w)
    return encode_sample(key, res.frames, feats, lm, valid, occ_meta, normals=normals, occlusion_mask=res.masks,
                         frames_format=cfg.video.frames_format, jpeg_quality=cfg.video.jpeg_quality, gt=targets,
                         fit=fit, **(points or {}))


def _normals_source(cfg: PreprocessConfig, gt: dict, resources: ClipResources) -> str | None:
    src = cfg.normals.source
    synthetic = "normals" in gt or ("vertices" in gt and "cam" in gt)
    if src == "none":
        return None
    if src == "renderer" or (src == "auto" and synthetic):
        if not synthetic:
            raise ClipFailure("normals", "normals.source=renderer but the clip has no synthetic sidecar")
        return "renderer"
    if resources.teacher is not None:
        return "teacher"
    return None


def _normals(source: str | None, gt: dict, src_idx: np.ndarray, frames: np.ndarray, size: int,
             crop_box: list | None, resources: ClipResources) -> np.ndarray | None:
    if source is None:
        return None
    with stage("normals"):
        if source == "renderer":
            from avface.data.normals_teacher import sidecar_normals  # torch: only imported when normals are made

            # nearest: a blend of two unit normals is not one, and "no normal" (zero) must stay zero
            return frame_maps(sidecar_normals(gt, src_idx), size, crop_box, cv2.INTER_NEAREST)
        return resources.teacher(frames)

"""``Reconstructor``: a talking-face video (+ its audio) -> per-frame FLAME parameters (:class:`Reconstruction`).

Three streaming passes over the video, each opening it once, none holding more than a chunk of frames:

1. frame times and audio (:func:`avface.io.video.scan_video`): the model's timeline at the frame rate it was trained
   at (its input contract, :func:`avface.io.video.model_timeline`);
2. landmarks on the model frames (the project's detector, MediaPipe) -> the face track (smoothed crop boxes, frames
   without a face interpolated and flagged, the largest tracked face; :mod:`avface.inference.tracking`);
3. crops + audio windows chunk by chunk -> cached sliding-window inference (:mod:`avface.inference.windows`) ->
   decode, lip refinement, detail -> per-model-frame parameters;
4. ``refine="landmarks"`` (default): pose, camera, expression, jaw and shape fitted to the tracked landmarks chunk
   by chunk (:mod:`avface.inference.refine`; frames without a detected face keep the network's values, ``refined``
   says which were fitted); ``refine="none"``: the network alone (the paper's method). Then everything is
   interpolated to the input's frame times.

No audio (or ``use_audio=False``) -> video-only mode: the audio embedding is the zero embedding, as in modality
dropout, and the lip offsets are zero (a warning says so).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from avface.audio import extract_audio_features
from avface.audio.config import AudioConfig
from avface.fitting.landmarks import RefineConfig
from avface.inference.checkpoint import audio_config_for, load_for_inference
from avface.inference.refine import REFINE_MODES, refine_store
from avface.inference.result import Reconstruction
from avface.inference.tracking import FaceTrack, track_face
from avface.inference.windows import SlidingWindows, frame_features, split_codes
from avface.io.video import (
    SAMPLE_RATE,
    AudioTrack,
    InputLimits,
    VideoInfo,
    iter_model_frames,
    model_timeline,
    resize_frames,
    scan_video,
)
from avface.landmarks.crop import crop_resize
from avface.models.outputs import AVFaceOutput
from avface.models.stages import MODEL_STAGES, Stage
from avface.render.renderer import uv_to_grid
from avface.trained.contract import InputContract, legacy_contract

log = logging.getLogger(__name__)

#: the model's stages as plain names (the CLI's choices, ``Reconstruction.meta["stages"]``)
STAGES: tuple[str, ...] = tuple(str(s) for s in MODEL_STAGES)


@dataclass
class ReconstructConfig:
    """Options of :class:`Reconstructor` (the CLI's flags map onto these)."""

    stages: tuple[str, ...] | None = None  # None: every stage the model has
    batch_size: int | None = None  # frames per CNN batch (None: 8 on CPU, where bigger batches run slower; 32 on
    # GPU); windows per transformer call: window_batch
    window_batch: int = 128  # windows per transformer call (cheap per window: large batches amortise the overhead)
    chunk: int = 256  # model frames per streaming chunk
    window: int | None = None  # None: the model's window (16)
    rule: str = "mean"  # sliding-window aggregation (avface.inference.windows)
    # landmarks: track the face and crop like preprocessing | none: resize whole frames (no detector runs: every
    # frame counts as face_detected)
    crop: str = "landmarks"
    # box side = crop_scale x landmark extent. None: the framing of the training clips, from the model's input
    # contract (the shards' crop scale, or the framing of face-crop videos preprocessed with crop=none); videos that
    # already are such face crops can use crop=none, exactly what training saw. Set: overrides it, with a warning
    crop_scale: float | None = None
    fps: float | None = None  # the model's timeline; None: the frame rate it was trained at (its input contract)
    smooth: int = 5  # moving average of the crop boxes, frames
    detector: str = "mediapipe"  # landmark detector (avface.landmarks.get_detector)
    mediapipe_python: str | None = None
    detect_max_side: int = 960  # frames are downscaled to this longest side for landmark detection
    use_audio: bool = True
    # landmarks: fit the network's prediction to the tracked landmarks (avface.inference.refine) | none: the network
    # alone (the paper's method). Needs crop=landmarks (crop=none runs no detector: nothing to fit to)
    refine: str = "landmarks"
    refine_fit: RefineConfig = field(default_factory=RefineConfig)
    audio_margin: int = 25  # model frames of audio context on each side of a chunk for its features
    limits: InputLimits = field(default_factory=InputLimits)
    progress: bool = True


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; others pass through (``cuda`` without one is an error)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return device


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="frame", disable=not enabled, leave=False, dynamic_ncols=True)


def interpolate_to_times(values: np.ndarray, model_times: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Linear interpolation of per-model-frame ``values (M, ...)`` onto ``times (N,)`` (held at the ends)."""
    m = len(model_times)
    if len(times) == m and np.allclose(times, model_times, rtol=0, atol=1e-9):
        return values  # the input is on the model's timeline: nothing to interpolate, no copy
    if m == 1:
        return np.repeat(values[:1], len(times), axis=0)
    pos = np.clip(np.interp(times, model_times, np.arange(m, dtype=np.float64)), 0, m - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, m - 1)
    w = (pos - lo).reshape(-1, *([1] * (values.ndim - 1)))
    if values.dtype == bool:
        return np.where(w < 0.5, values[lo], values[hi])
    out = values[lo] * (1 - w) + values[hi] * w
    return out.astype(values.dtype)


def vertex_uv(face_model: torch.nn.Module) -> torch.Tensor:
    """(V, 2) one UV coordinate per vertex (the first face corner that uses it)."""
    faces = face_model.faces.reshape(-1)
    uvf = face_model.uv_faces.reshape(-1)
    uv = torch.zeros(face_model.num_vertices, 2, device=faces.device)
    uv[faces.flip(0)] = face_model.uv_coords[uvf.flip(0)]  # flipped: the first occurrence is written last
    return uv


class Reconstructor:
    """``Reconstructor(checkpoint).run(video, audio=None) -> Reconstruction``.

    ``checkpoint``: a training checkpoint path, ``models:/NAME@ALIAS`` (the local MLflow registry), or None for the
    newest checkpoint under the default training output. :meth:`from_model` takes an in-memory model (tests).
    """

    def __init__(self, checkpoint: str | os.PathLike | None = None, device: str = "auto",
                 config: ReconstructConfig | None = None):
        dev = resolve_device(device)
        loaded = load_for_inference(checkpoint, dev)
        self._setup(loaded.model, loaded.face_model, loaded.audio, loaded.contract, dev, config,
                    {"checkpoint": loaded.source, **loaded.meta_summary,
                     **({"shipped_model": True} if loaded.shipped else {})})

    @classmethod
    def from_model(cls, model: torch.nn.Module, face_model: torch.nn.Module | None = None,
                   audio: AudioConfig | None = None, device: str = "cpu",
                   config: ReconstructConfig | None = None, contract: InputContract | None = None) -> Reconstructor:
        """An in-memory :class:`avface.models.avface.AVFace` (e.g. untrained, in tests); ``audio`` the features it
        reads (default: mel with the model's ``audio_dim`` bins); ``contract`` how its inputs were made (a loaded
        checkpoint's ``TrainedModel.contract``; default: the legacy contract, 25 fps and crop scale 2.2)."""
        self = cls.__new__(cls)
        audio = audio or audio_config_for(model)
        self._setup(model, face_model if face_model is not None else model.face_model, audio,
                    contract or legacy_contract(model.config.to_dict(), audio.kind),
                    resolve_device(device), config, {"checkpoint": None})
        return self

    def _setup(self, model, face_model, audio: AudioConfig, contract: InputContract, device, config,
               meta) -> None:
        if face_model is None:
            raise ValueError("reconstruction needs the model's face model")
        self.device = device
        self.model = model.to(device).eval()
        self.face_model = face_model.to(device)
        if int(audio.window) != int(model.config.audio_window):
            raise ValueError(f"audio window {audio.window} != the model's audio_window {model.config.audio_window}")
        self.audio = audio
        self.config = config or ReconstructConfig()
        self.meta = meta
        self.contract = contract
        where = str(meta.get("checkpoint") or "model")
        self.fps = contract.resolve("fps", self.config.fps, where)
        self.crop_scale = contract.resolve("crop_scale", self.config.crop_scale, where)
        self._detector = None
        # the stages the model has trained: up to its current stage (load_trained sets the furthest one)
        upto = STAGES.index(getattr(model, "stage", None) or model.config.stages[-1])
        have = tuple(s for s in STAGES[:upto + 1] if s in model.config.stages)
        want = tuple(self.config.stages) if self.config.stages else have
        bad = [s for s in want if s not in STAGES]
        if bad:
            raise ValueError(f"unknown stage(s) {bad}; choose from {STAGES}")
        missing = [s for s in want if s not in have]
        if missing:
            raise ValueError(f"stage(s) {missing} not trained in this model (it runs {have}; model.stage is "
                             f"{getattr(model, 'stage', None)!r})")
        if Stage.COARSE not in want:
            want = (str(Stage.COARSE), *want)
        self.stages = tuple(s for s in STAGES if s in want)
        if Stage.DETAIL in self.stages and getattr(model, "renderer", None) is None:
            raise ValueError("the detail stage needs the model's renderer (UV maps)")
        self.window = int(self.config.window or model.config.window)
        self.image_size = int(model.config.image_size)
        if self.config.refine not in REFINE_MODES:
            raise ValueError(f"refine must be one of {REFINE_MODES}, got {self.config.refine!r}")

    # ------------------------------------------------------------------------------------------------ detector
    def _get_detector(self):
        if self._detector is None:
            from avface.landmarks import get_detector

            self._detector = get_detector(self.config.detector, mediapipe_python=self.config.mediapipe_python)
        return self._detector

    def close(self) -> None:
        """Stop the landmark detector's worker process (a new one starts on the next :meth:`run`)."""
        if self._detector is not None:
            self._detector.close()
            self._detector = None

    def __enter__(self) -> Reconstructor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------ passes
    def _track(self, info: VideoInfo, source_index: np.ndarray) -> FaceTrack:
        cfg = self.config
        m = len(source_index)
        h, w = info.height, info.width
        if cfg.crop == "none":
            box = np.array([0, 0, w, h], np.float32)
            return FaceTrack(np.tile(box, (m, 1)), np.ones(m, bool), np.zeros((m, 68, 2), np.float32))
        if cfg.crop != "landmarks":
            raise ValueError(f"crop must be landmarks or none, got {cfg.crop!r}")
        det = self._get_detector()
        det.reset()
        scale = min(1.0, cfg.detect_max_side / max(h, w))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        lms, found = np.zeros((m, 68, 2), np.float32), np.zeros(m, bool)
        batch: list[np.ndarray] = []
        ks: list[int] = []
        full = _FullPoints(m) if self._takes_landmarks else None  # the landmark input's points

        def flush() -> None:
            if batch:
                if full is None:
                    lm, ok = det(np.stack(batch))
                else:
                    detection = det.detect_points(np.stack(batch))
                    lm, ok = detection.landmarks, detection.valid
                    full.add(ks, detection, scale)
                lms[ks], found[ks] = lm / scale, ok
                batch.clear()
                ks.clear()

        with _progress(m, "landmarks", cfg.progress) as bar:
            for k, img in iter_model_frames(info, source_index):
                batch.append(resize_frames(img, *size))
                ks.append(k)
                if len(batch) == 32:
                    flush()
                    bar.update(32)
            n = len(batch)
            flush()
            bar.update(n)
        track = track_face(lms, found, (h, w), self.crop_scale, cfg.smooth, source=info.path)
        if full is not None:
            track = full.attach(track, self.contract, info.path)
        return track

    def _crop(self, img: np.ndarray, box: np.ndarray) -> np.ndarray:
        s = self.image_size
        if self.config.crop == "none":
            return resize_frames(img, s, s)
        return crop_resize(img, box, s)[0]

    @property
    def _takes_landmarks(self) -> bool:
        """The model reads the detector's points (``model.landmark_input``)."""
        return bool(getattr(self.model.config, "landmark_input", False))

    def _points(self, track: FaceTrack, first: int, count: int) -> dict[str, torch.Tensor]:
        """``frame_features``' landmark input of model frames ``[first, first + count)``: the detector's points in
        the crops' pixels and their validity (empty for an image-only model; without points, e.g. ``crop=none``:
        no detection, the zero landmark embedding)."""
        if not self._takes_landmarks:
            return {}
        got = track.crop_points(first, count, self.image_size)
        if got is None:
            return {}
        pts, ok = got
        return {"points": torch.from_numpy(pts).to(self.device), "points_valid": torch.from_numpy(ok).to(self.device)}

    def _audio_windows(self, track: AudioTrack | None, a: int, b: int, m: int) -> np.ndarray | None:
        """Audio windows (b - a, 16, F) of model frames [a, b), computed with ``audio_margin`` frames of context."""
        if track is None:
            return None
        g = self.config.audio_margin
        fa, fb = max(0, a - g), min(m, b + g)
        n_samples = int(round((fb - fa) * SAMPLE_RATE / self.fps))
        wave = track.window(fa / self.fps, n_samples)
        feats = extract_audio_features(wave, fb - fa, self.fps, self.audio)
        return np.ascontiguousarray(feats[a - fa: b - fa])

    @torch.no_grad()
    def _finish_frames(self, codes: torch.Tensor, payload: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Aggregated codes of K frames -> decoded parameters (+ lip offsets, displacement) as numpy."""
        model = self.model
        parts = split_codes(codes, model)
        out = AVFaceOutput(**{k: v[None] for k, v in parts.items()})
        audio = payload.get("audio")
        res = dict(parts)
        if Stage.LIP in self.stages or Stage.DETAIL in self.stages:
            out = model.decode(out)
        if Stage.LIP in self.stages and model.lip is not None:
            out = model.refine_lips(out, None if audio is None else audio[None], None)
            res["lip_offsets"] = out.lip_offsets[0]
        if Stage.DETAIL in self.stages:
            images = payload["images"].float().div_(255.0)[None]
            out = model.fine(out, images, None if audio is None else audio[None])
            d = out.displacement[0]  # (K, 1, U, U)
            grid = uv_to_grid(self._vertex_uv)[None, None].expand(len(d), 1, -1, -1)
            res["displacement"] = torch.nn.functional.grid_sample(d, grid, align_corners=False)[:, 0, 0]
        return {k: v.float().cpu().numpy() for k, v in res.items()}

    # ------------------------------------------------------------------------------------------------ run
    def _open(self, video: str | os.PathLike,
              audio: str | os.PathLike | None) -> tuple[VideoInfo, np.ndarray, AudioTrack | None, str | None]:
        """Pass 1: ``(info, frame times (N,), audio track or None, audio source)``; the caller closes the track."""
        cfg = self.config
        scan = scan_video(video, cfg.limits, audio=cfg.use_audio and audio is None)
        info = scan.info
        if cfg.use_audio and audio is not None:
            try:
                return info, scan.times, AudioTrack.from_file(audio), str(audio)
            except BaseException:
                if scan.audio is not None:
                    scan.audio.close()
                raise
        if scan.audio is None:
            log.warning("%s: %s; video-only mode (audio embedding zeroed as in modality dropout, no lip offsets)",
                        info.path, "audio disabled" if not cfg.use_audio else "no audio stream")
            return info, scan.times, None, None
        return info, scan.times, scan.audio, info.path

    def model_inputs(self, video: str | os.PathLike, audio: str | os.PathLike | None = None,
                     with_points: bool = False) -> tuple:
        """What :meth:`run` feeds the model for ``video``, in memory (short clips: checks and debugging): the crops
        ``(M, S, S, 3)`` u8 of the model frames and their audio features ``(M, window, F)`` f32 (None without
        audio); ``with_points`` (a landmark-input model): also the detector's points in the crops' pixels
        ``(M, P, 3)`` f32 and their validity ``(M,)`` (None, None for an image-only model)."""
        info, times, audio_track, _ = self._open(video, audio)
        try:
            _, source_index = model_timeline(times, self.fps)
            m = len(source_index)
            track = self._track(info, source_index)
            chunks = list(self._chunks(info, source_index, track, audio_track, m))
        finally:
            if audio_track is not None:
                audio_track.close()
        frames = np.concatenate([c[1] for c in chunks])
        feats = None if audio_track is None else np.concatenate([c[2] for c in chunks])
        if not with_points:
            return frames, feats
        got = track.crop_points(0, m, self.image_size) if self._takes_landmarks else None
        return (frames, feats) + ((None, None) if got is None else got)

    def run(self, video: str | os.PathLike, audio: str | os.PathLike | None = None) -> Reconstruction:
        """Reconstruct ``video``; ``audio`` a separate audio file (else the video's own audio, if any)."""
        t_start = time.perf_counter()
        cfg = self.config
        info, times, audio_track, audio_source = self._open(video, audio)
        try:
            model_times, source_index = model_timeline(times, self.fps)
            m = len(model_times)
            track = self._track(info, source_index)
            if Stage.DETAIL in self.stages:
                self._vertex_uv = vertex_uv(self.face_model)
            per_frame = self._model_pass(info, source_index, track, audio_track, m)
            t_fit, c_fit = time.perf_counter(), time.process_time()
            refined_m = self._refine(per_frame, track)
            t_fit, c_fit = time.perf_counter() - t_fit, time.process_time() - c_fit
            audio_valid_m = np.zeros(m, bool) if audio_track is None else audio_track.valid(model_times)
        finally:
            if audio_track is not None:
                audio_track.close()

        n = len(times)
        interp = {}
        for k in list(per_frame):  # one array at a time: a long video never holds two copies of everything
            interp[k] = interpolate_to_times(per_frame.pop(k), model_times, times)
        boxes = interpolate_to_times(track.boxes, model_times, times)
        detected = interpolate_to_times(track.detected, model_times, times)
        refined = interpolate_to_times(refined_m, model_times, times)
        # the detector's points of the model frame nearest each input frame (the overlay draws them)
        nearest_m = np.rint(interpolate_to_times(np.arange(m, dtype=np.float64), model_times, times)).astype(int)
        landmarks = track.landmarks[nearest_m] if cfg.crop == "landmarks" else None
        audio_valid = interpolate_to_times(audio_valid_m, model_times, times)
        zeros3 = np.zeros((n, 3), np.float32)
        lip_ids = None
        if "lip_offsets" in interp:
            lip_ids = self.model.lip_ids.cpu().numpy().astype(np.int64)
        seconds = time.perf_counter() - t_start
        meta = {**self.meta, "input": info.path, "audio": audio_source, "stages": list(self.stages),
                "face_model": getattr(self.face_model, "name", None), "audio_kind": self.audio.kind,
                "window": self.window, "rule": cfg.rule, "crop": cfg.crop, "crop_scale": self.crop_scale,
                "detector": cfg.detector if cfg.crop == "landmarks" else None, "model_frames": m,
                "model_times_start": float(model_times[0]), "codec": info.codec, "seconds": seconds,
                "device": self.device, "refine": cfg.refine if cfg.crop == "landmarks" else "none",
                "refined_model_frames": int(refined_m.sum()), "refine_seconds": t_fit, "refine_cpu_seconds": c_fit}
        return Reconstruction(
            times=times, shape=interp["shape"], expression=interp["expression"], jaw_pose=interp["jaw"],
            global_pose=interp["global_pose"], neck_pose=zeros3, eye_pose=np.zeros((n, 6), np.float32),
            cam=interp["cam"], crop_box=boxes.astype(np.float32), albedo=interp["albedo"],
            light=interp["light"], face_detected=detected, audio_valid=audio_valid, valid=np.ones(n, bool),
            fps=self.fps, source_fps=float(info.fps), frame_size=(info.width, info.height),
            rotation=info.rotation, image_size=self.image_size, lip_offsets=interp.get("lip_offsets"),
            lip_vertex_ids=lip_ids,
            displacement=interp["displacement"].astype(np.float16) if "displacement" in interp else None,
            refined=refined, landmarks=landmarks, meta=meta)

    def _refine(self, per_frame: dict[str, np.ndarray], track: FaceTrack) -> np.ndarray:
        """Pass 4 (in place on the per-model-frame arrays): the landmark fit, or nothing. -> refined (M,) bool."""
        cfg = self.config
        m = len(track.detected)
        if cfg.refine == "none":
            return np.zeros(m, bool)
        if cfg.crop != "landmarks":
            log.info("refine=%s: crop=none runs no landmark detector, nothing to fit to; the network alone",
                     cfg.refine)
            return np.zeros(m, bool)
        lip_ids = getattr(self.model, "lip_ids", None) if "lip_offsets" in per_frame else None
        with torch.no_grad():
            return refine_store(per_frame, track.landmarks, track.detected, track.boxes, self.face_model,
                                chunk=max(cfg.chunk, 1), config=cfg.refine_fit, lip_ids=lip_ids)

    def _chunks(self, info: VideoInfo, source_index: np.ndarray, track: FaceTrack, audio_track: AudioTrack | None,
                m: int) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """Pass 3's inputs chunk by chunk: ``(first model frame a, crops (K, S, S, 3) u8, audio windows
        (K, window, F) f32 or None)``."""
        chunk = max(self.config.chunk, 1)
        buf: list[np.ndarray] = []
        a = 0
        for k, img in iter_model_frames(info, source_index):
            buf.append(self._crop(img, track.boxes[k]))
            if len(buf) == chunk or k == m - 1:
                yield a, np.stack(buf), self._audio_windows(audio_track, a, a + len(buf), m)
                a += len(buf)
                buf = []
        if a != m:  # pragma: no cover - iter_model_frames always yields m frames
            raise RuntimeError(f"{info.path}: {a} model frames decoded, expected {m}")

    def _model_pass(self, info: VideoInfo, source_index: np.ndarray, track: FaceTrack,
                    audio_track: AudioTrack | None, m: int) -> dict[str, np.ndarray]:
        cfg = self.config
        bs = max(1, cfg.batch_size or (8 if self.device == "cpu" else 32))
        sw = SlidingWindows(self.model, self.window, batch_size=max(1, cfg.window_batch), rule=cfg.rule)
        store: dict[str, np.ndarray] = {}  # (m, ...) per model frame, filled as frames become final
        need_images = Stage.DETAIL in self.stages

        def take(out) -> None:
            if out is None:
                return
            first = out[0]
            for k, v in self._finish_frames(out[1], out[2]).items():
                if k not in store:
                    store[k] = np.zeros((m, *v.shape[1:]), v.dtype)
                store[k][first:first + len(v)] = v

        with _progress(m, "reconstruct", cfg.progress) as bar:
            for a, frames, audio in self._chunks(info, source_index, track, audio_track, m):
                crops = torch.from_numpy(frames).to(self.device)  # (K, S, S, 3) u8
                images = crops.permute(0, 3, 1, 2).float().div_(255.0)
                aw = None if audio is None else torch.from_numpy(audio).to(self.device)
                payload = {} if aw is None else {"audio": aw}
                if need_images:
                    payload["images"] = crops.permute(0, 3, 1, 2)
                take(sw.push(frame_features(self.model, images, aw, bs, **self._points(track, a, len(frames))),
                             payload))
                bar.update(len(frames))
            take(sw.finish())
        return store


class _FullPoints:
    """The detector's full point sets of a video's model frames, gathered batch by batch in :meth:`Reconstructor._track`
    (the landmark input of a ``landmark_input`` model), kept for the tracked face's frames only."""

    def __init__(self, m: int):
        self.m = m
        self.points: np.ndarray | None = None
        self.point_set: str | None = None

    def add(self, ks: list[int], detection, scale: float) -> None:
        """``detection``: a :class:`~avface.landmarks.detector.DetectedPoints` of the frames ``ks`` resized by
        ``scale`` for the detector."""
        if self.points is None:
            self.points = np.zeros((self.m, detection.points.shape[1], 3), np.float32)
            self.point_set = detection.point_set
        self.points[ks] = detection.points / scale

    def attach(self, track: FaceTrack, contract: InputContract, where: str) -> FaceTrack:
        """``track`` with the points (zeros where the tracked face was not detected); the set is checked against
        the model's input contract (:class:`~avface.trained.contract.LandmarkInputMismatch`)."""
        contract.check_landmark_points(self.point_set, where)
        pts = np.where(track.detected[:, None, None], self.points, 0.0).astype(np.float32)
        return dataclasses.replace(track, points=pts, point_set=self.point_set)


def summary_lines(rec: Reconstruction, outputs: list[Path]) -> list[str]:
    """The end-of-run summary: frames, frames without a face, seconds, frames/s, outputs written."""
    secs = float(rec.meta.get("seconds", float("nan")))
    fps = rec.num_frames / secs if secs and not math.isnan(secs) else float("nan")
    model = rec.meta.get("checkpoint") or "in-memory model"
    if rec.meta.get("shipped_model"):
        model += (" (the project's default model, trained on synthetic faces only: no trained or registered model "
                  "was found; see its MODEL_CARD.md)")
    lines = [f"model          {model}",
             f"input          {rec.meta.get('input')}",
             f"frames         {rec.num_frames} ({rec.meta.get('model_frames')} at {rec.fps:g} fps for the model)",
             f"without face   {rec.frames_without_face} (interpolated, flagged in face_detected)",
             f"refined        {int(np.asarray(rec.refined).sum())} (fitted to the landmarks; --refine "
             f"{rec.meta.get('refine', 'none')})",
             f"audio          {rec.meta.get('audio') or 'none (video-only mode)'}",
             f"stages         {','.join(rec.meta.get('stages', []))}",
             f"seconds        {secs:.2f} ({fps:.1f} frames/s)"]
    lines += [f"wrote          {p}" for p in outputs]
    return lines

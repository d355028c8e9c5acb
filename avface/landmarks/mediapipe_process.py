"""MediaPipe FaceMesh in a worker process running the side venv's python (``.venv-mediapipe``).

mediapipe 0.10.21 pins numpy<2 and cannot be imported next to this project's numpy 2 / torch, so
``scripts/install.sh`` puts it in its own venv and :class:`MediaPipeProcessDetector` streams frames to
``_mediapipe_worker.py`` running there (length-prefixed JSON header + raw bytes; the protocol and its framing,
``read_message`` / ``write_message``, are in that file). One worker per detector instance (one per Ray task),
started on first use, closed by :meth:`close`, ``with`` or ``__del__``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from avface.landmarks._mediapipe_worker import read_message, write_message
from avface.landmarks.detector import DetectedPoints, LandmarkDetector
from avface.landmarks.mapping import mediapipe_detection

log = logging.getLogger(__name__)

WORKER_SCRIPT = Path(__file__).with_name("_mediapipe_worker.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
#: where ``scripts/install.sh`` creates the side venv
DEFAULT_SIDE_VENV = REPO_ROOT / ".venv-mediapipe"
ENV_PYTHON = "AVFACE_MEDIAPIPE_PYTHON"
ENABLE_HINT = ("run `make install` (or `bash scripts/install.sh`), which creates .venv-mediapipe with "
               "mediapipe==0.10.21, or point landmarks.mediapipe_python / $AVFACE_MEDIAPIPE_PYTHON at a python "
               "that has it")


class MediaPipeWorkerError(RuntimeError):
    """The worker process died, could not start, or reported a failure."""


def resolve_mediapipe_python(configured: str | None = None) -> Path | None:
    """The side venv's python: ``configured`` (config key ``landmarks.mediapipe_python``), else
    ``$AVFACE_MEDIAPIPE_PYTHON``, else ``<repo>/.venv-mediapipe/bin/python`` if it exists, else None.

    An explicitly given path (config or env var) that does not exist is an error, not a silent fallback.
    """
    for origin, value in (("landmarks.mediapipe_python", configured), (f"${ENV_PYTHON}", os.environ.get(ENV_PYTHON))):
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"{origin}={value}: no such python; {ENABLE_HINT}")
            return path
    default = DEFAULT_SIDE_VENV / "bin" / "python"
    return default if default.is_file() else None


def _tail(f: IO[bytes] | None, n: int = 2000) -> str:
    if f is None:
        return ""
    try:
        f.flush()
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - n))
        return f.read().decode(errors="replace").strip()
    except (OSError, ValueError):
        return "(stderr unavailable)"


class MediaPipeProcessDetector(LandmarkDetector):
    """``detector(frames (T,H,W,3) u8 RGB) -> (landmarks (T,68,2) f32 px, valid (T,) bool)`` via the worker.

    Video mode (``static_image_mode=False``: the face mesh tracks between frames of a clip), ``refine_landmarks=True``,
    one face. :meth:`reset` between clips. Frames without a face: ``valid=False``, zero landmarks.
    """

    name = "mediapipe"
    point_set = "mediapipe478"

    def __init__(self, python: str | os.PathLike, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, static_image_mode: bool = False):
        self.python = str(python)
        self._options = {"min_detection_confidence": float(min_detection_confidence),
                         "min_tracking_confidence": float(min_tracking_confidence),
                         "static_image_mode": bool(static_image_mode)}
        self._proc: subprocess.Popen | None = None
        self._stderr: IO[bytes] | None = None
        self.mediapipe_version: str | None = None

    # --- process management -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker (no-op if running) and wait for its ready message (mediapipe imported, mesh built)."""
        if self._proc is not None and self._proc.poll() is None:
            return
        self._cleanup()
        # stderr goes to a file, not a pipe: mediapipe logs there and nobody would drain a pipe (the worker would
        # block once it is full); the file's tail goes into error messages.
        self._stderr = tempfile.TemporaryFile(prefix="avface-mediapipe-", suffix=".stderr")
        env = dict(os.environ)
        env.setdefault("GLOG_minloglevel", "2")  # keep mediapipe's C++ info lines out of the stderr tail
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            # -I: isolated (no PYTHONPATH, no user site, no script dir on sys.path) so nothing of the main
            # environment (numpy 2, avface/landmarks/*.py as top-level modules) leaks into the side python
            self._proc = subprocess.Popen([self.python, "-I", str(WORKER_SCRIPT), json.dumps(self._options)],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                          env=env, close_fds=True)
        except OSError as e:
            self._cleanup()
            raise MediaPipeWorkerError(f"cannot start the MediaPipe worker with {self.python}: {e}; "
                                       f"{ENABLE_HINT}") from e
        header = self._receive()[0]
        self.mediapipe_version = header.get("mediapipe")

    @property
    def pid(self) -> int | None:
        """The running worker's process id (None before :meth:`start` / after :meth:`close`)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def close(self) -> None:
        """Ask the worker to exit (kill it after 5 s) and release the pipes. Idempotent."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                self._send({"cmd": "close"})
                self._receive()
                proc.wait(timeout=5)
            except (MediaPipeWorkerError, OSError, ValueError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            for s in (self._proc.stdin, self._proc.stdout):
                if s is not None:
                    s.close()
            self._proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> MediaPipeProcessDetector:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # safety net: a forgotten detector must not leave an orphan worker
        try:
            self._cleanup()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # --- protocol -------------------------------------------------------------------------------------------------
    def _dead(self, what: str) -> MediaPipeWorkerError:
        proc = self._proc
        rc = None
        if proc is not None:
            try:
                rc = proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
        how = f"exit code {rc}"
        if rc is not None and rc < 0:
            how += f": killed by {signal.Signals(-rc).name}"
        err = MediaPipeWorkerError(
            f"MediaPipe worker ({self.python} {WORKER_SCRIPT.name}) {what} ({how}); stderr tail:\n"
            f"{_tail(self._stderr) or '(empty)'}")
        self._cleanup()  # the next call starts a fresh worker
        return err

    def _send(self, header: dict[str, Any], payload: memoryview | bytes = b"") -> None:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            write_message(self._proc.stdin, header, payload)
        except (BrokenPipeError, OSError, ValueError) as e:
            raise self._dead(f"died before reading a request ({type(e).__name__})") from e

    def _receive(self) -> tuple[dict[str, Any], bytes]:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            message = read_message(self._proc.stdout)
        except EOFError as e:
            raise self._dead("exited mid-reply") from e
        if message is None:
            raise self._dead("exited")
        header, payload = message
        if not header.get("ok"):
            raise MediaPipeWorkerError(f"MediaPipe worker ({self.python}) failed: {header.get('error')}; stderr tail:\n"
                                       f"{_tail(self._stderr)}")
        return header, payload

    # --- detector interface ---------------------------------------------------------------------------------------
    def process_raw(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(T,H,W,3) u8 RGB -> (points (T,478,3) f32 normalised x, y, z as MediaPipe gives them, found (T,))``."""
        frames = np.ascontiguousarray(frames, dtype=np.uint8)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (T, H, W, 3) u8 RGB, got {frames.shape}")
        if self._proc is None:
            self.start()  # first use, or the call after a crash was reported
        elif self._proc.poll() is not None:
            raise self._dead("died")  # mid-clip: report it, never silently restart (tracking state lost)
        self._send({"cmd": "process", "shape": list(frames.shape)}, memoryview(frames).cast("B"))
        header, payload = self._receive()
        t = len(frames)
        pts = np.frombuffer(payload, "<f4").reshape(t, int(header["points"]), 3).astype(np.float32)
        return pts, np.asarray(header["found"], bool)

    def detect_points(self, frames: np.ndarray) -> DetectedPoints:
        """The full point set (478 points with relative depth, pixels) and the iBUG-68 landmarks mapped from it."""
        pts, found = self.process_raw(frames)
        return mediapipe_detection(pts, found, frames.shape[1:3])

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = self.detect_points(frames)
        return d.landmarks, d.valid

    def reset(self) -> None:
        """Drop the tracking state (between clips). Starts the worker if it is not running."""
        if self._proc is None or self._proc.poll() is not None:
            self.start()  # a fresh worker has no state; also restarts one that crashed on the previous clip
            return
        self._send({"cmd": "reset"})
        self._receive()

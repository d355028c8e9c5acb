"""MediaPipe FaceMesh worker: runs *inside the side venv* (``.venv-mediapipe``: mediapipe 0.10.21, numpy<2).

Started by :class:`avface.landmarks.mediapipe_process.MediaPipeProcessDetector` as
``<side python> -I _mediapipe_worker.py '<json options>'``; imports only the standard library, numpy and mediapipe
(never avface: the main package needs numpy 2 / torch).

Protocol (both directions): one message = ``uint32 LE header length`` + UTF-8 JSON header + ``header["nbytes"]``
raw payload bytes (no pickle). :func:`read_message` / :func:`write_message` are the one framing: the main process
imports them from here (this module's top level is standard library only).

* worker -> main on start: ``{"ok": true, "ready": true, "mediapipe": version}``
* ``{"cmd": "process", "shape": [T, H, W, 3]}`` + T*H*W*3 u8 RGB bytes -> ``{"ok": true, "found": [bool] * T,
  "points": P}`` + T*P*3 f32 LE (MediaPipe's normalised x, y, z; zeros where no face)
* ``{"cmd": "reset"}`` -> ``{"ok": true}`` (new FaceMesh: tracking state of the previous clip dropped)
* ``{"cmd": "close"}`` -> ``{"ok": true}``, then exit 0. EOF on stdin also ends the worker.
* a failed request -> ``{"ok": false, "error": "..."}`` and the worker goes on.
"""

import json
import os
import struct
import sys
import traceback

N_POINTS = 478  # refine_landmarks=True: 468 mesh points + 10 iris points
# The fallback's crop: this many times the full-range detector's face box (FaceMesh then sees the face at about the
# size its own short-range detector finds, as in a face-cropped clip)
ROI_SCALE = 2.2


class FaceMeshTracker:
    """MediaPipe FaceMesh over one clip's frames in order (video mode: it tracks between frames), with a fallback
    for faces too small for FaceMesh's own detector (its short-range BlazeFace misses a face a quarter of a 1080p
    frame high, a medium shot): where the whole frame gives no face, MediaPipe's full-range face detector finds the
    face's box and a second FaceMesh tracks inside a square crop around it (kept while it tracks, found again when
    it loses the face). ``process(frame (H,W,3) u8 RGB) -> (N_POINTS, 3) f32`` normalised to the whole frame (x, y
    in [0, 1], z in units of its width) or None. Imports mediapipe when made (the worker's top level stays standard
    library: the main process imports the framing from this module)."""

    def __init__(self, options: dict):
        from mediapipe.python.solutions import face_detection, face_mesh

        self._face_mesh = face_mesh
        self._kw = dict(static_image_mode=bool(options.get("static_image_mode", False)), max_num_faces=1,
                        refine_landmarks=True,
                        min_detection_confidence=float(options.get("min_detection_confidence", 0.5)),
                        min_tracking_confidence=float(options.get("min_tracking_confidence", 0.5)))
        self._whole = face_mesh.FaceMesh(**self._kw)
        self._crop_mesh = face_mesh.FaceMesh(**self._kw)
        # model_selection=1: the full-range model (faces up to about 5 m), for the boxes FaceMesh's own detector misses
        self._boxes = face_detection.FaceDetection(model_selection=1,
                                                   min_detection_confidence=self._kw["min_detection_confidence"])
        self._roi: tuple[int, int, int] | None = None  # (x0, y0, side) px of the fallback's crop

    def process(self, frame):
        import numpy as np

        res = self._whole.process(frame)
        if res.multi_face_landmarks:
            self._roi = None
            return self._points(res)
        h, w = frame.shape[:2]
        if self._roi is None:
            self._roi = self._find_roi(frame)
            if self._roi is None:
                return None
            self._crop_mesh.close()  # a new crop: the previous crop's tracking state does not apply
            self._crop_mesh = self._face_mesh.FaceMesh(**self._kw)
        x0, y0, side = self._roi
        crop = np.zeros((side, side, 3), np.uint8)  # outside the frame: black
        ax, ay, bx, by = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
        crop[ay - y0:by - y0, ax - x0:bx - x0] = frame[ay:by, ax:bx]
        res = self._crop_mesh.process(crop)
        if not res.multi_face_landmarks:
            self._roi = None  # lost: find the box again on the next frame
            return None
        pts = self._points(res)
        pts[:, 0] = (x0 + pts[:, 0] * side) / w
        pts[:, 1] = (y0 + pts[:, 1] * side) / h
        pts[:, 2] = pts[:, 2] * side / w
        return pts

    def _find_roi(self, frame):
        res = self._boxes.process(frame)
        if not res.detections:
            return None
        h, w = frame.shape[:2]
        best = max(res.detections, key=lambda d: d.score[0])
        box = best.location_data.relative_bounding_box
        cx, cy = (box.xmin + box.width / 2) * w, (box.ymin + box.height / 2) * h
        side = max(int(round(ROI_SCALE * max(box.width * w, box.height * h))), 32)
        return int(round(cx - side / 2)), int(round(cy - side / 2)), side

    @staticmethod
    def _points(res):
        import numpy as np

        lms = res.multi_face_landmarks[0].landmark
        out = np.zeros((N_POINTS, 3), np.float32)
        out[:min(len(lms), N_POINTS)] = [(p.x, p.y, p.z) for p in lms[:N_POINTS]]
        return out

    def close(self) -> None:
        for m in (self._whole, self._crop_mesh, self._boxes):
            m.close()


def read_message(stream):
    """``(header dict, payload bytes)``, or ``None`` at end of stream before a message; a message cut short raises
    ``EOFError``."""
    raw = stream.read(4)
    if not raw:
        return None
    if len(raw) < 4:
        raise EOFError("stream ended inside a message header length")
    (n,) = struct.unpack("<I", raw)
    data = stream.read(n)
    if len(data) != n:
        raise EOFError("stream ended inside a message header")
    header = json.loads(data.decode())
    nbytes = int(header.get("nbytes", 0))
    payload = stream.read(nbytes) if nbytes else b""
    if len(payload) != nbytes:
        raise EOFError("stream ended inside a message payload")
    return header, payload


def write_message(stream, header, payload=b""):
    """Write one message (``header`` gets ``nbytes``) and flush."""
    header = dict(header, nbytes=len(payload))
    data = json.dumps(header).encode()
    stream.write(struct.pack("<I", len(data)))
    stream.write(data)
    if payload:
        stream.write(payload)
    stream.flush()


def main():
    options = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    # The protocol owns the original stdout; fd 1 then points at stderr, so stray prints of mediapipe (Python or
    # C++) cannot corrupt the stream.
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    proto_in = sys.stdin.buffer

    import mediapipe as mp
    import numpy as np

    mesh = FaceMeshTracker(options)
    write_message(proto_out, {"ok": True, "ready": True, "mediapipe": mp.__version__})
    while True:
        try:
            message = read_message(proto_in)
        except EOFError:  # the main process died mid-request
            break
        if message is None:
            break
        header, payload = message
        cmd = header.get("cmd")
        try:
            if cmd == "process":
                t, h, w, c = (int(v) for v in header["shape"])
                frames = np.frombuffer(payload, np.uint8).reshape(t, h, w, c)
                out = np.zeros((t, N_POINTS, 3), "<f4")
                found = []
                for i in range(t):
                    pts = mesh.process(frames[i])
                    if pts is not None:
                        out[i] = pts
                    found.append(pts is not None)
                write_message(proto_out, {"ok": True, "found": found, "points": N_POINTS}, out.tobytes())
            elif cmd == "reset":
                mesh.close()
                mesh = FaceMeshTracker(options)
                write_message(proto_out, {"ok": True})
            elif cmd == "close":
                write_message(proto_out, {"ok": True})
                break
            else:
                write_message(proto_out, {"ok": False, "error": f"unknown command {cmd!r}"})
        except Exception as e:  # noqa: BLE001 - reported to the main process, which raises it
            traceback.print_exc(file=sys.stderr)
            write_message(proto_out, {"ok": False, "error": f"{type(e).__name__}: {e}"})
    mesh.close()


if __name__ == "__main__":
    main()

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
    from mediapipe.python.solutions import face_mesh

    kw = dict(static_image_mode=bool(options.get("static_image_mode", False)), max_num_faces=1,
              refine_landmarks=True,
              min_detection_confidence=float(options.get("min_detection_confidence", 0.5)),
              min_tracking_confidence=float(options.get("min_tracking_confidence", 0.5)))
    mesh = face_mesh.FaceMesh(**kw)
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
                    res = mesh.process(frames[i])
                    ok = bool(res.multi_face_landmarks)
                    if ok:
                        lms = res.multi_face_landmarks[0].landmark
                        out[i, :len(lms)] = [(p.x, p.y, p.z) for p in lms[:N_POINTS]]
                    found.append(ok)
                write_message(proto_out, {"ok": True, "found": found, "points": N_POINTS}, out.tobytes())
            elif cmd == "reset":
                mesh.close()
                mesh = face_mesh.FaceMesh(**kw)
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

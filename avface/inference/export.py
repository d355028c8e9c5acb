"""Exports of a :class:`~avface.inference.result.Reconstruction`: npz, OBJ / PLY sequences, overlay mp4, glTF.

Every file is written atomically (:func:`avface.utils.files.atomic_path`). Geometry is in the face model's space
(metres, +y up, +z towards the viewer, FLAME's frame), posed with the per-frame global pose; the crop box and camera
in the npz map it into the video (see :mod:`avface.inference.result`).

* ``<name>.npz`` -- :meth:`Reconstruction.save_npz` (schema in :mod:`avface.inference.result`).
* ``<name>_obj/coarse_000000.obj`` ... (and ``detail_000000.obj`` where the detail stage ran), ``_ply`` likewise
  (binary little-endian PLY). One file per input frame; OBJ files carry the face model's UVs.
  The detailed mesh is the coarse mesh displaced along its vertex normals by the detail stage's UV displacement
  sampled at each vertex's UV (detail at the mesh's resolution).
* ``<name>_overlay.mp4`` -- on the model timeline (``rec.fps``), the input frame nearest each model time with the mesh
  rendered over it (project renderer, grey clay) and, to judge the alignment, the detector's 68 points (green) and
  the model's projected landmarks (magenta) drawn as their contours (jaw, brows, nose, eyes, lips), labelled with
  whether the frame was fitted to the landmarks (``fit``) or is the network's alone (``net``); side by side with a
  frontal view of the same mesh (head pose removed); the original audio. Where the face is small in the frame (a
  wide shot), it shows the part of the frame around the face (:func:`overlay_view`), so the alignment can be seen.
* ``<name>.glb`` -- glTF 2.0 binary (pygltflib). One mesh: the subject's neutral face (mean shape) with morph
  targets ``Exp000`` ... (the face model's expression blendshapes, weights = the expression coefficients, as the
  FLAME Blender add-on names its shape keys) and ``Res000`` ... (an orthogonal basis, principal components, of what
  is not linear in the expression: jaw rotation, pose correctives, lip offsets, shape drift; as many as needed to
  reconstruct every sampled frame within ``residual_tol`` metres, at most ``max_residual``). The head rotation is a
  node rotation about the root joint. One animation, one keyframe per input frame at the input's frame times
  (seconds, LINEAR): morph weights and rotation. Blender imports the targets as shape keys with that timeline.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pygltflib as G
import torch

from avface.face_model.flame import vertices2landmarks
from avface.inference.result import Reconstruction
from avface.io.media import write_mp4
from avface.io.video import (
    SAMPLE_RATE,
    AudioTrack,
    InputLimits,
    iter_model_frames,
    model_timeline,
    resize_frames,
    scan_video,
)
from avface.render import FaceRenderer
from avface.render.cameras import orthographic_project
from avface.utils.files import atomic_path
from avface.viz.overlay import draw_label, draw_landmark_contours
from avface.viz.turntable import fit_orthographic_camera

DETECTOR_COLOUR = (60, 230, 60)  # the detector's landmarks in the overlay
MODEL_COLOUR = (240, 60, 240)  # the model's projected landmarks

EXPORT_KINDS = ("npz", "obj", "ply", "mp4", "glb")


# ------------------------------------------------------------------------------------------------ mesh files
def _obj_tail(faces: np.ndarray, uv: np.ndarray | None, uv_faces: np.ndarray | None) -> str:
    lines = []
    if uv is not None and uv_faces is not None:
        lines += [f"vt {u:.6f} {v:.6f}" for u, v in uv]
        lines += [f"f {a + 1}/{ta + 1} {b + 1}/{tb + 1} {c + 1}/{tc + 1}"
                  for (a, b, c), (ta, tb, tc) in zip(faces, uv_faces, strict=True)]
    else:
        lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    return "\n".join(lines) + "\n"


def write_obj(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray, tail: str | None = None) -> Path:
    """Wavefront OBJ of ``vertices (V, 3)``; ``tail`` the precomputed uv + face lines (:func:`_obj_tail`)."""
    path = Path(path)
    body = "\n".join(f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in np.asarray(vertices, np.float64)) + "\n"
    with atomic_path(path, suffix=".obj") as tmp:
        tmp.write_text(body + (tail if tail is not None else _obj_tail(faces, None, None)))
    return path


def _ply_faces(faces: np.ndarray) -> bytes:
    rec = np.zeros(len(faces), dtype=[("n", "u1"), ("f", "<i4", (3,))])
    rec["n"], rec["f"] = 3, faces
    return rec.tobytes()


def write_ply(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray,
              face_bytes: bytes | None = None) -> Path:
    """Binary little-endian PLY of ``vertices (V, 3)`` and ``faces (F, 3)``."""
    path = Path(path)
    header = (f"ply\nformat binary_little_endian 1.0\ncomment avface reconstruction\nelement vertex {len(vertices)}\n"
              "property float x\nproperty float y\nproperty float z\n"
              f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n").encode()
    with atomic_path(path, suffix=".ply") as tmp:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(np.ascontiguousarray(vertices, "<f4").tobytes())
            f.write(face_bytes if face_bytes is not None else _ply_faces(faces))
    return path


def write_mesh_sequence(rec: Reconstruction, face_model: torch.nn.Module, out_dir: str | os.PathLike,
                        fmt: str = "obj", batch: int = 64) -> list[Path]:
    """One mesh per input frame: ``out_dir/coarse_%06d.<fmt>`` (+ ``detail_%06d`` where the detail stage ran)."""
    if fmt not in ("obj", "ply"):
        raise ValueError(f"mesh format must be obj or ply, got {fmt!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    faces = face_model.faces.cpu().numpy()
    if fmt == "obj":
        uv = face_model.uv_coords.cpu().numpy() if hasattr(face_model, "uv_coords") else None
        uvf = face_model.uv_faces.cpu().numpy() if hasattr(face_model, "uv_faces") else None
        tail = _obj_tail(faces, uv, uvf)
    else:
        fbytes = _ply_faces(faces)
    kinds = ["coarse"] + (["detail"] if rec.displacement is not None else [])
    written: list[Path] = []
    for a in range(0, rec.num_frames, batch):
        b = min(a + batch, rec.num_frames)
        for kind in kinds:
            verts = rec.vertices(face_model, a, b, detailed=kind == "detail")
            for i, v in enumerate(verts):
                p = out_dir / f"{kind}_{a + i:06d}.{fmt}"
                written.append(write_obj(p, v, faces, tail) if fmt == "obj" else write_ply(p, v, faces, fbytes))
    return written


# ------------------------------------------------------------------------------------------------ glTF
def _axis_angle_to_quat(aa: np.ndarray) -> np.ndarray:
    """(N, 3) axis-angle -> (N, 4) unit quaternions (x, y, z, w), glTF's order."""
    angle = np.linalg.norm(aa, axis=1, keepdims=True)
    axis = np.where(angle > 1e-12, aa / np.maximum(angle, 1e-12), np.array([[1.0, 0.0, 0.0]]))
    return np.concatenate([axis * np.sin(angle / 2), np.cos(angle / 2)], axis=1).astype(np.float32)


def _residual_basis(res: np.ndarray, tol: float, max_k: int) -> np.ndarray:
    """Orthonormal rows (K, D) spanning ``res (n, D)`` so that every row is reconstructed within ``tol`` (max
    per-vertex distance, D = 3V), at most ``max_k`` rows (K = 0 when the residual is already within ``tol``)."""
    n, d = res.shape
    if n == 0 or np.abs(res).max() <= tol:
        return np.zeros((0, d), np.float32)
    _, _, vt = np.linalg.svd(res.astype(np.float64), full_matrices=False)
    for k in range(1, min(max_k, len(vt)) + 1):
        b = vt[:k]
        err = res - (res @ b.T) @ b
        if np.sqrt((err.reshape(n, -1, 3) ** 2).sum(-1)).max() <= tol:
            break
    return vt[:k].astype(np.float32)


def write_glb(rec: Reconstruction, face_model: torch.nn.Module, path: str | os.PathLike, batch: int = 128,
              residual_tol: float = 1e-4, max_residual: int = 16, sample_frames: int = 400) -> Path:
    """The animated glTF binary of the module docstring. Returns ``Path(path)``."""
    path = Path(path)
    fm = face_model
    n = rec.num_frames
    ne = min(fm.n_expression, rec.expression.shape[1])
    dev = fm.v_template.device
    with torch.no_grad():
        mean_shape = torch.as_tensor(rec.shape.mean(0)[None, : fm.n_shape], dtype=torch.float32, device=dev)
        neutral = fm(shape=mean_shape)
        base = neutral.vertices[0].cpu().numpy().astype(np.float32)  # (V, 3)
        root = neutral.joints[0, 0].cpu().numpy().astype(np.float32)
    exp_dirs = fm.shapedirs[:, :, fm.n_shape: fm.n_shape + ne].permute(2, 0, 1).cpu().numpy().astype(np.float32)
    v = base.shape[0]

    def residual(a: int, b: int) -> np.ndarray:
        verts = rec.vertices(fm, a, b, canonical=True)  # (k, V, 3)
        lin = base[None] + np.einsum("ke,evc->kvc", rec.expression[a:b, :ne], exp_dirs)
        return (verts - lin).reshape(b - a, -1)

    sample = np.unique(np.linspace(0, n - 1, min(n, sample_frames)).round().astype(np.int64))
    res_s = np.concatenate([residual(int(i), int(i) + 1) for i in sample])
    basis = _residual_basis(res_s, residual_tol, max_residual)  # (K, 3V)
    k = len(basis)
    weights_res = np.zeros((n, k), np.float32)
    if k:
        for a in range(0, n, batch):
            b = min(a + batch, n)
            weights_res[a:b] = residual(a, b) @ basis.T
        scale = np.maximum(np.abs(weights_res).max(0), 1e-8)  # weights in [-1, 1]: targets carry the size
        weights_res /= scale
        res_targets = (basis * scale[:, None]).reshape(k, v, 3)
    else:
        res_targets = np.zeros((0, v, 3), np.float32)
    targets = np.concatenate([exp_dirs, res_targets]).astype(np.float32)
    names = [f"Exp{i:03d}" for i in range(ne)] + [f"Res{i:03d}" for i in range(k)]
    weights = np.concatenate([rec.expression[:, :ne].astype(np.float32), weights_res], axis=1)
    times = np.asarray(rec.times, np.float32)
    quats = _axis_angle_to_quat(np.asarray(rec.global_pose, np.float64))
    faces = fm.faces.cpu().numpy().astype(np.uint32)

    blob = bytearray()
    views: list[G.BufferView] = []
    accessors: list[G.Accessor] = []

    def add(arr: np.ndarray, ctype: int, atype: str, target: int | None = None, minmax: bool = False) -> int:
        data = np.ascontiguousarray(arr).tobytes()
        while len(blob) % 4:
            blob.append(0)
        views.append(G.BufferView(buffer=0, byteOffset=len(blob), byteLength=len(data), target=target))
        blob.extend(data)
        count = arr.shape[0] if atype != "SCALAR" or arr.ndim == 1 else arr.size
        acc = G.Accessor(bufferView=len(views) - 1, componentType=ctype, count=int(count), type=atype)
        if minmax:
            flat = arr.reshape(count, -1)
            acc.min = [float(x) for x in flat.min(0)]
            acc.max = [float(x) for x in flat.max(0)]
        accessors.append(acc)
        return len(accessors) - 1

    pos = add(base, G.FLOAT, G.VEC3, G.ARRAY_BUFFER, minmax=True)
    idx = add(faces.reshape(-1), G.UNSIGNED_INT, G.SCALAR, G.ELEMENT_ARRAY_BUFFER)
    tgt = [{"POSITION": add(t, G.FLOAT, G.VEC3, G.ARRAY_BUFFER, minmax=True)} for t in targets]
    t_in = add(times, G.FLOAT, G.SCALAR, minmax=True)
    w_out = add(weights.reshape(-1), G.FLOAT, G.SCALAR)
    r_out = add(quats, G.FLOAT, G.VEC4)
    prim = G.Primitive(attributes=G.Attributes(POSITION=pos), indices=idx, targets=tgt, mode=G.TRIANGLES)
    mesh = G.Mesh(name="face", primitives=[prim], weights=[0.0] * len(names), extras={"targetNames": names})
    head = G.Node(name="head", translation=[float(x) for x in root], children=[1])
    face = G.Node(name="face", mesh=0, translation=[float(-x) for x in root])
    anim = G.Animation(
        name="reconstruction",
        samplers=[G.AnimationSampler(input=t_in, output=w_out, interpolation="LINEAR"),
                  G.AnimationSampler(input=t_in, output=r_out, interpolation="LINEAR")],
        channels=[G.AnimationChannel(sampler=0, target=G.AnimationChannelTarget(node=1, path="weights")),
                  G.AnimationChannel(sampler=1, target=G.AnimationChannelTarget(node=0, path="rotation"))])
    gltf = G.GLTF2(
        asset=G.Asset(generator="avface reconstruct", version="2.0"), scene=0, scenes=[G.Scene(nodes=[0])],
        nodes=[head, face], meshes=[mesh], accessors=accessors, bufferViews=views,
        buffers=[G.Buffer(byteLength=len(blob))], animations=[anim],
        extras={"face_model": rec.meta.get("face_model"), "fps": rec.fps, "frames": n})
    gltf.set_binary_blob(bytes(blob))
    with atomic_path(path, suffix=".glb") as tmp:
        gltf.save_binary(str(tmp))
    return path


# ------------------------------------------------------------------------------------------------ overlay mp4
def _even(x: int) -> int:
    return max(2, x - x % 2)


def overlay_view(crop_box: np.ndarray, frame_size: tuple[int, int], zoom_below: float = 0.5) -> tuple[int, ...]:
    """The part of the input frame the overlay shows, ``(x0, y0, x1, y1)`` px: the whole frame, or, when the face
    is small in it (the union of the clip's crop boxes ``(N, 4)`` px less than ``zoom_below`` of the frame's
    height), a box of the frame's aspect ratio 1.3 times the union's size around it, inside the frame: one fixed view
    for the whole clip, so the picture does not move with the face."""
    w0, h0 = int(frame_size[0]), int(frame_size[1])
    box = np.asarray(crop_box, np.float64).reshape(-1, 4)
    if not len(box):
        return 0, 0, w0, h0
    ux0, uy0, ux1, uy1 = box[:, 0].min(), box[:, 1].min(), box[:, 2].max(), box[:, 3].max()
    size = max(ux1 - ux0, uy1 - uy0)
    vh = 1.3 * size  # the crop box already holds the face with a margin
    if size >= zoom_below * h0 or vh >= h0:
        return 0, 0, w0, h0
    vw = min(float(w0), vh * w0 / h0)
    cx, cy = (ux0 + ux1) / 2, (uy0 + uy1) / 2
    x0 = int(round(min(max(cx - vw / 2, 0.0), w0 - vw)))
    y0 = int(round(min(max(cy - vh / 2, 0.0), h0 - vh)))
    return x0, y0, x0 + int(round(vw)), y0 + int(round(vh))


def write_overlay_mp4(rec: Reconstruction, face_model: torch.nn.Module, video: str | os.PathLike,
                      path: str | os.PathLike, height: int = 360, alpha: float = 0.6) -> Path:
    """The overlay video of the module docstring (the model's frame rate, original audio). Frames go through a
    memory-mapped temporary file, so a long video is not held in memory."""
    path = Path(path)
    src = rec.meta.get("audio")
    same = bool(src) and Path(src).resolve() == Path(video).resolve()
    # one open of the video for its facts and (when it is the reconstruction's audio) its audio, one for its frames
    scan = scan_video(video, InputLimits(max_width=1 << 20, max_height=1 << 20, min_fps=0.0, max_fps=1e9),
                      audio=same)
    info = scan.info
    # the input frame nearest each model time (the same choice as the reconstruction's)
    model_times, nearest = model_timeline(rec.times, rec.fps)
    vx0, vy0, vx1, vy1 = overlay_view(rec.crop_box, rec.frame_size)
    w0, h0 = vx1 - vx0, vy1 - vy0
    zoomed = (w0, h0) != tuple(rec.frame_size)
    sc = height / h0 if zoomed else min(1.0, height / h0)  # a zoomed view is enlarged to the overlay's height
    origin = np.array([vx0, vy0, vx0, vy0], np.float64)
    wo, ho = _even(round(w0 * sc)), _even(round(h0 * sc))
    fm = face_model
    dev = fm.v_template.device
    r_main = FaceRenderer(fm.faces, image_size=(ho, wo)).to(dev)
    r_front = FaceRenderer(fm.faces, image_size=ho).to(dev)
    sh = torch.zeros(1, 9, 3, device=dev)
    sh[:, 0], sh[:, 1], sh[:, 2], sh[:, 3] = 1.3, 0.15, -0.25, 0.25
    ident = torch.tensor([[1.0, 0.0, 0.0]], device=dev)
    m = len(model_times)
    tmp_frames = path.with_name(f".{path.name}.frames.u8")
    frames = np.lib.format.open_memmap(tmp_frames, mode="w+", dtype=np.uint8, shape=(m, ho, wo + ho, 3))
    track = scan.audio if same else AudioTrack.from_file(src) if src else None
    try:
        with torch.no_grad():
            for k, img in iter_model_frames(info, np.asarray(nearest)):
                j = int(nearest[k])
                base = resize_frames(np.ascontiguousarray(img[vy0:vy1, vx0:vx1]), wo, ho)
                v = torch.as_tensor(rec.vertices(fm, j, j + 1), device=dev)
                cam = torch.as_tensor(rec.cam[j:j + 1], dtype=torch.float32, device=dev)
                x0, y0, x1, y1 = (float(x) * sc for x in rec.crop_box[j] - origin)
                # crop NDC -> output-frame NDC (per axis: the crop may be non-square for crop=none); the renderer
                # then gets the projected mesh with the identity camera (x = X, y = -Y, depth kept)
                p = orthographic_project(v, cam)
                xo = p[..., 0] * (x1 - x0) / wo + (2 * x0 + (x1 - x0)) / wo - 1
                yo = p[..., 1] * (y1 - y0) / ho + (2 * y0 + (y1 - y0)) / ho - 1
                albedo = torch.full_like(v, 0.75)
                out = r_main(torch.stack([xo, -yo, p[..., 2]], -1), ident, albedo, sh)
                rgb = out.image[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255
                a = out.alpha[0, 0].cpu().numpy()[..., None] * alpha
                over = (base * (1 - a) + rgb * a).round().astype(np.uint8)
                lmk = vertices2landmarks(torch.stack([xo, yo], -1), fm.faces, fm.lmk68_faces[None],
                                         fm.lmk68_bary[None])[0].cpu().numpy()
                over = _draw_alignment(over, rec, j, (lmk + 1) * np.array([wo / 2, ho / 2]), sc, origin[:2])
                vc = torch.as_tensor(rec.vertices(fm, j, j + 1, canonical=True), device=dev)
                fo = r_front(vc, fit_orthographic_camera(vc, 0.85), albedo, sh)
                bg = np.full((ho, ho, 3), 40.0)
                fa = fo.alpha[0, 0].cpu().numpy()[..., None]
                front = fo.image[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255 * fa + bg * (1 - fa)
                frames[k, :, :wo] = over
                frames[k, :, wo:] = front.round().astype(np.uint8)
        frames.flush()
        audio = None if track is None else track.window(0.0, int(round(m * SAMPLE_RATE / rec.fps)))
        write_mp4(path, frames, rec.fps, audio, SAMPLE_RATE)
    finally:
        if track is not None:
            track.close()
        del frames
        tmp_frames.unlink(missing_ok=True)
    return path


def _draw_alignment(frame: np.ndarray, rec: Reconstruction, j: int, model_px: np.ndarray, scale: float,
                    origin: np.ndarray) -> np.ndarray:
    """The detector's points of input frame ``j`` (where detected; input pixels, shown from ``origin (2,)`` at
    ``scale``) and the model's projected landmarks ``model_px (68, 2)`` (output pixels) drawn over ``frame``, with
    a legend."""
    h = frame.shape[0]
    th = max(1, round(h / 360))
    if rec.landmarks is not None and bool(rec.face_detected[j]):
        frame = draw_landmark_contours(frame, (rec.landmarks[j] - origin) * scale, DETECTOR_COLOUR, th)
    frame = draw_landmark_contours(frame, model_px, MODEL_COLOUR, th)
    fs = 0.35 * max(1.0, h / 360)
    draw_label(frame, "detector", (6, int(14 * fs / 0.35)), DETECTOR_COLOUR, fs)
    draw_label(frame, "model " + ("fit" if bool(np.asarray(rec.refined)[j]) else "net"), (6, int(28 * fs / 0.35)),
               MODEL_COLOUR, fs)
    return frame


# ------------------------------------------------------------------------------------------------ all
def export_all(rec: Reconstruction, face_model: torch.nn.Module, out_dir: str | os.PathLike, name: str,
               kinds: tuple[str, ...] = ("npz",), flame_sizes: bool = False,
               video: str | os.PathLike | None = None) -> list[Path]:
    """Write the requested ``kinds`` (subset of :data:`EXPORT_KINDS`) into ``out_dir``; returns the paths (mesh
    sequences as their folders)."""
    bad = [k for k in kinds if k not in EXPORT_KINDS]
    if bad:
        raise ValueError(f"unknown export(s) {bad}; choose from {EXPORT_KINDS}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "npz" in kinds:
        written.append((rec.with_flame_sizes() if flame_sizes else rec).save_npz(out_dir / f"{name}.npz"))
    for fmt in ("obj", "ply"):
        if fmt in kinds:
            write_mesh_sequence(rec, face_model, out_dir / f"{name}_{fmt}", fmt)
            written.append(out_dir / f"{name}_{fmt}")
    if "glb" in kinds:
        written.append(write_glb(rec, face_model, out_dir / f"{name}.glb"))
    if "mp4" in kinds:
        if video is None:
            raise ValueError("the overlay mp4 needs the input video")
        written.append(write_overlay_mp4(rec, face_model, video, out_dir / f"{name}_overlay.mp4"))
    return written

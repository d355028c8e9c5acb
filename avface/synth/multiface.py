"""Output B: Multiface-layout identities (multi-view images, tracked meshes in mm, head poses, KRT, audio).

Per identity, under ``<out>/multiface/m--<date>--0000--<id>--GHS/``::

    KRT                                   per camera: name, 3 lines K, 1 line distortion (5 zeros), 3 lines [R|t],
                                          blank line. K refers to the written image size (see below).
    frame_list.txt                        "<SEG> <frame:06d>" per frame
    images/<SEG>/<cam>/<frame:06d>.png    RGB, image_height x image_width (default 512 x 334: the real 2048 x 1334
                                          portrait images, 4x smaller)
    tracked_mesh/<SEG>/<frame:06d>.bin    float32 (V, 3), millimetres, head space (head pose removed)
    tracked_mesh/<SEG>/<frame:06d>.obj    the same mesh with UVs (v / vt / f v/vt)
    tracked_mesh/<SEG>/<frame:06d>_transform.txt   3x4 [R_f | t_f] head pose (mm): world = R_f v + t_f
    audio/<SEG>.wav                       16 kHz mono PCM (the real recordings are 48 kHz); frame 0 at audio t=0
    vert_mean.bin, vert_var.txt           mean mesh (float32, mm) and scalar vertex variance over all frames

Projection (as the Multiface loaders do): pixel ~ K [R_C R_f | R_C t_f + t_C] [v; 1] with (R_C, t_C) from KRT.
Differences from the real data set: V is the face model's vertex count (starter model 2,177, FLAME 5,023; the
real Multiface topology has 7,306), no unwrapped textures, 30 fps frames numbered from a per-segment base.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from avface.io import write_wav
from avface.speech import random_text, sentence_slug, synthesize
from avface.synth.config import SynthesizeConfig
from avface.synth.face import MouthRig, face_sequence, sample_identity
from avface.synth.render import FaceContext, render_perspective
from avface.synth.scene import studio_sh
from avface.synth.vox import rng_for, speech_audio
from avface.utils.failures import stage
from avface.utils.files import atomic_path
from avface.viz import save_png

__all__ = ["MultifaceJob", "FRONTAL_CAMERA", "identity_dirname", "camera_rig", "write_krt", "read_krt_minimal",
           "make_multiface_segment", "finish_multiface_identity"]

FRONTAL_CAMERA = "400030"
_CAMERA_NAMES = ("400030", "400004", "400013", "400016", "400019", "400023", "400026", "400029", "400039",
                 "400041", "400048", "400051", "400055", "400060", "400064")
_MF_ID_STREAM, _MF_SEG_STREAM, _MF_RIG_STREAM = 11, 12, 13
_SEG_FRAME_STRIDE = 3000  # frame numbers of segment k start at 1000 + k * stride (100 s per segment at most)


@dataclass(frozen=True)
class MultifaceJob:
    identity_index: int
    dirname: str
    sentence_index: int


def identity_dirname(seed: int, index: int) -> str:
    rng = rng_for(seed, _MF_ID_STREAM, index, 1)
    year, month, day = 2018 + int(rng.integers(2)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    return f"m--{year}{month:02d}{day:02d}--0000--{int(rng.integers(1_000_000, 9_999_999))}--GHS"


def camera_rig(cfg: SynthesizeConfig, identity_index: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """name -> (K (3,3), R (3,3), t (3,)) world->camera (OpenCV). World: the face model's frame in mm (+y up, +z
    towards the frontal camera); the first camera is the frontal one."""
    mf = cfg.multiface
    rng = rng_for(cfg.seed, _MF_RIG_STREAM, identity_index)
    h, w = mf.image_height, mf.image_width
    names = [FRONTAL_CAMERA] + [str(n) for n in rng.permutation(_CAMERA_NAMES[1:])][: mf.cameras - 1]
    yaws = [0.0] + [float(y) for y in rng.permutation([-40, 40, -25, 25, -15, 15, -50, 50, -32, 32, -20, 20, -45,
                                                       45])][: mf.cameras - 1]
    rig = {}
    target = np.array([0.0, -20.0, 60.0])  # look at the middle of the face (mm)
    for i, (name, yaw) in enumerate(zip(names, yaws, strict=True)):
        pitch = 0.0 if i == 0 else float(rng.uniform(-15, 15))
        d = mf.camera_distance_mm * (1 + (0 if i == 0 else rng.uniform(-0.05, 0.05)))
        direction = Rotation.from_euler("YX", [yaw, -pitch], degrees=True).apply([0.0, 0.0, 1.0])
        centre = target + d * direction
        z = (target - centre) / np.linalg.norm(target - centre)  # camera forward
        x = np.cross([0.0, -1.0, 0.0], z)  # image right; world up is -y_cam
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        R = np.stack([x, y, z])
        t = -R @ centre
        f = 2.8 * h * (mf.camera_distance_mm / 1000.0)  # the face fills about half of the image height
        K = np.array([[f, 0, w / 2 + rng.normal(0, 2)], [0, f, h / 2 + rng.normal(0, 2)], [0, 0, 1]])
        rig[name] = (K, R, t)
    return rig


def write_krt(path: Path, rig: dict) -> None:
    lines = []
    for name, (K, R, t) in rig.items():
        lines.append(name)
        lines += [" ".join(f"{v:.6f}" for v in row) for row in K]
        lines.append(" ".join(["0.000000"] * 5))
        lines += [" ".join(f"{v:.9f}" for v in (*R[i], t[i])) for i in range(3)]
        lines.append("")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def read_krt_minimal(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """The Multiface KRT reader (name, K, distortion, [R|t], blank) -> {name: {K, dist, Rt}}."""
    cams = {}
    with open(path) as f:
        while True:
            name = f.readline()
            if not name:
                break
            K = np.array([[float(x) for x in f.readline().split()] for _ in range(3)])
            dist = np.array([float(x) for x in f.readline().split()])
            Rt = np.array([[float(x) for x in f.readline().split()] for _ in range(3)])
            f.readline()
            cams[name.strip()] = {"K": K, "dist": dist, "Rt": Rt}
    return cams


_OBJ_TAIL: dict[int, str] = {}


def _obj_text(v_mm: np.ndarray, uv: np.ndarray, faces: np.ndarray, uv_faces: np.ndarray) -> str:
    """Wavefront OBJ text (v, vt, f v/vt); the vt/f part is built once per topology."""
    key = id(faces)
    if key not in _OBJ_TAIL:
        idx = np.stack([faces + 1, uv_faces + 1], axis=-1).reshape(-1)  # (F * 3 * 2,)
        _OBJ_TAIL[key] = (("vt %.6f %.6f\n" * len(uv)) % tuple(np.asarray(uv, np.float64).ravel())
                          + ("f %d/%d %d/%d %d/%d\n" * len(faces)) % tuple(int(i) for i in idx))
    return ("v %.4f %.4f %.4f\n" * len(v_mm)) % tuple(np.asarray(v_mm, np.float64).ravel()) + _OBJ_TAIL[key]


def _studio_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.sqrt(((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2)
    base = rng.uniform(35, 70)
    img = base * (1.0 - 0.5 * r)[..., None] * np.array([1.0, 1.0, 1.05], np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def segment_paths(root: Path, job: MultifaceJob, seg: str) -> dict[str, Path]:
    d = root / job.dirname
    return {"audio": d / "audio" / f"{seg}.wav", "mesh": d / "tracked_mesh" / seg, "images": d / "images" / seg}


def make_multiface_segment(job: MultifaceJob, cfg: SynthesizeConfig, root: Path) -> dict:
    """Synthesise one sentence of one identity: all cameras' images, tracked meshes, head poses, audio.
    The wav is written last and marks the segment complete. Returns {segment, frames: [frame numbers]}."""
    mf = cfg.multiface
    rng = rng_for(cfg.seed, _MF_SEG_STREAM, job.identity_index, job.sentence_index)
    text = random_text(rng, 1)
    seg = sentence_slug(text)
    paths = segment_paths(root, job, seg)
    base = 1000 + job.sentence_index * _SEG_FRAME_STRIDE
    if not cfg.overwrite and paths["audio"].exists():
        frames = sorted(int(p.stem) for p in paths["mesh"].glob("*.bin"))
        return {"identity": job.dirname, "segment": seg, "frames": frames, "skipped": True}
    import torch

    torch.set_num_threads(1)
    ctx = FaceContext.get(cfg.face.face_model, cfg.face.landmark_embedding)
    identity = sample_identity(rng_for(cfg.seed, _MF_ID_STREAM, job.identity_index), ctx.data, cfg.face, cfg.speech)
    with stage("speech"):
        utt = synthesize(text, voice=identity.voice, rate=identity.rate, pitch=identity.pitch,
                         sample_rate=cfg.speech.sample_rate)
        lead = float(rng.uniform(*cfg.speech.lead_in))
        audio, t = speech_audio(rng, utt, lead, mf.fps, (-70.0, -60.0))  # quiet capture dome

    # subjects in the dome sit still: smaller head motion than in the wild
    face_cfg = type(cfg.face)(**{**cfg.face.__dict__, "max_yaw_deg": 8.0, "max_pitch_deg": 6.0, "max_roll_deg": 3.0})
    seq = face_sequence(rng, identity, utt.phonemes, t, mf.fps, MouthRig(ctx.data), face_cfg, speech_offset=lead)
    head = ctx.pose(seq, with_global=False)  # head space: global pose removed
    v_mm = head.vertices * 1000.0
    j0 = head.joints[:, 0] * 1000.0  # root joint: FLAME's global rotation pivots here
    R_f = Rotation.from_rotvec(seq.global_pose.astype(np.float64)).as_matrix()  # (T, 3, 3)
    trans = np.cumsum(rng.normal(0, 0.15, (t, 3)), axis=0)  # slow drift of the head in mm
    t_f = j0 - np.einsum("tij,tj->ti", R_f, j0) + trans
    world = np.einsum("tij,tvj->tvi", R_f, v_mm) + t_f[:, None]

    albedo = ctx.albedo(identity)
    sh = studio_sh()
    rig = camera_rig(cfg, job.identity_index)
    bg = _studio_background(rng, mf.image_height, mf.image_width)
    for cam, (K, R, tc) in rig.items():
        imgs, _ = render_perspective(ctx, world, K, R, tc, albedo, sh, bg)
        for i, img in enumerate(imgs):
            save_png(paths["images"] / cam / f"{base + i:06d}.png", img)
    d = ctx.data
    paths["mesh"].mkdir(parents=True, exist_ok=True)
    for i in range(t):
        stem = paths["mesh"] / f"{base + i:06d}"
        with atomic_path(stem.with_suffix(".bin"), suffix=".bin") as tmp:
            v_mm[i].astype("<f4").tofile(tmp)
        if mf.write_obj:
            with atomic_path(stem.with_suffix(".obj"), suffix=".obj") as tmp:
                tmp.write_text(_obj_text(v_mm[i], d.uv_coords, d.faces, d.uv_faces))
        with atomic_path(stem.parent / f"{stem.name}_transform.txt") as tmp:
            Rt = np.concatenate([R_f[i], t_f[i][:, None]], axis=1)
            tmp.write_text("\n".join(" ".join(f"{x:.9f}" for x in row) for row in Rt) + "\n")
    gt_dir = root / "gt" / job.dirname
    gt_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(gt_dir / f"{seg}.npz", suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(
                f, shape=seq.shape, expression=seq.expression, jaw_pose=seq.jaw_pose, global_pose=seq.global_pose,
                neck_pose=seq.neck_pose, eye_pose=seq.eye_pose, articulation=seq.articulation,
                **({} if seq.lip_detail is None else {"lip_detail": seq.lip_detail}),
                landmarks3d_mm=head.landmarks3d * 1000.0, frames=np.arange(base, base + t),
                phonemes=np.array(json.dumps([{"symbol": p.symbol, "start_ms": round((p.start + lead) * 1000, 3),
                                               "end_ms": round((p.end + lead) * 1000, 3)} for p in utt.phonemes])),
                text=np.array(text), face_model=np.array(ctx.name), fps=np.array(mf.fps))
    write_wav(paths["audio"], audio, cfg.speech.sample_rate)
    return {"identity": job.dirname, "segment": seg, "frames": list(range(base, base + t)), "skipped": False}


def finish_multiface_identity(cfg: SynthesizeConfig, root: Path, identity_index: int, dirname: str,
                              segments: list[dict]) -> None:
    """Per-identity files that need every segment: KRT, frame_list.txt, vert_mean.bin, vert_var.txt."""
    d = root / dirname
    write_krt(d / "KRT", camera_rig(cfg, identity_index))
    lines = [f"{s['segment']} {f:06d}" for s in sorted(segments, key=lambda s: s["frames"][0] if s["frames"] else 0)
             for f in s["frames"]]
    with atomic_path(d / "frame_list.txt") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    meshes = [np.fromfile(d / "tracked_mesh" / s["segment"] / f"{f:06d}.bin", dtype="<f4")
              for s in segments for f in s["frames"]]
    if meshes:
        m = np.stack(meshes)
        with atomic_path(d / "vert_mean.bin", suffix=".bin") as tmp:
            m.mean(0).astype("<f4").tofile(tmp)
        with atomic_path(d / "vert_var.txt") as tmp:
            tmp.write_text(f"{float(((m - m.mean(0)) ** 2).mean()):.6f}\n")

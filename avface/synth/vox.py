"""Output A: one VoxCeleb2-layout clip (mp4 + txt) with its ground-truth sidecar (.npz).

Paths under the corpus root ``<out>/voxceleb2``::

    {split}/mp4/idNNNNN/<ytid>/NNNNN.mp4    224x224, 25 fps, H.264 + AAC 16 kHz mono in one file
    {split}/txt/idNNNNN/<ytid>/NNNNN.txt    VoxCeleb2 txt (Identity, Reference, Offset, FV Conf, FRAME rows)
    gt/{split}/idNNNNN/<ytid>/NNNNN.npz     ground truth (outside the VoxCeleb2 tree, see SIDECAR_KEYS)
    vox2_meta.csv                           written by the driver

The sidecar is written last: its presence marks a complete clip (resumability).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from avface.io import write_mp4
from avface.speech import random_text, synthesize
from avface.speech.espeak import Utterance
from avface.synth.config import SynthesizeConfig
from avface.synth.face import Identity, MouthRig, face_sequence, sample_identity, smooth_noise
from avface.synth.render import FaceContext, RealSkin, render_vox
from avface.synth.scene import add_sensor_noise, random_background, random_sh
from avface.synth.style import camera_degrade, hair_strands, real_look, skin_maps, style_rng
from avface.utils.failures import stage
from avface.utils.files import atomic_path
from avface.utils.jsonable import json_default
from occlusion_synth import OcclusionConfig, occlude_sequence

log = logging.getLogger(__name__)

__all__ = ["VoxClipJob", "SIDECAR_KEYS", "make_vox_clip", "clip_paths", "rng_for", "identity_for", "speech_audio",
           "crop_camera", "vox_txt", "write_meta_csv"]

#: Keys of the ground-truth sidecar (``np.load(path, allow_pickle=False)``).
SIDECAR_KEYS = (
    "shape", "expression", "jaw_pose", "global_pose", "neck_pose", "eye_pose",  # (T, k) float32 model parameters
    "camera", "cam",  # (T, 3) orthographic (s, tx, ty); "cam" is the same array (name used by avface.data)
    "albedo", "sh",  # (NA,) albedo coefficients, (9, 3) SH lighting
    "vertices",  # (T, V, 3) float32 metres, model space, posed (absent with vox.store_vertices=false)
    "landmarks2d", "landmarks2d_static",  # (T, 68, 2) pixels; dynamic jaw contour / static embedding
    "landmarks3d",  # (T, 68, 3) metres, static embedding, posed
    "face_mask",  # (T, H, W) uint8 1 where the face mesh covers the pixel
    "occlusion_mask",  # (T, H, W) uint8 0..255 (255 = hand), zeros when the clip is not occluded
    "articulation",  # (T, 4) jaw_open, lip_round, lip_spread, lip_press from the viseme model
    "blink",  # (T,) eyelid closure
    "phonemes",  # JSON string: [{symbol, start_ms, end_ms, word}] in the clip's audio time
    "meta",  # JSON string: text, voice, identity, occlusion params, ...
    "face_model", "image_size", "fps", "sample_rate", "num_frames",
)


@dataclass(frozen=True)
class VoxClipJob:
    split: str
    identity_index: int  # index of the identity in the corpus plan (seeds the identity)
    identity: str  # idNNNNN
    video_index: int  # index of the YouTube id within the identity (seeds the scene)
    ytid: str
    utterance: str  # NNNNN
    clip_index: int  # global clip index (seeds the clip)
    occluded: bool


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """Independent, reproducible stream for (seed, key...)."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=tuple(int(k) for k in key)))


_ID_STREAM, _SCENE_STREAM, _CLIP_STREAM, _OCC_STREAM = 1, 2, 3, 4
_OCC_ATTEMPTS = 4  # occlusion seeds tried (a hand can land outside the image) before the clip stays unoccluded


def identity_for(cfg: SynthesizeConfig, ctx: FaceContext, identity_index: int) -> Identity:
    return sample_identity(rng_for(cfg.seed, _ID_STREAM, identity_index), ctx.data, cfg.face, cfg.speech)


def clip_paths(root: Path, job: VoxClipJob) -> dict[str, Path]:
    rel = Path(job.identity) / job.ytid
    return {"mp4": root / job.split / "mp4" / rel / f"{job.utterance}.mp4",
            "txt": root / job.split / "txt" / rel / f"{job.utterance}.txt",
            "gt": root / "gt" / job.split / rel / f"{job.utterance}.npz"}


def speech_audio(rng: np.random.Generator, utt: Utterance, lead_in: float, fps: float, noise_db: tuple[float, float],
                 tail: float = 0.2) -> tuple[np.ndarray, int]:
    """Place the utterance after ``lead_in`` seconds, add room tone, scale; cut to whole video frames.

    Returns (audio (N,) float32 with N = round(T * sr / fps), T frames)."""
    sr = utt.sample_rate
    total = lead_in + utt.duration + tail
    num_frames = int(np.ceil(total * fps))
    n = int(round(num_frames * sr / fps))
    audio = np.zeros(n, np.float32)
    start = int(round(lead_in * sr))
    speech = utt.audio[: max(0, n - start)]
    peak = max(float(np.abs(speech).max()), 1e-6)
    audio[start:start + len(speech)] = speech * (rng.uniform(0.35, 0.85) / peak)
    rms = 10 ** (rng.uniform(*noise_db) / 20)
    noise = rng.standard_normal(n).astype(np.float32)
    # slightly coloured room tone: a little low-pass
    noise = np.convolve(noise, np.ones(4, np.float32) / 2.0, mode="same")
    audio += (rms / max(float(noise.std()), 1e-9)) * noise
    return np.clip(audio, -1, 1).astype(np.float32), num_frames


def vox_txt(identity: str, ytid: str, rows: np.ndarray, start_frame: int, conf: float) -> str:
    """VoxCeleb2 txt: header then ``FRAME X Y W H`` rows (box normalised to the source video)."""
    lines = [f"Identity  : \t{identity}", f"Reference : \t{ytid}", "Offset    : \t0", f"FV Conf   : \t{conf:.3f}\t(1)",
             "", "FRAME \tX \tY \tW \tH "]
    for i, (x, y, w, h) in enumerate(rows):
        lines.append(f"{start_frame + i:05d} \t{x:.3f} \t{y:.3f} \t{w:.3f} \t{h:.3f} ")
    return "\n".join(lines) + "\n"


def write_meta_csv(path: Path, identities: list[tuple[str, str, str]]) -> None:
    """``vox2_meta.csv`` like the real one: ``VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set `` with trailing spaces.

    identities: (idNNNNN, gender m|f, split dev|test)."""
    lines = ["VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set "]
    for ident, gender, split in sorted(identities):
        lines.append(f"{ident} ,n{int(ident[2:]):06d} ,{gender} ,{split} ")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def _scene(cfg: SynthesizeConfig, job: VoxClipJob):
    """Per-video scene: background, light, framing (shared by the clips of one YouTube id)."""
    rng = rng_for(cfg.seed, _SCENE_STREAM, job.identity_index, job.video_index)
    size = cfg.vox.image_size
    return {"background": random_background(rng, size, size), "sh": random_sh(rng),
            "scale": float(rng.uniform(5.0, 6.6)), "tx": float(rng.normal(0, 0.004)),
            "ty": float(rng.normal(0.0, 0.004)), "noise": float(rng.uniform(0.5, 2.5)),
            "src_res": [(1280, 720), (1920, 1080), (854, 480), (640, 360)][int(rng.integers(4))],
            "fv_conf": float(rng.uniform(8.0, 20.0))}


def real_skin(cfg: SynthesizeConfig, job: VoxClipJob, identity: Identity) -> RealSkin:
    """The ``real`` style's draws for one clip, from the style's own streams: the video's look (room, lights,
    camera), the speaker's skin and hair, the clip's hairline phase."""
    size = cfg.vox.image_size
    look = real_look(style_rng(cfg.seed, 2, job.identity_index, job.video_index), size)
    rng = style_rng(cfg.seed, 1, job.identity_index)
    skin_mod, oil = skin_maps(rng)
    hair = hair_strands(rng, size, size, identity.hair_color)
    fringe = None if rng.random() < 0.2 else float(rng.uniform(0.35, 0.9))
    phase = float(style_rng(cfg.seed, 3, job.clip_index).uniform(0, 2 * np.pi))
    return RealSkin(look, skin_mod, oil, hair, fringe, phase)


def crop_camera(rng: np.random.Generator, landmarks3d: np.ndarray, scene: dict, fps: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """The clip's orthographic camera (T, 3) float32 ``(s, tx, ty)`` and its drift (T, 3) (the txt box moves
    with it). The crop follows the face like VoxCeleb2's face tracks: centred on a smoothed face centre
    (``landmarks3d`` (T, 68, 3)), scale ``scene["scale"]``, with a slow drift of a few percent.

    The drift is smoothed over 1.5 s, longer than many clips: it must keep unit spread by the filter's norm
    (:func:`avface.synth.face.smooth_noise`); scaled by its own sample spread it reached -67 sd in a 69-frame clip,
    whose scale went negative (the head silhouette's ``cv2.ellipse`` raised), and -97 sd in another, whose face
    was drawn outside the image."""
    from scipy.ndimage import gaussian_filter1d

    t = len(landmarks3d)
    drift = smooth_noise(rng, t, 3, 1.5 * fps)
    centre = gaussian_filter1d(landmarks3d[:, :, :2].mean(1).astype(np.float64), 0.3 * fps, axis=0, mode="nearest")
    cam = np.stack([scene["scale"] * (1 + 0.02 * drift[:, 0]), -centre[:, 0] + scene["tx"] + 0.003 * drift[:, 1],
                    -centre[:, 1] + scene["ty"] + 0.003 * drift[:, 2]], axis=1).astype(np.float32)
    return cam, drift


def make_vox_clip(job: VoxClipJob, cfg: SynthesizeConfig, root: Path) -> dict:
    """Synthesise one clip and write its mp4, txt and sidecar. Returns a summary dict (``skipped`` when the clip
    already exists and ``cfg.overwrite`` is false)."""
    paths = clip_paths(root, job)
    if not cfg.overwrite and all(p.exists() for p in paths.values()):
        return {"clip": str(paths["mp4"].relative_to(root)), "skipped": True}
    import torch

    torch.set_num_threads(1)
    ctx = FaceContext.get(cfg.face.face_model, cfg.face.landmark_embedding)
    identity = identity_for(cfg, ctx, job.identity_index)
    scene = _scene(cfg, job)
    real = real_skin(cfg, job, identity) if cfg.vox.style == "real" else None
    if real is not None:  # the studio scene's draws are still made: the framing and noise streams stay the same
        scene = {**scene, "background": real.look.background, "sh": real.look.sh}
    rng = rng_for(cfg.seed, _CLIP_STREAM, job.clip_index)
    fps, size = cfg.vox.fps, cfg.vox.image_size

    # speech
    n_sent = int(rng.integers(cfg.vox.sentences_per_clip[0], cfg.vox.sentences_per_clip[1] + 1))
    text = random_text(rng, n_sent)
    rate = int(np.clip(identity.rate + rng.integers(-8, 9), 80, 400))
    pitch = int(np.clip(identity.pitch + rng.integers(-5, 6), 0, 100))
    with stage("speech"):
        utt = synthesize(text, voice=identity.voice, rate=rate, pitch=pitch, sample_rate=cfg.speech.sample_rate)
        lead = float(rng.uniform(*cfg.speech.lead_in))
        audio, t = speech_audio(rng, utt, lead, fps, tuple(cfg.speech.noise_db))

    with stage("render"):
        # face
        seq = face_sequence(rng, identity, utt.phonemes, t, fps, MouthRig(ctx.data), cfg.face, speech_offset=lead)
        posed = ctx.pose(seq)
        cam, drift = crop_camera(rng, posed.landmarks3d, scene, fps)
        albedo = ctx.albedo(identity)
        out = render_vox(ctx, posed, cam, albedo, scene["sh"], scene["background"], identity, seq.global_pose,
                         real=real)
        frames = out.frames

    # occlusion
    occ_mask = np.zeros((t, size, size), np.uint8)
    occ_params: dict | None = None
    occ_error: str | None = None  # the plan chose this clip for occlusion but every attempt failed
    if job.occluded:
        with stage("occlusion"):
            occ_cfg = OcclusionConfig.from_dict(cfg.occlusion)
        errors = []
        for attempt in range(_OCC_ATTEMPTS):
            try:
                occ_seed = int(rng_for(cfg.seed, _OCC_STREAM, job.clip_index, attempt).integers(2**31))
                res = occlude_sequence(frames, landmarks=out.landmarks2d, config=occ_cfg, seed=occ_seed)
            except ValueError as e:
                errors.append(f"attempt {attempt}: {e}")
                continue
            frames = res.frames
            occ_mask = np.clip(np.round(res.masks * 255.0), 0, 255).astype(np.uint8)
            occ_params = res.params
            break
        if occ_params is None:
            occ_error = "; ".join(errors)[-2000:]
            log.warning("%s: planned as occluded, but all %d occlusion attempts failed; written without a hand "
                        "(occlusion_failed in the sidecar meta): %s", clip_paths(root, job)["mp4"], _OCC_ATTEMPTS,
                        occ_error)
    frames = add_sensor_noise(rng, frames, scene["noise"])
    if real is not None:
        frames = camera_degrade(style_rng(cfg.seed, 4, job.clip_index), frames, real.look)

    # VoxCeleb2 txt: the 224 crop as a box in a virtual source video
    src_w, src_h = scene["src_res"]
    side = rng.uniform(0.35, 0.7) * src_h
    cx = rng.uniform(side / 2, src_w - side / 2) + 0.01 * src_w * drift[:, 1]
    cy = rng.uniform(side / 2, src_h - side / 2) + 0.01 * src_h * drift[:, 2]
    rows = np.stack([(cx - side / 2) / src_w, (cy - side / 2) / src_h, np.full(t, side / src_w),
                     np.full(t, side / src_h)], axis=1)
    rows = np.clip(rows, 0, 1)
    start_frame = int(rng.integers(0, 3000))

    meta = {"text": text, "voice": identity.voice, "rate": rate, "pitch": pitch, "speech_offset_s": lead,
            "identity": {**identity.meta(), "id": job.identity}, "job": asdict(job),
            "occlusion": occ_params, "occlusion_planned": job.occluded, "occlusion_failed": occ_error is not None,
            "occlusion_error": occ_error, "words": [asdict(w) for w in utt.words], "seed": cfg.seed,
            "style": cfg.vox.style}
    shifted = [{"symbol": p.symbol, "start_ms": round((p.start + lead) * 1000, 3),
                "end_ms": round((p.end + lead) * 1000, 3), "word": p.word} for p in utt.phonemes]

    with stage("write"):
        write_mp4(paths["mp4"], frames, fps, audio, cfg.speech.sample_rate, crf=cfg.vox.crf, threads=1)
        with atomic_path(paths["txt"]) as tmp:
            tmp.write_text(vox_txt(job.identity, job.ytid, rows, start_frame, scene["fv_conf"]))
        gt = {
            "shape": seq.shape, "expression": seq.expression, "jaw_pose": seq.jaw_pose, "global_pose": seq.global_pose,
            "neck_pose": seq.neck_pose, "eye_pose": seq.eye_pose, "camera": cam, "cam": cam,
            "albedo": identity.albedo, "sh": scene["sh"],
            "landmarks2d": out.landmarks2d, "landmarks2d_static": out.landmarks2d_static,
            "landmarks3d": posed.landmarks3d, "face_mask": out.alpha.astype(np.uint8), "occlusion_mask": occ_mask,
            "articulation": seq.articulation, "blink": seq.blink,
            "phonemes": np.array(json.dumps(shifted)), "meta": np.array(json.dumps(meta, default=json_default)),
            "face_model": np.array(ctx.name), "image_size": np.array(size), "fps": np.array(fps),
            "sample_rate": np.array(cfg.speech.sample_rate), "num_frames": np.array(t),
        }
        if seq.lip_detail is not None:
            gt["lip_detail"] = seq.lip_detail
        if cfg.vox.store_vertices:
            gt["vertices"] = posed.vertices
        with atomic_path(paths["gt"], suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **gt)
    return {"clip": str(paths["mp4"].relative_to(root)), "skipped": False, "num_frames": t,
            "duration": t / fps, "occluded": occ_params is not None, "occlusion_failed": occ_error is not None,
            "occlusion_error": occ_error,
            "bytes": {k: p.stat().st_size for k, p in paths.items()}}

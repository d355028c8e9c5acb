"""Synthetic identities and their per-frame face parameters (speech-driven mouth, blinks, head motion).

Everything is a pure function of explicit ``numpy.random.Generator`` streams, so a clip's parameters depend only
on the corpus seed and the clip's indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from avface.face_model.data import FaceModelData
from avface.face_model.starter import EXPRESSION_NAMES
from avface.speech.espeak import Phoneme
from avface.speech.visemes import articulation_curves
from avface.synth.config import FaceConfig, SpeechConfig

__all__ = ["Identity", "sample_identity", "MouthRig", "FaceSequence", "face_sequence", "smooth_noise",
           "blink_curve"]


@dataclass
class Identity:
    """A synthetic person: face model coefficients, voice and speaking style."""

    shape: np.ndarray  # (NS,) float32
    albedo: np.ndarray  # (NA,) float32 (empty when the model has no albedo basis)
    gender: str  # "m" | "f"
    voice: str
    rate: int
    pitch: int
    jaw_open_max: float  # rad
    articulation: float
    skin_tint: np.ndarray  # (3,) multiplicative albedo tint (models without an albedo basis get variety here)
    hair_color: np.ndarray  # (3,) uint8, for the head silhouette behind the face
    shirt_color: np.ndarray  # (3,) uint8

    def meta(self) -> dict:
        return {"gender": self.gender, "voice": self.voice, "rate": self.rate, "pitch": self.pitch,
                "jaw_open_max": self.jaw_open_max, "articulation": self.articulation}


def sample_identity(rng: np.random.Generator, data: FaceModelData, face: FaceConfig, speech: SpeechConfig,
                    n_shape: int = 100) -> Identity:
    ns = min(n_shape, data.shapedirs.shape[-1])
    na = 0 if data.albedo_basis is None else data.albedo_basis.shape[-1]
    gender = "f" if rng.random() < 0.5 else "m"
    voices = speech.voices_female if gender == "f" else speech.voices_male
    pitch_lo, pitch_hi = speech.pitch
    mid = (pitch_lo + pitch_hi) // 2
    pitch = int(rng.integers(mid, pitch_hi + 1)) if gender == "f" else int(rng.integers(pitch_lo, mid + 1))
    hair = np.array([[25, 20, 18], [60, 40, 25], [110, 80, 50], [160, 130, 90], [90, 90, 90], [15, 15, 20]])
    return Identity(
        shape=(rng.standard_normal(ns) * face.shape_std).astype(np.float32),
        albedo=(rng.standard_normal(na) * face.albedo_std).astype(np.float32),
        gender=gender,
        voice=str(voices[int(rng.integers(len(voices)))]),
        rate=int(rng.integers(speech.rate[0], speech.rate[1] + 1)),
        pitch=pitch,
        jaw_open_max=float(rng.uniform(*face.jaw_open_max)),
        articulation=float(rng.uniform(*face.articulation)),
        skin_tint=np.clip(1.0 + rng.normal(0, 0.06, 3), 0.85, 1.15).astype(np.float32),
        hair_color=np.clip(hair[int(rng.integers(len(hair)))] + rng.integers(-12, 13, 3), 0, 255).astype(np.uint8),
        shirt_color=rng.integers(20, 235, 3).astype(np.uint8),
    )


def smooth_noise(rng: np.random.Generator, n: int, dims: int, sigma_frames: float) -> np.ndarray:
    """(n, dims) low-pass Gaussian noise with unit standard deviation per dimension (in expectation).

    Divided by the filter's own output spread (the norm of its kernel), not by the sample's: a sequence much
    shorter than ``sigma_frames`` is nearly constant, and dividing by its tiny sample spread blew it up (a clip's
    camera-scale drift of -60 standard deviations made its scale negative and its render fail)."""
    sigma = max(sigma_frames, 1e-3)
    pad = int(4 * sigma_frames) + 1
    x = gaussian_filter1d(rng.standard_normal((n + 2 * pad, dims)), sigma, axis=0)[pad:pad + n]
    impulse = np.zeros(2 * pad + 1)
    impulse[pad] = 1.0
    return x / np.linalg.norm(gaussian_filter1d(impulse, sigma))


def blink_curve(rng: np.random.Generator, times: np.ndarray, interval: tuple[float, float],
                duration: float) -> np.ndarray:
    """(T,) eyelid closure in [0, 1]: blinks every U(interval) seconds, each ``duration`` s (fast close, slower
    open)."""
    out = np.zeros(len(times))
    t = float(rng.uniform(0.2, interval[1]))
    t_end = float(times[-1]) + 1.0 if len(times) else 0.0
    while t < t_end:
        close, open_ = 0.35 * duration, 0.65 * duration
        rising = np.clip((times - t) / close, 0, 1)
        falling = np.clip(1 - (times - t - close) / open_, 0, 1)
        shape = np.where(times < t + close, rising, falling)
        shape = np.sin(shape * np.pi / 2) ** 2
        out = np.maximum(out, np.where((times >= t) & (times <= t + duration), shape, 0.0))
        t += float(rng.uniform(*interval))
    return out


class MouthRig:
    """Maps articulation curves (jaw_open, lip_round, lip_spread, lip_press) and blinks to model parameters.

    The starter model has semantic expression bases (``avface.face_model.starter.EXPRESSION_NAMES``): lips map to
    ``lip_rounding``, ``lip_spread``, ``lip_press`` (+ a little ``lower_lip_depress`` with the jaw), blinks to
    ``blink_left/right``. FLAME's expression space is a PCA without names: there the mouth is driven by the jaw
    only (plus lip rounding/spread through the model-agnostic noise), and blinks are skipped unless the caller
    provides expression directions.
    """

    def __init__(self, data: FaceModelData, n_expression: int = 50) -> None:
        self.n_expression = min(n_expression, data.exprdirs.shape[-1])
        self.index: dict[str, int] = {}
        n_semantic = min(data.n_semantic_expression, self.n_expression)
        self.index = {n: i for i, n in enumerate(EXPRESSION_NAMES[:n_semantic])}
        self.n_semantic = len(self.index)

    def expression(self, curves: np.ndarray, blinks: np.ndarray, extra: dict[str, np.ndarray]) -> np.ndarray:
        """curves (T, 4), blinks (T,) -> expression (T, NE)."""
        t = len(curves)
        e = np.zeros((t, self.n_expression), np.float32)
        jaw, rnd, spread, press = curves.T

        def put(name: str, value: np.ndarray) -> None:
            if name in self.index:
                e[:, self.index[name]] += value

        put("lip_rounding", 0.9 * rnd)
        put("lip_spread", 0.6 * spread)
        put("lip_press", 0.5 * press)
        put("lower_lip_depress", 0.25 * jaw)
        put("blink_left", blinks)
        put("blink_right", blinks)
        for name, value in extra.items():
            put(name, value)
        return e


@dataclass
class FaceSequence:
    """Per-frame parameters of one clip (numpy float32)."""

    shape: np.ndarray  # (T, NS)
    expression: np.ndarray  # (T, NE)
    jaw_pose: np.ndarray  # (T, 3)
    global_pose: np.ndarray  # (T, 3) axis-angle
    neck_pose: np.ndarray  # (T, 3)
    eye_pose: np.ndarray  # (T, 6)
    articulation: np.ndarray  # (T, 4) jaw_open, lip_round, lip_spread, lip_press
    blink: np.ndarray  # (T,)
    lip_detail: np.ndarray | None = None  # (T, C) FaceModel lip_detail coefficients (LIP_DETAIL_NAMES); None = none


def _euler_to_axis_angle(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """Head rotation R = Ry(yaw) Rx(pitch) Rz(roll) (radians) -> (T, 3) axis-angle."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("YXZ", np.stack([yaw, pitch, roll], axis=1)).as_rotvec().astype(np.float32)


def face_sequence(
    rng: np.random.Generator,
    identity: Identity,
    phonemes: list[Phoneme],
    num_frames: int,
    fps: float,
    rig: MouthRig,
    face: FaceConfig,
    speech_offset: float = 0.0,
) -> FaceSequence:
    """Parameters for ``num_frames`` frames at ``fps``; frame i shows time ``i / fps``; phoneme times are shifted
    by ``speech_offset`` seconds (the lead-in before the speech in the audio track)."""
    t = np.arange(num_frames) / fps
    shifted = [Phoneme(p.symbol, p.start + speech_offset, p.end + speech_offset, p.word) for p in phonemes]
    curves = articulation_curves(shifted, t, strength=identity.articulation)
    blinks = blink_curve(rng, t, tuple(face.blink_interval), face.blink_duration)

    # head motion: smooth noise, a slow component plus a faster one, clipped to the configured range
    sig = max(face.head_motion_seconds * fps, 1.0)
    slow = smooth_noise(rng, num_frames, 3, 2.5 * sig)
    fast = smooth_noise(rng, num_frames, 3, 0.5 * sig)
    amp = np.deg2rad([face.max_yaw_deg, face.max_pitch_deg, face.max_roll_deg])
    base = rng.uniform(-0.5, 0.5, 3) * amp  # clip-level mean pose
    ang = base + (0.35 * slow + 0.12 * fast) * amp
    ang = np.clip(ang, -amp, amp)
    # a slight nod with the jaw (speakers move the head with the syllables)
    ang[:, 1] += 0.03 * (curves[:, 0] - curves[:, 0].mean())
    global_pose = _euler_to_axis_angle(ang[:, 0], ang[:, 1], ang[:, 2])

    # gaze: fixations with small saccades, both eyes together (FLAME eye_pose = 2 axis-angles)
    gaze = np.zeros((num_frames, 2))
    k = 0
    while k < num_frames:
        length = int(rng.uniform(0.4, 1.5) * fps)
        gaze[k:k + length] = rng.normal(0, 0.08, 2)
        k += max(length, 1)
    gaze = gaussian_filter1d(gaze, 1.0, axis=0) if num_frames > 1 else gaze
    eye = np.zeros((num_frames, 6), np.float32)
    eye[:, 0] = eye[:, 3] = gaze[:, 1]  # pitch (x axis)
    eye[:, 1] = eye[:, 4] = gaze[:, 0]  # yaw (y axis)

    # slow expressive components (smile, brows) and noise on the non-semantic bases
    extra = {
        "smile": np.clip(0.25 + 0.3 * smooth_noise(rng, num_frames, 1, 3 * sig)[:, 0], 0, 0.8) * rng.uniform(0, 1),
        "brow_raise": np.clip(0.3 * smooth_noise(rng, num_frames, 1, sig)[:, 0], 0, 0.6),
    }
    expression = rig.expression(curves, blinks, extra)
    if face.expression_noise > 0 and expression.shape[1] > rig.n_semantic:
        n_free = expression.shape[1] - rig.n_semantic
        decay = 1.0 / np.sqrt(1.0 + np.arange(n_free))
        expression[:, rig.n_semantic:] += (face.expression_noise * decay
                                           * smooth_noise(rng, num_frames, n_free, sig)).astype(np.float32)

    jaw = np.zeros((num_frames, 3), np.float32)
    jaw[:, 0] = curves[:, 0] * identity.jaw_open_max
    jaw[:, 1] = 0.02 * smooth_noise(rng, num_frames, 1, sig)[:, 0] * curves[:, 0]  # slight lateral jaw
    # lip detail (LIP_DETAIL_NAMES: protrude, roll_in, corner_pull) driven by lip rounding, press and spread
    lip_detail = (face.lip_detail_mm * curves[:, [1, 3, 2]]).astype(np.float32) if face.lip_detail_mm > 0 else None
    return FaceSequence(
        shape=np.repeat(identity.shape[None], num_frames, axis=0).astype(np.float32),
        expression=expression.astype(np.float32),
        jaw_pose=jaw,
        global_pose=global_pose,
        neck_pose=np.zeros((num_frames, 3), np.float32),
        eye_pose=eye,
        articulation=curves.astype(np.float32),
        blink=blinks.astype(np.float32),
        lip_detail=lip_detail,
    )

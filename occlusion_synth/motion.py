"""Frame-to-frame hand motion: a bounded-velocity, bounded-acceleration random walk.

AVFace (sec. 3.4) "randomly rotate[s] and translate[s] the hand from frame to frame to approximate a realistic
hand motion". A plain random walk jitters; a walk on the *velocity* with both speed and acceleration clipped
gives smooth, hand-like drift, and a weak spring towards the first-frame placement keeps the hand on the face
for long sequences. Optional enter / leave phases slide the hand in along its arm (from outside the face) at
the start or out at the end with a smoothstep profile whose peak speed is bounded too.

All translations are in face units (multiples of the face size sqrt(w h)), so the same config works for any
resolution; angles in degrees; scale as log-scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class MotionConfig:
    """max_speed / max_accel: translation per frame (face units); max_angular_speed_deg / max_angular_accel_deg:
    rotation; max_scale_speed: |d log scale| per frame (0 disables scale changes); spring: pull towards the
    first-frame pose per frame; enter / leave: slide the hand in at the start / out at the end along its arm,
    over `enter_leave_distance` face units at a peak speed of at most `enter_leave_speed` face units per frame;
    follow_face: move with the face box (the hand stays at the same place relative to a moving head)."""

    max_speed: float = 0.03
    max_accel: float = 0.01
    max_angular_speed_deg: float = 3.0
    max_angular_accel_deg: float = 1.0
    max_scale_speed: float = 0.008
    spring: float = 0.02
    enter: bool = False
    leave: bool = False
    enter_leave_distance: float = 1.5
    enter_leave_speed: float = 0.3
    follow_face: bool = True


@dataclass
class Trajectory:
    """offset (T, 2) face units; angle_deg (T,); log_scale (T,); retreat (T,) face units along the arm (>= 0,
    0 = at the placement), from the enter/leave phases."""

    offset: np.ndarray
    angle_deg: np.ndarray
    log_scale: np.ndarray
    retreat: np.ndarray


def _clip_norm(v: np.ndarray, max_norm: float) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v * np.minimum(1.0, max_norm / np.maximum(n, 1e-12))


def _walk(T: int, dim: int, max_speed: float, max_accel: float, spring: float, rng: np.random.Generator
          ) -> np.ndarray:
    """(T, dim) positions of a walk starting at 0 with |v| <= max_speed and |a| <= max_accel per frame."""
    x = np.zeros((T, dim))
    if T == 1 or max_speed <= 0:
        return x
    v = _clip_norm(rng.normal(0.0, max_speed / 2, dim), max_speed / 2)  # start already moving (no first jerk)
    for t in range(1, T):
        a = _clip_norm(rng.normal(0.0, max_accel / 2, dim) - spring * x[t - 1] - 0.05 * v, max_accel)
        v = _clip_norm(v + a, max_speed)
        x[t] = x[t - 1] + v
    return x


def _smoothstep(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def enter_leave_profile(T: int, cfg: MotionConfig) -> np.ndarray:
    """(T,) retreat distance along the arm. The smoothstep's peak slope is 1.5 / n, so n frames are chosen
    with 1.5 * distance / n <= enter_leave_speed. Each phase takes at most a third of the sequence (so the hand
    does rest on the face); when that is too short for the full distance at the bounded speed, the distance is
    shortened instead of exceeding the speed bound."""
    t = np.arange(T, dtype=np.float64)
    out = np.zeros(T)
    if not (cfg.enter or cfg.leave) or T < 2:
        return out
    speed = max(cfg.enter_leave_speed, 1e-9)
    n = int(np.ceil(1.5 * cfg.enter_leave_distance / speed))
    n = max(1, min(n, (T - 1) // (3 if cfg.enter and cfg.leave else 2)))
    dist = min(cfg.enter_leave_distance, speed * n / 1.5)
    if cfg.enter:
        out = np.maximum(out, dist * (1.0 - _smoothstep(t / n)))
    if cfg.leave:
        out = np.maximum(out, dist * _smoothstep((t - (T - 1 - n)) / n))
    return out


def random_trajectory(T: int, cfg: MotionConfig, rng: np.random.Generator) -> Trajectory:
    """Draw the hand's motion for T frames (frame 0 is the identity: offset 0, angle 0, scale 1)."""
    offset = _walk(T, 2, cfg.max_speed, cfg.max_accel, cfg.spring, rng)
    angle = _walk(T, 1, cfg.max_angular_speed_deg, cfg.max_angular_accel_deg, cfg.spring, rng)[:, 0]
    log_scale = _walk(T, 1, cfg.max_scale_speed, cfg.max_scale_speed / 3, cfg.spring, rng)[:, 0]
    return Trajectory(offset=offset, angle_deg=angle, log_scale=log_scale, retreat=enter_leave_profile(T, cfg))

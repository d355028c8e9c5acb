"""Visual check of an occluded sequence: a PNG strip of frames with the mask overlaid."""

from __future__ import annotations

import numpy as np

from avface.viz import make_grid


def make_strip(frames: np.ndarray, masks: np.ndarray, n: int = 8, color: tuple[int, int, int] = (255, 40, 40),
               overlay: float = 0.5) -> np.ndarray:
    """(T, H, W, 3) u8 frames + (T, H, W) f32 masks -> (2H, n'W, 3) u8 strip of n' = min(n, T) evenly spaced
    frames: top row the occluded frames, bottom row the same frames with the mask tinted in `color`."""
    T = len(frames)
    idx = np.unique(np.linspace(0, T - 1, min(n, T)).round().astype(int))
    top = frames[idx]
    m = masks[idx][..., None] * overlay
    bottom = np.clip(np.rint(top.astype(np.float32) * (1 - m) + np.array(color, np.float32) * m), 0, 255)
    # No padding: the strip is the frames edge to edge, one row each.
    return make_grid(np.concatenate([top, bottom.astype(np.uint8)]), ncols=len(idx), pad=0)

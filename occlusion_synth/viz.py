"""Visual check of an occluded sequence: a PNG strip of frames with the mask overlaid."""

from __future__ import annotations

import numpy as np

from avface.viz import make_grid, tint_mask


def make_strip(frames: np.ndarray, masks: np.ndarray, n: int = 8, color: tuple[int, int, int] = (255, 40, 40),
               overlay: float = 0.5) -> np.ndarray:
    """(T, H, W, 3) u8 frames + (T, H, W) f32 masks -> (2H, n'W, 3) u8 strip of n' = min(n, T) evenly spaced
    frames: top row the occluded frames, bottom row the same frames with the mask tinted in `color`."""
    T = len(frames)
    idx = np.unique(np.linspace(0, T - 1, min(n, T)).round().astype(int))
    top = frames[idx]
    bottom = np.stack([tint_mask(f, m, color, overlay) for f, m in zip(top, masks[idx], strict=True)])
    # No padding: the strip is the frames edge to edge, one row each.
    return make_grid(np.concatenate([top, bottom]), ncols=len(idx), pad=0)

"""A contact sheet of WebDataset shard samples: what a person looks at to check the shards."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import webdataset as wds

from avface.data.sample import decode_sample
from avface.viz import draw_landmarks, make_grid, tint_mask

__all__ = ["shard_preview"]


def shard_preview(tars: list[Path], num_samples: int, frames_per_sample: int = 8, scan: int = 200) -> np.ndarray:
    """A contact sheet of shard samples: one row per sample, frames with landmarks drawn and occlusion tinted.

    Rows show different clips, occluded windows first, from the first ``scan`` samples.
    Returns:
        (H', W', 3) uint8 RGB.
    """
    chosen: dict[str, dict] = {}
    for raw in itertools.islice(wds.WebDataset([str(t) for t in tars], shardshuffle=False), scan):
        sample = decode_sample(raw)
        group = "occluded" if sample["meta"].get("occluded") else sample["meta"]["clip_id"]
        chosen.setdefault(group, sample)
    if not chosen:
        raise RuntimeError(f"no samples in {[str(t) for t in tars]}")
    order = sorted(chosen, key=lambda g: g != "occluded")[:num_samples]
    tiles = []
    for group in order:
        sample = chosen[group]
        frames = sample["frames"]  # (T, H, W, 3) u8
        for i in np.linspace(0, len(frames) - 1, frames_per_sample).round().astype(int):
            image = frames[i]
            if "occlusion_mask" in sample:
                image = tint_mask(image, sample["occlusion_mask"][i])
            if sample["landmarks_valid"][i]:
                image = draw_landmarks(image, sample["landmarks"][i])
            tiles.append(image)
    return make_grid(np.stack(tiles), ncols=frames_per_sample)

"""The occlude command (``pipelines/occlude.py``): occlude a face video with a synthetic moving hand and write the
result, its masks, its replayable params and a strip.

Writes to ``config.out``: the occluded frames (``occluded.mp4`` or ``frames/%06d.png``), ``masks.npy`` (T, H, W)
float32, ``params.json`` (replayable with :func:`occlusion_synth.replay`), ``boxes.npy`` (the face boxes used) and
``strip.png`` (evenly spaced frames; bottom row with the mask tinted red).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from avface.io.frames import read_frames
from avface.io.media import write_mp4
from avface.utils.files import atomic_path
from avface.viz import save_png

from .config import OccludeConfig
from .demo import astronaut_sequence
from .sequence import occlude_sequence
from .viz import make_strip

__all__ = ["load_frames", "run_occlude"]

log = logging.getLogger("avface.occlude")


def _load_array(path: str, key: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{key} file {path!r} does not exist")
    if p.suffix == ".npy":
        return np.load(p, allow_pickle=False)
    if p.suffix == ".json":
        data = json.loads(p.read_text())
        if isinstance(data, dict):
            data = data[key]
        return np.asarray(data, dtype=np.float64)
    raise ValueError(f"{key} file must be .json or .npy, got {path!r}")


def _save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` atomically (to a file object: ``np.save`` would append ``.npy`` to the temporary name)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def load_frames(config: OccludeConfig) -> tuple[np.ndarray, float, np.ndarray | None]:
    """-> (frames (T, H, W, 3) uint8 RGB, fps, demo boxes (T, 4) or None)."""
    if config.input == "astronaut":
        frames, boxes = astronaut_sequence(config.num_frames, config.size, config.seed, config.shake_px)
        return frames, config.fps, boxes
    if not Path(config.input).exists():
        raise ValueError(f"input {config.input!r} is neither 'astronaut', a video file nor a folder of frames")
    frames, fps = read_frames(config.input, config.num_frames, folder_fps=config.fps)
    return frames, fps, None


def run_occlude(config: OccludeConfig) -> dict[str, Path]:
    """Run the command; returns the paths it wrote."""
    frames, fps, boxes = load_frames(config)
    T = len(frames)
    landmarks = None
    if config.boxes:
        boxes = _load_array(config.boxes, "boxes")
        if boxes.ndim == 2 and len(boxes) > T:
            boxes = boxes[:T]
    if config.landmarks:
        landmarks = _load_array(config.landmarks, "landmarks")[:T]
        boxes = None if not config.boxes else boxes
    if boxes is None and landmarks is None:
        raise ValueError("no face box: pass boxes=<file.json|file.npy> or landmarks=<file.npy> for real input")
    result = occlude_sequence(frames, face_boxes=boxes, landmarks=landmarks, config=config.occlusion,
                              seed=config.seed)

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if config.write == "mp4":
        paths["frames"] = write_mp4(out / "occluded.mp4", result.frames, fps=fps)
    elif config.write == "png":
        fdir = out / "frames"
        fdir.mkdir(exist_ok=True)
        for t, f in enumerate(result.frames):
            save_png(fdir / f"{t:06d}.png", f)
        paths["frames"] = fdir
    else:
        raise ValueError(f"write must be 'mp4' or 'png', got {config.write!r}")
    _save_npy(out / "masks.npy", result.masks)
    _save_npy(out / "boxes.npy", np.asarray(result.params["face_boxes"]))
    with atomic_path(out / "params.json") as tmp:
        tmp.write_text(json.dumps(result.params))
    strip = make_strip(result.frames, result.masks, n=config.strip_frames)
    save_png(out / "strip.png", strip)
    paths.update(masks=out / "masks.npy", params=out / "params.json", strip=out / "strip.png",
                 boxes=out / "boxes.npy")
    cover = result.masks.reshape(T, -1).sum(1)
    log.info("occluded %d frames %dx%d (hand %s, mean mask area %.0f px) -> %s", T, frames.shape[2],
             frames.shape[1], result.params["hand"].get("pose", result.params["hand"].get("file")), cover.mean(),
             out)
    return paths

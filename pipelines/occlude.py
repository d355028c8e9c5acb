"""Occlude the face in a video with a synthetic moving hand (AVFace sec. 3.4; library: `occlusion_synth`).

    python pipelines/occlude.py                                   # demo: astronaut + camera shake -> runs/occlude/
    python pipelines/occlude.py input=clip.mp4 boxes=boxes.json out=runs/clip seed=3
    python pipelines/occlude.py input=frames_dir/ boxes=boxes.npy write=png occlusion.motion.enter=true
    python pipelines/occlude.py occlusion.hand.source=folder occlusion.hand.folder=/data/hands_rgba

Writes to `out`: the occluded frames (`occluded.mp4` or `frames/%06d.png`), `masks.npy` (T, H, W) float32,
`params.json` (replayable with `occlusion_synth.replay`), `boxes.npy` (the face boxes used) and `strip.png`
(evenly spaced frames; bottom row with the mask tinted red).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import hydra
import numpy as np
from hydra.core.config_store import ConfigStore

from avface.utils.config import dataclass_from_dict
from avface.utils.files import atomic_path
from avface.viz import save_png
from occlusion_synth import OcclusionConfig, make_strip, occlude_sequence
from occlusion_synth.demo import astronaut_sequence

log = logging.getLogger("avface.occlude")

_FRAME_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


@dataclass
class OccludeConfig:
    """input: "astronaut" (demo), an .mp4 (decoded with PyAV) or a folder of frames (sorted by name).
    boxes: .json ([[x1, y1, x2, y2], ...] or {"boxes": ...}) or .npy, (T, 4) or one (4,) box; required for real
    input unless `landmarks` (.npy (T, 68, 2) pixels) is given. num_frames: demo length, or the first N frames of
    the input (0 = all). size / shake_px: demo frame size and camera shake. write: "mp4" or "png"."""

    input: str = "astronaut"
    boxes: str | None = None
    landmarks: str | None = None
    out: str = "runs/occlude"
    seed: int = 0
    num_frames: int = 16
    size: int = 224
    shake_px: float = 3.0
    fps: float = 25.0
    write: str = "mp4"
    strip_frames: int = 8
    occlusion: OcclusionConfig = field(default_factory=OcclusionConfig)


ConfigStore.instance().store(name="occlude_schema", node=OccludeConfig)


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
    """-> (frames (T, H, W, 3) uint8 RGB, fps, demo boxes or None)."""
    if config.input == "astronaut":
        frames, boxes = astronaut_sequence(config.num_frames, config.size, config.seed, config.shake_px)
        return frames, config.fps, boxes
    src = Path(config.input)
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.suffix.lower() in _FRAME_EXTS)
        if not files:
            raise ValueError(f"input folder {src} has no frames ({sorted(_FRAME_EXTS)})")
        imgs = []
        for f in files[: config.num_frames or None]:
            img = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
            if img is None:
                raise ValueError(f"cannot read frame {f}")
            if img.ndim == 2 or img.shape[2] == 1:
                raise ValueError(f"grayscale frame {f}: RGB frames are required")
            imgs.append(cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB))
        return np.stack(imgs), config.fps, None
    if src.is_file():
        from avface.io.media import read_video

        frames, fps = read_video(src)
        return frames[: config.num_frames or None], fps, None
    raise ValueError(f"input {config.input!r} is neither 'astronaut', a video file nor a folder of frames")


def run(config: OccludeConfig) -> dict[str, Path]:
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
        from avface.io.media import write_mp4

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


@hydra.main(config_path="../conf", config_name="occlude", version_base="1.3")
def main(cfg) -> None:
    config = dataclass_from_dict(OccludeConfig, cfg)
    run(config)


if __name__ == "__main__":
    main()

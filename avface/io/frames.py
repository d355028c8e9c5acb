"""Frame sequences from disk: a video file or a folder of images, as ``(T, H, W, 3)`` uint8 RGB."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from avface.io.video import read_video

__all__ = ["FRAME_EXTS", "read_frame_folder", "read_frames"]

FRAME_EXTS = (".bmp", ".jpeg", ".jpg", ".png", ".webp")


def read_frame_folder(folder: str | os.PathLike, max_frames: int = 0) -> np.ndarray:
    """The images of ``folder`` (``FRAME_EXTS``, sorted by name), the first ``max_frames`` of them (0 = all).

    Returns:
        (T, H, W, 3) uint8 RGB (an alpha channel is dropped).
    Raises:
        ValueError: no images, an unreadable or a grayscale image (named), images of different sizes.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTS)
    if not files:
        raise ValueError(f"input folder {folder} has no frames ({list(FRAME_EXTS)})")
    frames = []
    for f in files[: max_frames or None]:
        img = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError(f"cannot read frame {f}")
        if img.ndim == 2 or img.shape[2] == 1:
            raise ValueError(f"grayscale frame {f}: RGB frames are required")
        if frames and img.shape[:2] != frames[0].shape[:2]:
            raise ValueError(f"frame {f} is {img.shape[1]}x{img.shape[0]}, the first frame "
                             f"{frames[0].shape[1]}x{frames[0].shape[0]}: all frames must have one size")
        frames.append(cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB))
    return np.stack(frames)


def read_frames(path: str | os.PathLike, max_frames: int = 0, folder_fps: float = 25.0) -> tuple[np.ndarray, float]:
    """A video file (:func:`avface.io.video.read_video`: upright frames) or a folder of frames
    (:func:`read_frame_folder`), the first ``max_frames`` (0 = all).

    Returns:
        frames (T, H, W, 3) uint8 RGB, fps (the video's; ``folder_fps`` for a folder).
    Raises:
        ValueError: ``path`` is neither a file nor a folder.
    """
    path = Path(path)
    if path.is_dir():
        return read_frame_folder(path, max_frames), folder_fps
    if path.is_file():
        return read_video(path, max_frames)
    raise ValueError(f"input {str(path)!r} is neither a video file nor a folder of frames")

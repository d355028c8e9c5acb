"""Contact sheets: many equally sized RGB images tiled into one picture."""

from __future__ import annotations

import os

import numpy as np

from avface.utils.files import atomic_path


def make_grid(images: np.ndarray, ncols: int | None = None, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile images into a grid.

    Args:
        images: (N, H, W, 3) uint8 RGB (or (N, H, W), broadcast to RGB).
        ncols: images per row; default ceil(sqrt(N)).
        pad: pixels between tiles.
    Returns:
        (rows * (H + pad) + pad, ncols * (W + pad) + pad, 3) uint8.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise ValueError(f"make_grid expects (N, H, W, 3) images with N > 0, got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"make_grid expects uint8 images, got {images.dtype}")
    n, h, w, _ = images.shape
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    sheet = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, 3), pad_value, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        sheet[y : y + h, x : x + w] = image
    return sheet


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB image as PNG (atomically)."""
    import cv2

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"save_png expects (H, W, 3) uint8, got {image.shape} {image.dtype}")
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), image[..., ::-1]):
            raise OSError(f"could not write PNG {path}")

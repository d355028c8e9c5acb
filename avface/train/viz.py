"""The validation strip logged at each validation: per frame, the input | the coarse mesh over it | after lip
refinement | the detail normals (a column is grey where the model's stage does not run that part yet)."""

from __future__ import annotations

import numpy as np
import torch

from avface.models.avface import AVFace
from avface.render.cameras import ndc_to_pixels
from avface.viz.grid import make_grid
from avface.viz.overlay import draw_landmarks

__all__ = ["validation_strip"]


def _u8(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) float [0, 1] -> (H, W, 3) uint8."""
    return (x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def _overlay(image: torch.Tensor, out, t: int) -> np.ndarray:
    """The coarse rendering of frame t of window 0 blended over image (3, H, W)."""
    a = out.alpha_coarse[0, t]
    return _u8(image * (1 - 0.7 * a) + out.render_coarse[0, t] * 0.7 * a)


@torch.no_grad()
def validation_strip(model: AVFace, batch, frames: int = 4) -> np.ndarray:
    """(rows * H, 4 * W, 3) uint8 for the first window of ``batch``: ``frames`` frames, one per row."""
    was = model.training
    model.eval()
    out = model(batch)
    model.train(was)
    size = batch.images.shape[-1]
    coarse_out = out if out.vertices_coarse is None else out.replace(vertices=out.vertices_coarse)
    coarse = model.render(coarse_out, "coarse")
    lip = model.render(out, "coarse") if out.vertices_coarse is not None else None
    tiles = []
    grey = np.full((size, size, 3), 128, np.uint8)
    for t in np.linspace(0, batch.window - 1, num=min(frames, batch.window)).astype(int):
        img = batch.images[0, t]
        inp = draw_landmarks(_u8(img), batch.landmarks[0, t].cpu().numpy(), (40, 255, 40))
        pred = ndc_to_pixels(out.landmarks2d[0, t], size).cpu().numpy()
        inp = draw_landmarks(inp, pred, (255, 60, 60))

        row = [inp, _overlay(img, coarse, t), _overlay(img, lip, t) if lip is not None else grey]
        if out.normals_detail is not None:
            row.append(_u8(out.normals_detail[0, t] * 0.5 + 0.5))
        else:
            row.append(grey)
        tiles.extend(row)
    return make_grid(np.stack(tiles), ncols=4)

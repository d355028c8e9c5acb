"""Pictures people look at: image grids / contact sheets, overlays."""

from avface.viz.grid import make_grid, save_png
from avface.viz.overlay import draw_label, draw_landmark_contours, draw_landmarks, tint_mask

__all__ = ["draw_label", "draw_landmark_contours", "draw_landmarks", "make_grid", "save_png", "tint_mask"]

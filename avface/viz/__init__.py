"""Pictures people look at: image grids / contact sheets, overlays."""

from avface.viz.grid import make_grid, save_png

__all__ = ["make_grid", "save_png"]

"""Evaluation pictures: CED curves and per-vertex error heat maps in the style of the paper's Fig. 6.

Matplotlib's object API with the Agg canvas (no pyplot, no global backend change). The heat maps are drawn by
matplotlib, not by ``avface.render``: a flat-shaded projection of the mesh (painter's algorithm, back faces
culled) with every triangle coloured by the mean error of its vertices and a colour bar in mm, so they need no
texture, light or camera model and show the error exactly where it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from avface.metrics import auc, ced_curve
from avface.utils.files import atomic_path

__all__ = ["plot_ced", "ErrorPanel", "render_error_heatmaps"]


def _save(fig: Figure, path: str | Path, dpi: int) -> Path:
    FigureCanvasAgg(fig)
    path = Path(path)
    with atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    return path


def plot_ced(errors: Mapping[str, np.ndarray], path: str | Path, max_error: float = 0.1,
             xlabel: str = "NME (inter-ocular)", percent: bool = True, dpi: int = 120) -> Path:
    """CED curves, one per method (errors: name -> (N,) per-sample errors), on [0, max_error]; the legend gives
    each method's AUC on that range. ``percent``: x axis in percent (for NME fractions)."""
    x = np.linspace(0.0, max_error, 501)
    fig = Figure(figsize=(5.0, 3.6))
    ax = fig.add_subplot()
    k = 100.0 if percent else 1.0
    for name, e in errors.items():
        ax.plot(x * k, ced_curve(e, x), label=f"{name} (AUC {auc(e, max_error):.3f})")
    ax.set_xlim(0, max_error * k)
    ax.set_ylim(0, 1)
    ax.set_xlabel(xlabel + (" (%)" if percent else ""))
    ax.set_ylabel("fraction of samples")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path, dpi)


@dataclass
class ErrorPanel:
    """One mesh of a heat-map figure. vertices: (V, 3) (x right, y up, z towards the viewer, unless ``points2d``
    is given), faces: (F, 3), errors: (V,) mm; points2d: (V, 2) image coordinates (y down) and depth: (V,) larger
    = farther, from a camera projection (e.g. ``avface.data.multiface.project_points``)."""

    title: str
    vertices: np.ndarray
    faces: np.ndarray
    errors: np.ndarray
    points2d: np.ndarray | None = None
    depth: np.ndarray | None = None


def _draw(ax, panel: ErrorPanel, norm: Normalize, cmap: str) -> PolyCollection:
    f = np.asarray(panel.faces, dtype=np.int64)
    if panel.points2d is None:
        v = np.asarray(panel.vertices, dtype=np.float64)
        xy, far = v[:, :2] * [1.0, -1.0], -v[:, 2]  # frontal orthographic view, image y down
    else:
        xy, far = np.asarray(panel.points2d, np.float64), np.asarray(panel.depth, np.float64)
    tri = xy[f]  # (F, 3, 2)
    # image y points down: a front face (counter-clockwise seen from the viewer) has negative signed area here
    area = ((tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1])
            - (tri[:, 2, 0] - tri[:, 0, 0]) * (tri[:, 1, 1] - tri[:, 0, 1]))
    front = area < 0
    order = np.argsort(-far[f].mean(1)[front], kind="stable")  # farthest first
    face_err = np.asarray(panel.errors, np.float64)[f].mean(1)[front][order]
    # edges in the face colour: no anti-aliasing seams between neighbouring triangles
    pc = PolyCollection(tri[front][order], array=face_err, cmap=cmap, norm=norm, edgecolors="face", linewidths=0.3)
    ax.add_collection(pc)
    ax.set_xlim(xy[:, 0].min(), xy[:, 0].max())
    ax.set_ylim(xy[:, 1].max(), xy[:, 1].min())
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title(panel.title, fontsize=9)
    return pc


def render_error_heatmaps(panels: Sequence[ErrorPanel], path: str | Path, vmax: float | None = None,
                          cmap: str = "jet", label: str = "error (mm)", dpi: int = 150) -> Path:
    """Fig. 6-style figure: the panels side by side sharing one colour scale [0, vmax] (default: the 99th
    percentile of all errors) and one colour bar in mm."""
    if not panels:
        raise ValueError("render_error_heatmaps: no panels")
    for p in panels:
        if len(p.errors) != len(p.vertices):
            raise ValueError(f"panel {p.title!r}: {len(p.errors)} errors for {len(p.vertices)} vertices")
    if vmax is None:
        vmax = float(np.percentile(np.concatenate([np.asarray(p.errors, float) for p in panels]), 99)) or 1.0
    norm = Normalize(0.0, vmax)
    fig = Figure(figsize=(2.6 * len(panels) + 0.8, 3.2))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    pc = None
    for ax, p in zip(axes, panels, strict=True):
        pc = _draw(ax, p, norm, cmap)
    fig.colorbar(pc, ax=list(axes), label=label, fraction=0.04)
    return _save(fig, path, dpi)

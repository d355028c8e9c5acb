"""Differentiable renderer (pytorch3d structures; a vectorised z-buffer rasterizer for the CPU)."""

from avface.render.cameras import (
    PerspectiveCamera,
    ndc_to_pixels,
    orthographic_project,
    perspective_project,
    pixels_to_ndc,
)
from avface.render.rasterizer import Fragments, rasterize
from avface.render.renderer import FaceRenderer, RenderOutput, UVMaps
from avface.render.shading import SH_CONSTANTS, sh_shading, vertex_normals

__all__ = [
    "SH_CONSTANTS",
    "FaceRenderer",
    "Fragments",
    "PerspectiveCamera",
    "RenderOutput",
    "UVMaps",
    "ndc_to_pixels",
    "orthographic_project",
    "perspective_project",
    "pixels_to_ndc",
    "rasterize",
    "sh_shading",
    "vertex_normals",
]

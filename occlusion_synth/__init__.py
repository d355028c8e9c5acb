"""Synthetic hand occlusions for face video sequences (AVFace, CVPR 2023, sec. 3.4).

Public API: `occlude_sequence`, `replay`, `OcclusionConfig`, `OcclusionResult`, hand sources
(`ProceduralHandSource`, `HandFolderSource`), `transfer_lab_stats`, `sliced_ot_transfer`, `make_strip`.
"""

from .color_transfer import sliced_ot_transfer, transfer_hand_colors, transfer_lab_stats
from .hands import POSES, HandFolderSource, HandImage, ProceduralHandSource, procedural_hand, render_svg_hands
from .motion import MotionConfig
from .placement import PlacementConfig, skin_region_mask
from .sequence import (
    BlendConfig,
    ColorConfig,
    HandConfig,
    OcclusionConfig,
    OcclusionResult,
    occlude_sequence,
    replay,
)
from .viz import make_strip

__all__ = [
    "POSES",
    "BlendConfig",
    "ColorConfig",
    "HandConfig",
    "HandFolderSource",
    "HandImage",
    "MotionConfig",
    "OcclusionConfig",
    "OcclusionResult",
    "PlacementConfig",
    "ProceduralHandSource",
    "make_strip",
    "occlude_sequence",
    "procedural_hand",
    "render_svg_hands",
    "replay",
    "skin_region_mask",
    "sliced_ot_transfer",
    "transfer_hand_colors",
    "transfer_lab_stats",
]

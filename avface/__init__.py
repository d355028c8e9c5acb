"""avface: detailed audio-visual 4D face reconstruction (AVFace, CVPR 2023)."""

__version__ = "0.1.0"

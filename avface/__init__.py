"""avface: detailed audio-visual 4D face reconstruction (AVFace, CVPR 2023)."""

# decord's wheel bundles an old zlib (1.2.3); loaded before OpenCV, its symbols break OpenCV's libpng ("bad
# parameters to zlib": every PNG read/write fails). Loading OpenCV first, whenever avface is imported, avoids it.
import cv2  # noqa: F401  (import order matters, see above)

__version__ = "0.1.0"

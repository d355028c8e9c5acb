"""Reconstruction of any talking-face video: ``Reconstructor(checkpoint).run(video, audio=None)``.

Modules (the input video is read with :mod:`avface.io.video`): :mod:`tracking` (face track and crop boxes),
:mod:`windows` (cached sliding-window inference), :mod:`refine` (the test-time fit to the tracked landmarks),
:mod:`reconstruct` (the pipeline), :mod:`result` (the result and
its ``.npz``), :mod:`export` (OBJ / PLY / overlay mp4 / glTF).
"""

from avface.inference.reconstruct import ReconstructConfig, Reconstructor, summary_lines
from avface.inference.result import Reconstruction, load_reconstruction
from avface.inference.tracking import FaceTrack, NoFaceError, track_face
from avface.io.video import InputError, InputLimits, VideoInfo

__all__ = ["FaceTrack", "InputError", "InputLimits", "NoFaceError", "ReconstructConfig", "Reconstruction",
           "Reconstructor", "VideoInfo", "load_reconstruction", "summary_lines", "track_face"]

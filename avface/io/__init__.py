"""Media files: writing mp4 (H.264 + AAC) and wav (:mod:`media`), the one video reader (:mod:`video`)."""

from avface.io.media import MediaError, probe, read_wav, write_mp4, write_wav
from avface.io.video import (
    MODEL_FPS,
    SAMPLE_RATE,
    AudioTrack,
    InputError,
    InputLimits,
    VideoInfo,
    VideoScan,
    iter_frames,
    iter_model_frames,
    model_timeline,
    read_audio,
    read_video,
    resize_frames,
    scan_video,
)

__all__ = ["MODEL_FPS", "SAMPLE_RATE", "AudioTrack", "InputError", "InputLimits", "MediaError", "VideoInfo",
           "VideoScan", "iter_frames", "iter_model_frames", "model_timeline", "probe", "read_audio", "read_video",
           "read_wav", "resize_frames", "scan_video", "write_mp4", "write_wav"]

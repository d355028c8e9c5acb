"""Media files: mp4 (H.264 + AAC) and wav reading/writing."""

from avface.io.media import (
    MediaError,
    probe,
    read_audio,
    read_video,
    read_wav,
    write_mp4,
    write_wav,
)

__all__ = ["MediaError", "probe", "read_audio", "read_video", "read_wav", "write_mp4", "write_wav"]

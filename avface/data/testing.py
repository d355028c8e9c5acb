"""A tiny VoxCeleb2-layout tree with good clips and every kind of bad file, for tests and the benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# clip name -> what it is; the expected failure stage is in BAD_CLIPS
GOOD_CLIPS = ("id00001/aaaaaaaaaaa/00001", "id00001/aaaaaaaaaaa/00002", "id00002/bbbbbbb-b_b/00001",
              "id00002/bbbbbbb-b_b/00002")
BAD_CLIPS = {
    "id00003/badbadbad01/00001": "validate",  # truncated mp4 (moov atom missing -> unreadable)
    "id00003/badbadbad01/00002": "validate",  # text file named .mp4
    "id00003/badbadbad01/00003": "validate",  # no audio stream
    "id00003/badbadbad01/00004": "validate",  # 1 frame
    "id00003/badbadbad01/00005": "validate",  # 0 bytes
    "id00003/badbadbad01/00006": "validate",  # 4000x4000 (huge)
    "id00003/badbadbad01/00007": "validate",  # 240 fps (frame rate outside the accepted range)
}


def synthetic_frames(t: int, size: int, seed: int, fps: float = 25.0) -> np.ndarray:
    """A textured background with a moving bright ellipse ("face") and a dark mouth that opens and closes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = (rng.uniform(40, 90, 3)[None, None] + 30 * np.sin(xx / 7.0 + seed)[..., None]).astype(np.float32)
    frames = np.empty((t, size, size, 3), np.uint8)
    for i in range(t):
        cx = size / 2 + size * 0.05 * np.sin(2 * np.pi * i / (fps * 1.3))
        cy = size / 2
        face = ((xx - cx) / (0.28 * size)) ** 2 + ((yy - cy) / (0.36 * size)) ** 2 < 1
        mouth = ((xx - cx) / (0.1 * size)) ** 2 + ((yy - cy - 0.18 * size) / (0.02 * size + 0.03 * size *
                                                                          (1 + np.sin(i / 2.0)))) ** 2 < 1
        img = base.copy()
        img[face] = (210, 170, 140)
        img[mouth] = (90, 30, 40)
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def synthetic_audio(seconds: float, seed: int, sample_rate: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    env = 0.5 * (1 + np.sin(2 * np.pi * 3 * t))
    x = 0.2 * env * np.sin(2 * np.pi * (150 + 50 * seed % 3) * t) + 0.02 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def synthetic_landmarks(t: int, size: int) -> np.ndarray:
    """Plausible (T, 68, 2) pixel landmarks on an ellipse (for sidecar tests)."""
    ang = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    lm = np.stack([size / 2 + 0.25 * size * np.cos(ang), size / 2 + 0.3 * size * np.sin(ang)], -1)
    return np.repeat(lm[None], t, 0).astype(np.float32) + np.arange(t, dtype=np.float32)[:, None, None] * 0.1


def make_tiny_voxceleb2(root: str | Path, size: int = 64, seconds: float = 1.6, bad: bool = True,
                        n_good: int = 4) -> Path:
    """Write the tree: good clips (one at 30 fps, one with separate .m4a audio, one with a GT sidecar), bad files.

    Good clips have ``round(seconds * 25)`` frames at 25 fps (2 windows of 16 for 1.6 s).
    """
    from avface.io.media import write_mp4

    root = Path(root)
    dev = root / "dev"
    names = list(GOOD_CLIPS[:n_good]) + [f"id{10 + i:05d}/extraextra{i % 10}/{i:05d}" for i in range(max(0,
                                                                                                       n_good - 4))]
    for k, name in enumerate(names):
        p = dev / "mp4" / f"{name}.mp4"
        p.parent.mkdir(parents=True, exist_ok=True)
        fps = 30.0 if k == 1 else 25.0
        t = int(round(seconds * fps))
        frames = synthetic_frames(t, size, seed=k, fps=fps)
        audio = synthetic_audio(seconds, seed=k)
        if k == 2:  # separate audio: video-only mp4 + dev/aac/.../NNNNN.m4a
            write_mp4(p, frames, fps)
            _write_m4a(dev / "aac" / f"{name}.m4a", frames[:1], audio, root / ".tmp_audio.mp4")
        else:
            write_mp4(p, frames, fps, audio)
        txt = dev / "txt" / f"{name}.txt"
        txt.parent.mkdir(parents=True, exist_ok=True)
        ident = name.split("/")[0]
        txt.write_text(f"Identity  : \t{ident}\nReference : \t{name.split('/')[1]}\nOffset  : \t0\n"
                       f"FV Conf   : \t12.5\t(4.2)\n\nFRAME \tX \tY \tW \tH \n"
                       + "".join(f"{i:06d} \t0.4\t0.3\t0.2\t0.3\n" for i in range(t)))
        if k == 3:  # synthetic ground-truth sidecar
            gt = root / "gt" / "dev" / f"{name}.npz"
            gt.parent.mkdir(parents=True, exist_ok=True)
            np.savez(gt, landmarks2d=synthetic_landmarks(t, size))
    (root / "vox2_meta.csv").write_text(
        "VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set \n" +
        "".join(f"{n.split('/')[0]} ,n00{i:04d} ,{'m' if i % 2 else 'f'} ,dev \n" for i, n in enumerate(names)))
    if bad:
        _write_bad(dev / "mp4", size)
    return root


def _write_m4a(path: Path, frames: np.ndarray, audio: np.ndarray, tmp: Path) -> None:
    import av

    from avface.io.media import write_mp4

    write_mp4(tmp, frames, 25.0, audio)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(tmp)) as src, av.open(str(path), "w", format="ipod") as dst:
        a_in = src.streams.audio[0]
        a_out = dst.add_stream_from_template(a_in)
        for pkt in src.demux(a_in):
            if pkt.dts is None:
                continue
            pkt.stream = a_out
            dst.mux(pkt)
    tmp.unlink()


def _write_bad(mp4: Path, size: int) -> None:
    from avface.io.media import write_mp4

    d = mp4 / "id00003" / "badbadbad01"
    d.mkdir(parents=True, exist_ok=True)
    good = write_mp4(d / "00001.mp4", synthetic_frames(40, size, 9), 25.0, synthetic_audio(1.6, 9))
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])  # truncated (moov at the end is lost)
    (d / "00002.mp4").write_text("this is not a video\n")
    write_mp4(d / "00003.mp4", synthetic_frames(40, size, 8), 25.0)  # no audio
    write_mp4(d / "00004.mp4", synthetic_frames(1, size, 7), 25.0, synthetic_audio(0.04, 7))  # 1 frame
    (d / "00005.mp4").write_bytes(b"")  # 0 bytes
    huge = np.zeros((1, 4000, 4000, 3), np.uint8)
    write_mp4(d / "00006.mp4", huge, 25.0, synthetic_audio(0.04, 6), preset="ultrafast")
    write_mp4(d / "00007.mp4", synthetic_frames(48, size, 5), 240.0, synthetic_audio(0.2, 5))  # wrong fps

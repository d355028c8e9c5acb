"""MediaPipe FaceMesh in the side venv's worker process, on a real face (skimage astronaut, public domain).

The side venv (``.venv-mediapipe``) is made by ``scripts/install.sh``, which ``make test`` runs first: when it is
missing these tests FAIL (a silent skip would hide a broken install), unless ``AVFACE_NO_MEDIAPIPE=1`` (the install
was skipped on purpose).
"""

import json
import os
import signal
import tarfile

import numpy as np
import pytest
from skimage.data import astronaut

from avface.landmarks import MediaPipeProcessDetector, MediaPipeWorkerError, get_detector, resolve_mediapipe_python

# Regions of the 512x512 astronaut image, read off a 4x zoom with a 10-px grid and the detected landmarks drawn
# (avface.viz.draw_landmarks): (x0, y0, x1, y1) px. Subject's right eye (iBUG 36-41) is on the image's left.
RIGHT_EYE_BOX = (188.0, 92.0, 220.0, 110.0)
LEFT_EYE_BOX = (230.0, 94.0, 262.0, 112.0)
# 256x256 window of the astronaut image holding the face (x 179..271, y 87..177)
WIN_X, WIN_Y, WIN = 100, 20, 256


@pytest.fixture(scope="module")
def side_python():
    if os.environ.get("AVFACE_NO_MEDIAPIPE") == "1":
        pytest.skip("AVFACE_NO_MEDIAPIPE=1: the MediaPipe side venv was not installed on purpose")
    python = resolve_mediapipe_python()
    if python is None:
        pytest.fail("MediaPipe side venv missing (.venv-mediapipe/bin/python, $AVFACE_MEDIAPIPE_PYTHON): run "
                    "`bash scripts/install.sh`, or set AVFACE_NO_MEDIAPIPE=1 to skip these tests")
    return python


@pytest.fixture(scope="module")
def detector(side_python):
    with MediaPipeProcessDetector(side_python) as det:
        yield det


def window(dx: int = 0, dy: int = 0) -> np.ndarray:
    """``(256, 256, 3)`` u8 crop of the astronaut whose content is shifted by ``(dx, dy)`` px (no border effects:
    the crop window moves the other way)."""
    img = astronaut()
    return np.ascontiguousarray(img[WIN_Y - dy:WIN_Y - dy + WIN, WIN_X - dx:WIN_X - dx + WIN])


def in_box(pts: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    x0, y0, x1, y1 = box
    return bool(np.all((pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)))


def check_face(lm: np.ndarray, offset: tuple[float, float] = (0.0, 0.0)) -> None:
    """``lm (68, 2)`` px of the astronaut face, in an image whose origin is ``offset`` in the full image."""
    full = lm + np.asarray(offset, np.float32)
    assert in_box(full[36:42], RIGHT_EYE_BOX), full[36:42]
    assert in_box(full[42:48], LEFT_EYE_BOX), full[42:48]
    eyes_y, nose_y, mouth_y = full[36:48, 1].mean(), full[30, 1], full[48:68, 1].mean()
    assert eyes_y < nose_y < mouth_y  # image y grows downwards
    assert full[8, 1] > mouth_y  # chin below the mouth
    # left/right: the subject's right (iBUG 36-41, jaw 0, mouth corner 48) is on the image's left
    assert full[36:42, 0].max() < full[42:48, 0].min()
    assert full[36, 0] < full[39, 0] < full[42, 0] < full[45, 0]  # eye corners, outer right .. outer left
    assert full[0, 0] < full[8, 0] < full[16, 0] and full[48, 0] < full[54, 0]


def test_full_image_real_face(detector):
    lm, valid = detector(astronaut()[None])
    assert lm.shape == (1, 68, 2) and lm.dtype == np.float32 and valid.tolist() == [True]
    check_face(lm[0])
    pts, found = detector.process_raw(astronaut()[None])
    assert pts.shape == (1, 478, 3) and found.all()  # refine_landmarks=True: 468 + 10 iris points


def test_follows_a_known_shift(detector):
    base = window()
    shifted = window(5, 0)
    detector.reset()
    lm0, v0 = detector(base[None])
    detector.reset()  # fresh detection for the shifted image, not tracking from the first
    lm1, v1 = detector(shifted[None])
    assert v0.all() and v1.all()
    check_face(lm0[0], (WIN_X, WIN_Y))
    d = (lm1[0] - lm0[0]).mean(0)
    assert abs(d[0] - 5.0) < 1.5 and abs(d[1]) < 1.5, d
    # in video mode (tracking) over a sequence of small shifts
    shifts = [(0, 0), (1, 0), (2, 1), (3, 2), (5, 3), (5, 5), (3, 5), (0, 2)]
    detector.reset()
    lm, valid = detector(np.stack([window(dx, dy) for dx, dy in shifts]))
    assert valid.all()
    moved = (lm - lm[:1]).mean(1)  # (T, 2) mean displacement vs frame 0
    np.testing.assert_allclose(moved, np.asarray(shifts, np.float32), atol=1.5)


def test_a_small_face_in_a_1080p_frame_is_found(detector):
    """A wide shot: the face an eighth of a 1080p frame high, which FaceMesh's own short-range detector misses on
    every frame (it needs about a sixth); the full-range detector's box and a FaceMesh in a crop around it find it,
    in frame coordinates, frame after frame (a face that fills the frame still takes the direct path: the tests
    above)."""
    from skimage.transform import rescale

    scale = 1.5  # the 256-px window (face about 90 px high) -> 384 px, the face about 135 px of 1080
    big = (rescale(window(), scale, channel_axis=-1, anti_aliasing=True) * 255).round().astype(np.uint8)
    frames = []
    for x0, y0 in [(900, 300), (904, 301), (909, 303), (915, 304)]:  # the speaker drifts to the right
        frame = np.full((1080, 1920, 3), 90, np.uint8)
        frame[y0:y0 + big.shape[0], x0:x0 + big.shape[1]] = big
        frames.append((frame, (x0, y0)))
    detector.reset()
    lm, valid = detector(np.stack([f for f, _ in frames]))
    assert valid.all()
    for i, (_, (x0, y0)) in enumerate(frames):
        check_face((lm[i] - np.array([x0, y0], np.float32)) / scale, (WIN_X, WIN_Y))


def test_blank_frame_is_marked_not_dropped(detector):
    frames = np.stack([window(), np.zeros((WIN, WIN, 3), np.uint8), window(2, 0)])
    detector.reset()
    lm, valid = detector(frames)
    assert lm.shape == (3, 68, 2) and valid.tolist() == [True, False, True]
    assert not lm[1].any()
    check_face(lm[2], (WIN_X - 2, WIN_Y))


def test_mp4_frames(side_python, tmp_path):
    from avface.io.media import write_mp4
    from avface.io.video import read_video

    shifts = [(int(round(4 * np.sin(i / 3))), int(round(2 * np.cos(i / 4)))) for i in range(12)]
    audio = (0.1 * np.sin(2 * np.pi * 220 * np.arange(16000 * 12 // 25) / 16000)).astype(np.float32)
    path = write_mp4(tmp_path / "astro.mp4", np.stack([window(dx, dy) for dx, dy in shifts]), 25.0, audio)
    frames, fps = read_video(path)
    assert frames.shape == (12, WIN, WIN, 3) and fps == 25.0
    with get_detector("mediapipe") as det:
        assert isinstance(det, MediaPipeProcessDetector)
        lm, valid = det(frames)
    assert valid.all()
    for i, (dx, dy) in enumerate(shifts):
        check_face(lm[i], (WIN_X - dx, WIN_Y - dy))
    moved = (lm - lm[:1]).mean(1)
    np.testing.assert_allclose(moved, np.asarray(shifts, np.float32) - shifts[0], atol=1.5)


def test_killed_worker_raises_clear_error_then_restarts(side_python):
    det = MediaPipeProcessDetector(side_python)
    det.start()
    pid = det.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(MediaPipeWorkerError, match=r"exit code -9") as e:
        det(window()[None])
    assert str(side_python) in str(e.value) and "stderr tail" in str(e.value)
    assert det.pid is None
    lm, valid = det(window()[None])  # the next call starts a fresh worker
    assert valid.all() and det.pid not in (None, pid)
    det.close()
    assert det.pid is None
    det.close()  # idempotent


def test_missing_side_python_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="landmarks.mediapipe_python.*install"):
        get_detector("auto", mediapipe_python=str(tmp_path / "nope" / "python"))
    monkeypatch.setenv("AVFACE_MEDIAPIPE_PYTHON", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="AVFACE_MEDIAPIPE_PYTHON"):
        get_detector("mediapipe")
    not_python = tmp_path / "python"
    not_python.write_text("not a program")
    not_python.chmod(0o644)
    det = get_detector("mediapipe", mediapipe_python=str(not_python))
    with pytest.raises(MediaPipeWorkerError, match="cannot start the MediaPipe worker"):
        det.reset()


def test_auto_without_any_mediapipe_warns_how_to_enable(tmp_path, monkeypatch, caplog):
    import avface.landmarks.factory as detector_mod
    import avface.landmarks.mediapipe_process as mpp
    from avface.landmarks import NullDetector

    if detector_mod.mediapipe_importable():
        pytest.skip("mediapipe is importable in this process")
    monkeypatch.setattr(mpp, "DEFAULT_SIDE_VENV", tmp_path / ".venv-mediapipe")  # as on a machine without it
    monkeypatch.delenv("AVFACE_MEDIAPIPE_PYTHON", raising=False)
    monkeypatch.setattr(detector_mod, "_warned_no_mediapipe", False)
    with caplog.at_level("WARNING"):
        assert isinstance(get_detector("auto"), NullDetector)
    assert "make install" in caplog.text and "scripts/install.sh" in caplog.text and "invalid" in caplog.text
    with pytest.raises(ImportError, match=r"\.venv-mediapipe/bin/python missing.*scripts/install.sh"):
        get_detector("mediapipe")


@pytest.mark.ray
@pytest.mark.slow
def test_preprocess_real_clip_gets_mediapipe_landmarks(side_python, tmp_path):
    """A clip without a GT sidecar, made of astronaut frames, through the whole job with ``detector=auto``."""
    from avface.data.config import PreprocessConfig
    from avface.data.preprocess import run_preprocess
    from avface.data.sample import decode_sample
    from avface.io.media import write_mp4
    from avface.utils.ray_utils import init_ray

    root = tmp_path / "vox"
    clip = root / "dev" / "mp4" / "id00001" / "astronaut01" / "00001.mp4"
    clip.parent.mkdir(parents=True)
    n = 32  # two 16-frame windows at 25 fps
    shifts = [(int(round(4 * np.sin(i / 4))), 0) for i in range(n)]
    t = np.arange(16000 * n // 25) / 16000
    write_mp4(clip, np.stack([window(dx, dy) for dx, dy in shifts]), 25.0,
              (0.1 * np.sin(2 * np.pi * 200 * t)).astype(np.float32))
    cfg = PreprocessConfig()
    cfg.data.root, cfg.out = str(root), str(tmp_path / "out")
    cfg.data.splits = ["dev"]
    cfg.video.image_size = 64
    cfg.landmarks.detector = "auto"
    cfg.occlusion.windows = {"train": 0}
    cfg.ray.num_cpus, cfg.ray.task_memory_mb = 1, 200
    cfg.progress = False
    init_ray(num_cpus=1)
    try:
        summary = run_preprocess(cfg, init_ray=False)
    finally:
        import ray

        ray.shutdown()
    assert summary["shards_failed"] == []
    samples = []
    for tar in sorted((tmp_path / "out").glob("train-*.tar")):
        with tarfile.open(tar) as tf:
            fields: dict[str, dict] = {}
            for m in tf.getmembers():
                key, field = m.name.split(".", 1)
                fields.setdefault(key, {"__key__": key})[field] = tf.extractfile(m).read()
            samples += [decode_sample(s) for s in fields.values()]
    assert len(samples) == 2
    for d in samples:
        assert d["meta"]["landmark_source"] == "mediapipe", json.dumps(d["meta"])
        assert d["landmarks_valid"].all()
        # frames are resized 256 -> 64: landmarks scale by 1/4; eyes above the mouth, both inside the frame
        lm = d["landmarks"]
        assert np.all((lm > 0) & (lm < 64))
        assert np.all(lm[:, 36:48, 1].mean(1) < lm[:, 48:68, 1].mean(1))


def test_one_detector_per_process_across_shards(side_python):
    """Shard tasks in one (Ray worker) process share the MediaPipe worker: no 0.6 s start-up per shard."""
    from avface.data.clip import ClipResources
    from avface.data.config import PreprocessConfig

    cfg = PreprocessConfig.from_dict({"landmarks": {"detector": "mediapipe", "mediapipe_python": str(side_python)}})
    first = ClipResources.create(cfg)
    first.detector.reset()
    pid = first.detector.pid
    first.close()
    second = ClipResources.create(cfg)
    second.detector.reset()
    assert second.detector is first.detector and pid is not None and second.detector.pid == pid
    second.close()

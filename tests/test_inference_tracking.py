"""Face track: the largest tracked face when the detector jumps between people; gaps interpolated and flagged."""

import numpy as np
import pytest

from avface.inference.tracking import NoFaceError, link_tracks, track_face


def _face(cx: float, cy: float, half: float) -> np.ndarray:
    ang = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    return np.stack([cx + half * np.cos(ang), cy + half * np.sin(ang)], -1).astype(np.float32)


def test_largest_tracked_face_wins_and_gaps_are_interpolated():
    m = 40
    big, small = _face(300, 200, 60), _face(80, 80, 15)
    lm = np.stack([big] * m)
    found = np.ones(m, bool)
    lm[5:9] = small  # the detector jumped to another (smaller) person for 4 frames
    found[20:25] = False  # and lost everyone for 5 frames
    tr = track_face(lm, found, (480, 640), scale=1.5, smooth=1)
    assert tr.detected.tolist() == [i not in range(5, 9) and i not in range(20, 25) for i in range(m)]
    assert np.all(tr.interpolated == ~tr.detected)
    centre = (tr.boxes[:, :2] + tr.boxes[:, 2:]) / 2
    assert np.allclose(centre, [300, 200], atol=1e-3)  # the small face's frames take the big face's box
    assert np.allclose(tr.boxes[:, 2] - tr.boxes[:, 0], 1.5 * 120, atol=1e-3)
    assert np.all(tr.landmarks[5:9] == 0)


def test_box_is_linearly_interpolated_across_a_gap_and_smoothed():
    m = 11
    lm = np.stack([_face(100 + 3 * i, 100, 20) for i in range(m)])
    found = np.ones(m, bool)
    found[3:8] = False
    tr = track_face(lm, found, (300, 300), scale=1.0, smooth=1)
    cx = (tr.boxes[:, 0] + tr.boxes[:, 2]) / 2
    assert np.allclose(cx, 100 + 3 * np.arange(m), atol=1e-3)  # linear through the gap
    jitter = np.stack([_face(100 + (5 if i % 2 else -5), 100, 20) for i in range(m)])
    sm = track_face(jitter, np.ones(m, bool), (300, 300), smooth=5)
    raw = track_face(jitter, np.ones(m, bool), (300, 300), smooth=1)
    assert np.ptp(sm.boxes[2:-2, 0]) < 0.3 * np.ptp(raw.boxes[2:-2, 0])  # the crop does not jitter


def test_link_tracks_and_no_face():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [2, 0, 12, 10]], np.float32)
    assert link_tracks(boxes, np.ones(4, bool)).tolist() == [0, 0, 1, 0]
    with pytest.raises(NoFaceError, match="clip.mp4: no face"):
        track_face(np.zeros((5, 68, 2)), np.zeros(5, bool), (64, 64), source="clip.mp4")

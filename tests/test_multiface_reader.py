"""avface.data.multiface: the reader on what avface.synth writes and on a hand-made release-layout identity with
the problems the release has (frames without meshes, a missing camera, empty segments)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from avface.data.multiface import (
    FRONTAL_CAMERAS,
    MultifaceCamera,
    project_points,
    read_krt,
    read_multiface,
    read_multiface_identity,
    resample_sequence,
    resample_times,
)


@pytest.fixture(scope="module")
def synth_multiface(tmp_path_factory) -> Path:
    from avface.synth.corpus import synthesize_corpus

    out = tmp_path_factory.mktemp("mf")
    cfg = {"out": str(out), "size": "tiny", "seed": 5, "progress": False, "vox": {"enabled": False},
           "multiface": {"cameras": 2, "image_height": 128, "image_width": 84}}
    synthesize_corpus(cfg, use_ray=False)
    return out / "multiface"


def test_reads_the_synthetic_stand_in(synth_multiface):
    ds = read_multiface(synth_multiface)
    assert ds.failures == [] and len(ds.identities) == 1
    ident = ds.identities[0]
    assert len(ident.cameras) == 2 and FRONTAL_CAMERAS[0] in ident.cameras
    (seg,) = ident.segments
    assert seg.camera.name == "400030" and seg.segment.startswith("SEN_")
    listed = [ln.split() for ln in (ident.root / "frame_list.txt").read_text().splitlines()]
    assert seg.frames.tolist() == [int(f) for _, f in listed]
    meshes = seg.meshes()
    assert meshes.shape == (len(seg.frames), seg.num_vertices, 3) and meshes.dtype == np.float32
    assert 120 < np.ptp(meshes[0, :, 0]) < 250  # millimetres
    faces = seg.faces()
    assert faces.ndim == 2 and faces.shape[1] == 3 and faces.max() < seg.num_vertices
    gt = seg.synthetic_ground_truth()
    assert gt["landmarks3d_mm"].shape == (len(seg.frames), 68, 3) and gt["frames"].tolist() == seg.frames.tolist()
    # audio: the wav the synthesiser wrote, aligned with frame 0, as long as the frames at 30 fps
    audio = seg.audio(16000)
    with wave.open(str(seg.audio_path)) as w:
        assert len(audio) == w.getnframes()
    assert abs(len(audio) / 16000 - len(seg.frames) / 30.0) < 1 / 30
    assert seg.times()[1] == pytest.approx(1 / 30)
    # projection with K [R_C R_f | R_C t_f + t_C]: the mesh lands on the rendered face
    f = int(seg.frames[len(seg.frames) // 2])
    uv, depth = seg.project(seg.mesh(f), f)
    img = seg.image(f)
    assert img.shape == (128, 84, 3) and np.all(depth > 0)
    bg = np.median(img[:4, :4].reshape(-1, 3), 0)
    face = np.abs(img.astype(float) - bg).sum(-1) > 40
    ui = np.clip(np.round(uv).astype(int), 0, [img.shape[1] - 1, img.shape[0] - 1])
    assert face[ui[:, 1], ui[:, 0]].mean() > 0.85
    # the other camera is readable too
    other = next(c for c in ident.cameras if c != "400030")
    assert read_multiface(synth_multiface, camera=other).segments[0].camera.name == other


def _write_krt(path: Path, cams: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    lines = []
    for name, (K, R, t) in cams.items():
        lines += [name, *(" ".join(map(str, r)) for r in K), "0 0 0 0 0",
                  *(" ".join(map(str, [*R[i], t[i]])) for i in range(3)), ""]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def release_layout(tmp_path) -> Path:
    """A v2-rig identity (frontal camera 400291) in the release layout with 7,306-vertex meshes: segment
    SEN_hello has 4 listed frames (one without any mesh, one with only the .obj), segment E001_Neutral has no
    images of the frontal camera, segment E002_Empty has no mesh at all."""
    import cv2

    d = tmp_path / "m--20190529--1004--5067077--GHS"
    K = np.array([[5000.0, 0, 667], [0, 5000.0, 1024], [0, 0, 1]])
    d.mkdir()
    _write_krt(d / "KRT", {"400291": (K, np.eye(3), np.array([0.0, 0.0, 1000.0])),
                           "400357": (K, np.eye(3), np.array([10.0, 0.0, 1000.0]))})
    frames = {"SEN_hello": [21, 22, 23, 24], "E001_Neutral": [100, 101], "E002_Empty": [200]}
    (d / "frame_list.txt").write_text("".join(f"{s} {f:06d}\n" for s, fs in frames.items() for f in fs))
    rng = np.random.default_rng(0)
    for seg, fs in frames.items():
        for f in fs:
            if seg != "E001_Neutral":
                (d / "images" / seg / "400291").mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(d / "images" / seg / "400291" / f"{f:06d}.png"), np.zeros((8, 6, 3), np.uint8))
            if seg == "E002_Empty" or f == 22:
                continue
            m = d / "tracked_mesh" / seg
            m.mkdir(parents=True, exist_ok=True)
            v = rng.normal(0, 50, (7306, 3)).astype(np.float32)
            if f == 23:
                (m / f"{f:06d}.obj").write_text("".join(f"v {a} {b} {c}\n" for a, b, c in v) + "f 1/1 2/2 3/3\n")
            else:
                v.tofile(m / f"{f:06d}.bin")
            np.savetxt(m / f"{f:06d}_transform.txt", np.concatenate([np.eye(3), np.zeros((3, 1))], 1))
    (d / "audio").mkdir()
    with wave.open(str(d / "audio" / "SEN_hello.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(16000 // 10, np.int16).tobytes())
    return d


def test_release_layout_with_partial_data(release_layout):
    ident = read_multiface_identity(release_layout)
    (seg,) = ident.segments
    assert seg.camera.name == "400291"  # the v2 rig's frontal camera, found without being named
    assert seg.frames.tolist() == [21, 23, 24] and seg.num_vertices == 7306
    assert seg.mesh(23).shape == (7306, 3)  # from the .obj
    assert seg.faces().tolist() == [[0, 1, 2]] and seg.synthetic_ground_truth() is None
    assert len(seg.audio(16000)) == 1600
    problems = {(f.segment, f.frame): f.problem for f in ident.failures}
    assert "mesh missing" in problems[("SEN_hello", 22)] and "000022.bin" in problems[("SEN_hello", 22)]
    assert "has no images" in problems[("E001_Neutral", None)]
    assert "no frame with mesh" in problems[("E002_Empty", None)] and "mesh missing" in problems[("E002_Empty", 200)]
    assert len(ident.failures) == 4

    missing = read_multiface(release_layout.parent, camera="400030")  # a v1 camera on a v2 identity
    assert missing.segments == []
    assert any("camera 400030 missing" in f.problem and "400291" in f.problem for f in missing.failures)
    assert any("empty split" in f.problem for f in missing.failures)
    rows = missing.failure_rows()
    assert set(rows[0]) == {"identity", "segment", "frame", "camera", "problem"}

    empty = read_multiface(release_layout.parent / "nothing-here")
    assert empty.identities == [] and "empty split" in empty.failures[0].problem


def test_malformed_krt_names_the_file(tmp_path):
    (tmp_path / "KRT").write_text("400030\n1 0 0\n0 1 0\n")
    with pytest.raises(ValueError, match="KRT:1: camera '400030'"):
        read_krt(tmp_path / "KRT")
    ident = read_multiface_identity(tmp_path)
    assert ident.segments == [] and "KRT" in ident.failures[0].problem


def test_projection_formula():
    K = np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    cam = MultifaceCamera("c", K, np.zeros(5), np.eye(3), np.array([0.0, 0.0, 500.0]))
    pose = np.array([[0.0, -1, 0, 10], [1, 0, 0, 0], [0, 0, 1, 0]])  # 90 degrees about z, then +10 mm in x
    uv, z = project_points(np.array([[5.0, 0.0, 0.0]]), cam, pose)  # -> world (10, 5, 0) -> cam (10, 5, 500)
    assert np.allclose(uv, [[50 + 100 * 10 / 500, 40 + 100 * 5 / 500]]) and np.allclose(z, 500)


def test_resample_30_to_25():
    assert np.allclose(resample_times(31), np.arange(26) * 1.2)  # 1 s at 30 fps -> 26 frames at 25 fps
    x = np.arange(31, dtype=np.float64)[:, None] * np.array([1.0, 2.0])  # linear in time
    y = resample_sequence(x)
    assert y.shape == (26, 2) and np.allclose(y[:, 0], np.arange(26) * 1.2)
    assert resample_sequence(np.arange(31), mode="nearest")[:4].tolist() == [0, 1, 2, 4]
    assert resample_times(0).size == 0

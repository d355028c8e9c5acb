"""`avface reconstruct` end to end on real files: MediaPipe face tracking on a real face (skimage astronaut, public
domain), an untrained tiny model, every export read back by independent readers (trimesh, pygltflib, PyAV), the
CLI with a real checkpoint file."""

from __future__ import annotations

import dataclasses
import logging
import tomllib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pygltflib
import pytest
import torch
import trimesh
from skimage.data import astronaut

from avface.cli import main
from avface.data.testing import synthetic_audio, synthetic_frames
from avface.face_model import FaceModel, load_face_model
from avface.face_model.lbs import batch_rodrigues
from avface.inference import NoFaceError, ReconstructConfig, Reconstructor, load_reconstruction
from avface.inference.export import export_all, write_glb
from avface.inference.reconstruct import interpolate_to_times
from avface.io.media import write_mp4
from avface.io.video import read_audio
from avface.models import AVFaceConfig
from avface.models.avface import AVFace
from avface.trained.checkpoints import save_checkpoint

T = 30  # frames of the test clips (1.2 s at 25 fps)


def face_frames(t: int, size: int = 192) -> np.ndarray:
    """A real face moving slowly: ``size`` x ``size`` windows of the astronaut image, (t, size, size, 3) u8."""
    img = astronaut()
    x = np.round(110 + 20 * np.sin(np.arange(t) / 6.0)).astype(int)
    return np.stack([img[40:40 + size, xi:xi + size] for xi in x])


@pytest.fixture(scope="module")
def face_model() -> FaceModel:
    return FaceModel(load_face_model(None))


@pytest.fixture(scope="module")
def model(face_model) -> AVFace:
    torch.manual_seed(0)
    m = AVFace(dataclasses.replace(AVFaceConfig.tiny(), audio_dim=80), face_model)
    m.set_stage("detail")
    return m.eval()


@pytest.fixture(scope="module")
def recon(model):
    with Reconstructor.from_model(model, config=ReconstructConfig(progress=False, chunk=12)) as r:
        yield r


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    frames = face_frames(T)
    write_mp4(d / "talk.mp4", frames, 25.0, synthetic_audio(T / 25, seed=1))
    write_mp4(d / "silent.mp4", frames, 25.0)
    write_mp4(d / "noface.mp4", synthetic_frames(T, 96, seed=2), 25.0, synthetic_audio(T / 25, seed=2))
    # rotated (display matrix 90 degrees), variable frame rate (40 / 20 / 60 ms steps), 44.1 kHz stereo audio
    stored = np.ascontiguousarray(np.rot90(frames, -1, axes=(1, 2)))
    pts = np.cumsum([0] + [(40, 20, 60)[i % 3] for i in range(T - 1)])
    with av.open(str(d / "rotated_vfr.mov"), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = stored.shape[2], stored.shape[1], "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        s.set_display_rotation(90)
        a = c.add_stream("aac", rate=44100, layout="stereo")
        for f, t in zip(stored, pts, strict=True):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = int(t), Fraction(1, 1000)
            c.mux(s.encode(vf))
        c.mux(s.encode(None))
        x = synthetic_audio(1.3, seed=3, sample_rate=44100)
        for i in range(0, len(x), 1024):
            af = av.AudioFrame.from_ndarray(np.repeat(x[None, i:i + 1024], 2, 0).copy(), format="fltp",
                                            layout="stereo")
            af.sample_rate, af.pts, af.time_base = 44100, i, Fraction(1, 44100)
            c.mux(a.encode(af))
        c.mux(a.encode(None))
    return d, pts / 1000.0


def test_reconstruct_with_audio(recon, clips, face_model):
    d, _ = clips
    rec = recon.run(d / "talk.mp4")
    assert rec.num_frames == T and np.allclose(rec.times, np.arange(T) / 25)
    assert rec.face_detected.all() and rec.audio_valid.all()
    assert rec.shape.shape == (T, 100) and rec.expression.shape == (T, 50) and rec.cam.shape == (T, 3)
    assert rec.lip_offsets.shape == (T, len(rec.lip_vertex_ids), 3) and np.abs(rec.lip_offsets).max() > 0
    assert rec.displacement.shape == (T, face_model.num_vertices)
    # crop boxes follow the face (it moves left and right by ~40 px): square, inside a plausible range
    side = rec.crop_box[:, 2] - rec.crop_box[:, 0]
    assert np.allclose(side, rec.crop_box[:, 3] - rec.crop_box[:, 1], atol=1e-3)
    cx = (rec.crop_box[:, 0] + rec.crop_box[:, 2]) / 2
    # the astronaut face spans ~92 px (x 179..271 of the image): side = crop_scale x landmark extent
    assert np.ptp(cx) > 15 and 80 < side.mean() / recon.crop_scale < 105
    assert rec.meta["stages"] == ["coarse", "lip", "detail"]


def test_each_pass_opens_the_input_once(recon, clips, monkeypatch):
    """Pass 1 (checks, frame times, audio), pass 2 (landmarks), pass 3 (the model): three opens of the file, the
    real decoding behind each (a counting pass-through of PyAV's open)."""
    d, _ = clips
    opened: list[str] = []
    real_open = av.open

    def counting_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(av, "open", counting_open)
    rec = recon.run(d / "talk.mp4")
    assert rec.face_detected.all() and rec.audio_valid.all()
    assert opened == [str(d / "talk.mp4")] * 3


def test_no_audio_is_video_only_mode(recon, clips, caplog):
    d, _ = clips
    with caplog.at_level(logging.WARNING):
        rec = recon.run(d / "silent.mp4")
    assert "video-only mode" in caplog.text and str(d / "silent.mp4") in caplog.text
    assert not rec.audio_valid.any() and rec.meta["audio"] is None
    assert np.abs(rec.lip_offsets).max() == 0  # no audio: no lip offsets (the zero audio embedding)
    # a separate audio file brings the audio back
    wav = d / "speech.wav"
    from avface.io.media import write_wav

    write_wav(wav, synthetic_audio(T / 25, seed=1))
    rec2 = recon.run(d / "silent.mp4", audio=wav)
    assert rec2.audio_valid.all() and np.abs(rec2.lip_offsets).max() > 0


def test_no_face_anywhere_is_an_error(recon, clips):
    d, _ = clips
    with pytest.raises(NoFaceError) as e:
        recon.run(d / "noface.mp4")
    assert str(d / "noface.mp4") in str(e.value) and "no face" in str(e.value)


def test_frames_without_a_face_are_interpolated_and_flagged(recon, clips, tmp_path):
    frames = face_frames(T)
    frames[10:14] = 0  # four black frames: no face there
    write_mp4(tmp_path / "gap.mp4", frames, 25.0)
    rec = recon.run(tmp_path / "gap.mp4")
    assert rec.face_detected.tolist() == [True] * 10 + [False] * 4 + [True] * (T - 14)
    # the landmark fit (the default) runs where the face was detected and only there
    assert rec.refined.tolist() == rec.face_detected.tolist() and rec.meta["refine"] == "landmarks"
    box = rec.crop_box
    assert np.all(np.isfinite(box)) and np.all(box[10:14, 2] > box[10:14, 0])


def test_rotated_variable_frame_rate_input(recon, clips):
    d, pts = clips
    rec = recon.run(d / "rotated_vfr.mov")
    assert rec.rotation == 90 and rec.frame_size == (192, 192)
    assert np.allclose(rec.times, pts, atol=1e-6)  # outputs at the input's own frame times
    assert rec.meta["model_frames"] == int(np.floor((pts[-1] + 0.04) * 25 + 1e-6))
    assert rec.face_detected.all()  # upright frames: MediaPipe finds the face in every one
    assert rec.audio_valid.all()


def test_60fps_input_outputs_at_its_own_frame_times(recon, tmp_path):
    write_mp4(tmp_path / "v60.mp4", face_frames(30), 60.0, synthetic_audio(0.5, seed=4))
    rec = recon.run(tmp_path / "v60.mp4")
    assert rec.num_frames == 30 and np.allclose(rec.times, np.arange(30) / 60, atol=1e-6)
    assert rec.meta["model_frames"] == 12 and rec.source_fps == pytest.approx(60)
    assert rec.face_detected.all() and np.all(np.isfinite(rec.expression)) and np.all(np.isfinite(rec.crop_box))


def test_interpolation_to_input_times():
    model_times = np.arange(12) / 25
    values = np.stack([np.arange(12.0), -np.arange(12.0)], 1).astype(np.float32)
    times = np.arange(30) / 60 + 0.003  # (no ties between two model frames for the nearest-frame flags)
    got = interpolate_to_times(values, model_times, times)
    want = np.clip(times * 25, 0, 11)
    assert np.allclose(got[:, 0], want, atol=1e-5) and np.allclose(got[:, 1], -want, atol=1e-5)
    flags = np.arange(12) % 2 == 0
    assert interpolate_to_times(flags, model_times, times).tolist() == [bool(round(x) % 2 == 0) for x in want]
    assert interpolate_to_times(values, model_times, model_times + 1e-12) is values  # 25 fps input: no copy


def test_npz_round_trip_and_flame_sizes(recon, clips, face_model, tmp_path):
    d, _ = clips
    rec = recon.run(d / "talk.mp4")
    back = load_reconstruction(rec.save_npz(tmp_path / "talk.npz"))
    for f in dataclasses.fields(rec):
        a, b = getattr(rec, f.name), getattr(back, f.name)
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and np.array_equal(a, b), f.name
        else:
            assert a == b, f.name
    flame = load_reconstruction(rec.with_flame_sizes().save_npz(tmp_path / "flame.npz"))
    assert flame.shape.shape == (T, 300) and flame.expression.shape == (T, 100)
    assert np.allclose(flame.vertices(face_model, 0, 3), rec.vertices(face_model, 0, 3))
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="bad.npz"):
        load_reconstruction(tmp_path / "bad.npz")


def test_exports_load_in_independent_readers(recon, clips, face_model, tmp_path):
    d, pts = clips
    rec = recon.run(d / "rotated_vfr.mov")
    out = export_all(rec, face_model, tmp_path, "clip", ("npz", "obj", "ply", "mp4", "glb"),
                     video=d / "rotated_vfr.mov")
    assert [p.name for p in out] == ["clip.npz", "clip_obj", "clip_ply", "clip.glb", "clip_overlay.mp4"]
    assert not list(tmp_path.glob(".*"))  # no temporary files left
    v0 = rec.vertices(face_model, 0, 1)[0]
    for fmt in ("obj", "ply"):
        files = sorted((tmp_path / f"clip_{fmt}").glob("coarse_*"))
        assert len(files) == T and len(list((tmp_path / f"clip_{fmt}").glob("detail_*"))) == T
        m = trimesh.load(files[0], process=False)
        assert m.faces.shape == tuple(face_model.faces.shape)
        if fmt == "ply":
            assert np.allclose(m.vertices, v0, atol=1e-6)
        detail = trimesh.load(tmp_path / f"clip_{fmt}" / f"detail_000000.{fmt}", process=False)
        assert detail.vertices.shape == m.vertices.shape
    scene = trimesh.load(tmp_path / "clip.glb")
    assert len(scene.geometry) == 1
    # overlay: 25 fps, side by side (frame width + a square frontal view), original audio
    with av.open(str(tmp_path / "clip_overlay.mp4")) as c:
        vs = c.streams.video[0]
        assert float(vs.average_rate) == 25 and vs.codec_context.width == 192 + 192 and c.streams.audio
        n = sum(1 for _ in c.decode(vs))
    assert n == rec.meta["model_frames"]
    assert np.abs(read_audio(tmp_path / "clip_overlay.mp4")).max() > 0.01


def _accessor(g: pygltflib.GLTF2, blob: bytes, i: int) -> np.ndarray:
    acc = g.accessors[i]
    view = g.bufferViews[acc.bufferView]
    dtype = {pygltflib.FLOAT: "<f4", pygltflib.UNSIGNED_INT: "<u4"}[acc.componentType]
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}[acc.type]
    a = np.frombuffer(blob[view.byteOffset: view.byteOffset + view.byteLength], dtype)
    return a.reshape(acc.count, width) if width > 1 else a


def test_glb_animation_one_keyframe_per_frame_reproduces_the_meshes(recon, clips, face_model, tmp_path):
    d, pts = clips
    rec = recon.run(d / "rotated_vfr.mov")
    path = write_glb(rec, face_model, tmp_path / "clip.glb")
    g = pygltflib.GLTF2().load(str(path))
    blob = g.binary_blob()
    mesh = g.meshes[0]
    names = mesh.extras["targetNames"]
    assert names[:3] == ["Exp000", "Exp001", "Exp002"] and len(names) == len(mesh.primitives[0].targets)
    (anim,) = g.animations
    times = _accessor(g, blob, anim.samplers[0].input)
    assert len(times) == T and np.allclose(times, pts, atol=1e-6)  # one keyframe per frame, at the frame times
    paths = {ch.target.path: ch.sampler for ch in anim.channels}
    weights = _accessor(g, blob, anim.samplers[paths["weights"]].output).reshape(T, len(names))
    quats = _accessor(g, blob, anim.samplers[paths["rotation"]].output)
    assert quats.shape == (T, 4) and np.allclose(np.linalg.norm(quats, axis=1), 1, atol=1e-5)
    base = _accessor(g, blob, mesh.primitives[0].attributes.POSITION)
    targets = np.stack([_accessor(g, blob, t["POSITION"] if isinstance(t, dict) else t.POSITION)
                        for t in mesh.primitives[0].targets])
    root = np.asarray(g.nodes[0].translation)
    for j in (0, T // 2, T - 1):  # the animated mesh is the reconstruction's mesh at that frame
        local = base + np.einsum("k,kvc->vc", weights[j], targets)
        x, y, z, w = quats[j]
        rot = batch_rodrigues(torch.as_tensor(rec.global_pose[j:j + 1])).numpy()[0]
        q = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
        assert np.allclose(q, rot, atol=1e-5)
        world = (local - root) @ q.T + root
        assert np.abs(world - rec.vertices(face_model, j, j + 1)[0]).max() < 5e-4


# ------------------------------------------------------------------------------------------------ CLI
def test_pyproject_declares_the_console_script():
    meta = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert meta["project"]["scripts"]["avface"] == "avface.cli:main"
    assert any(d.startswith("pygltflib==") for d in meta["project"]["dependencies"])


def test_cli_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "reconstruct" in capsys.readouterr().out


def test_cli_reconstruct_with_a_checkpoint(model, clips, tmp_path, capsys):
    d, _ = clips
    ckpt = save_checkpoint(tmp_path / "ck" / "final.pt", model=model, stage="detail", step=1, epoch=0,
                           audio_kind="mel", face_model_source=None)
    out = tmp_path / "out"
    rc = main(["reconstruct", str(d / "talk.mp4"), "-o", str(out), "--checkpoint", str(ckpt), "--device", "cpu",
               "--stages", "coarse,lip", "--export", "npz,glb", "--flame-sizes", "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "frames         30" in text and "without face   0" in text and str(out / "talk.npz") in text
    assert "refined        30" in text  # the landmark fit is the default
    rec = load_reconstruction(out / "talk.npz")
    assert rec.refined.all() and rec.meta["refine"] == "landmarks"
    assert rec.shape.shape == (T, 300) and rec.displacement is None and rec.meta["stages"] == ["coarse", "lip"]
    assert rec.meta["checkpoint"] == str(ckpt) and (out / "talk.glb").is_file()
    # bad input: non-zero exit, the file and the problem named, nothing written
    (tmp_path / "text.mp4").write_text("not a video")
    rc = main(["reconstruct", str(tmp_path / "text.mp4"), "-o", str(tmp_path / "out2"), "--checkpoint", str(ckpt),
               "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and str(tmp_path / "text.mp4") in err and "unreadable" in err
    assert not (tmp_path / "out2").exists()
    rc = main(["reconstruct", str(d / "noface.mp4"), "-o", str(tmp_path / "out3"), "--checkpoint", str(ckpt),
               "--quiet"])
    assert rc == 2 and "no face" in capsys.readouterr().err


def test_cli_without_any_checkpoint_says_how_to_get_one(clips, tmp_path, capsys, monkeypatch):
    d, _ = clips
    monkeypatch.chdir(tmp_path)  # no runs/train here
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("AVFACE_DEFAULT_MODEL", "none")  # and no shipped default model to fall back on
    rc = main(["reconstruct", str(d / "talk.mp4"), "-o", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "python pipelines/train.py" in err and "runs/train" in err


@pytest.mark.slow
def test_checkpoint_from_the_mlflow_registry(model, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from avface.inference.checkpoint import CheckpointNotFoundError, load_for_inference
    from avface.utils.tracking import default_tracking_uri, register_final_model, setup_tracking

    final = save_checkpoint(tmp_path / "run" / "lip" / "final.pt", model=model, stage="lip", step=3, epoch=1,
                            audio_kind="mel", face_model_source=None)
    uri = default_tracking_uri(tmp_path / "store")
    exp = setup_tracking(uri, "avface-train")
    client = MlflowClient(uri)
    run = client.create_run(exp).info.run_id
    version = register_final_model(uri, run, final, "avface")
    client.set_registered_model_alias("avface", "champion", version)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for spec in (f"models:/avface/{version}", "models:/avface@champion"):
        loaded = load_for_inference(spec, "cpu")
        assert loaded.source == spec and loaded.meta_summary["step"] == 3
        assert loaded.audio.kind == "mel" and loaded.audio.n_mels == 80
        sd = loaded.model.trainable_state_dict()
        assert all(torch.equal(sd[k], v) for k, v in model.trainable_state_dict().items())
    with pytest.raises(CheckpointNotFoundError, match="models:/avface@nope"):
        load_for_inference("models:/avface@nope", "cpu")

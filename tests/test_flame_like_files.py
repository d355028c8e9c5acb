"""Every stage on a user's FLAME file, not only the starter model: the starter model written in FLAME 2020's file
formats (Python-2-style pickle, chumpy ``Ch`` arrays, sparse ``J_regressor``, DECA ``landmark_embedding.npy``) by
``avface.face_model.testing.write_flame_like_files``, then loaded through the real-FLAME path by the loader, the
renderer, the synthetic corpus and the main job."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from avface.face_model import FaceModel, load_face_model
from avface.face_model.flame_loader import load_flame
from avface.face_model.testing import write_flame_like_files
from avface.face_model.uv import cylindrical_uv
from avface.render import FaceRenderer
from avface.utils.safe_pickle import CscStandIn, restricted_load
from avface.viz.turntable import TurntableConfig, fit_orthographic_camera


@pytest.fixture(scope="module")
def flame_files(tmp_path_factory):
    return write_flame_like_files(tmp_path_factory.mktemp("flame"))


@pytest.fixture(scope="module")
def flame(flame_files):
    return load_flame(flame_files.model, landmark_embedding=flame_files.landmark_embedding)


def test_file_has_flame_2020_layout(flame_files):
    blob = flame_files.model.read_bytes()
    # Globals under the names FLAME's Python 2 pickles use; arrays as 8-bit strings (no _codecs.encode).
    for ref in (b"chumpy.ch\nCh\n", b"scipy.sparse.csc\ncsc_matrix\n", b"numpy.core.multiarray\n_reconstruct\n"):
        assert ref in blob
    assert b"_codecs" not in blob and b"numpy._core" not in blob
    raw = restricted_load(blob)
    V = len(flame_files.source.v_template)
    assert type(raw["v_template"]).__name__ == "ChStandIn" and raw["v_template"].state["x"].shape == (V, 3)
    assert raw["shapedirs"].state["x"].shape == (V, 3, 400)
    assert raw["posedirs"].shape == (V, 3, 36) and raw["weights"].state["x"].shape == (V, 5)
    assert isinstance(raw["J_regressor"], CscStandIn) and raw["J_regressor"].to_dense("J").shape == (5, V)
    assert raw["kintree_table"].tolist() == [[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]]
    assert raw["f"].dtype == np.uint32 and raw["J"].state["x"].shape == (5, 3)
    assert "chumpy" not in sys.modules  # neither writing nor reading needed chumpy


def test_loaded_model_equals_starter_at_rest_and_posed(flame_files, flame):
    src = flame_files.source
    assert flame.name == "flame:generic_model.pkl"
    assert (flame.n_shape, flame.n_expression) == (300, 100)
    np.testing.assert_array_equal(flame.v_template, src.v_template)
    np.testing.assert_array_equal(flame.faces, src.faces)
    np.testing.assert_array_equal(flame.shapedirs[:, :, :100], src.shapedirs)
    np.testing.assert_array_equal(flame.exprdirs[:, :, :50], src.exprdirs)
    np.testing.assert_allclose(flame.J_regressor, src.J_regressor, atol=1e-7)
    np.testing.assert_array_equal(flame.parents, src.parents)
    np.testing.assert_array_equal(flame.lmk68_faces, src.lmk68_faces)
    np.testing.assert_allclose(flame.lmk68_bary, src.lmk68_bary, atol=1e-7)
    # The extra bases are smooth, small (~1 mm) and not zero.
    extra = np.linalg.norm(flame.shapedirs[:, :, 100:], axis=1)
    assert 1e-4 < np.sqrt((extra**2).mean()) < 2e-3
    # DECA's dynamic contour: every row repeats the static jaw points (the starter has no yaw-dependent one).
    assert flame.dynamic_lmk_faces.shape == (79, 17)
    assert (flame.dynamic_lmk_faces == src.lmk68_faces[:17]).all()
    # load_face_model finds landmark_embedding.npy next to the model.
    assert load_face_model(flame_files.model).equals(flame)

    g = torch.Generator().manual_seed(0)
    b = 3
    shape, expr = torch.randn(b, 100, generator=g), torch.randn(b, 50, generator=g)
    pose = 0.3 * torch.randn(b, 5, 3, generator=g)
    args = (pose[:, 0], pose[:, 1], pose[:, 2], pose[:, 3:].reshape(b, 6))
    ref = FaceModel(src, 100, 50)(shape, expr, *args)
    rest = FaceModel(src, 100, 50)(shape=torch.zeros(1, 100))
    for model in (FaceModel(flame, 100, 50), FaceModel(flame, 300, 100)):  # shape/expression zero-padded
        out = model(shape, expr, *args)
        for k in ("vertices", "joints", "landmarks68", "landmarks68_dynamic"):
            torch.testing.assert_close(getattr(out, k), getattr(ref, k), atol=1e-6, rtol=0)
        torch.testing.assert_close(model(shape=torch.zeros(1, 100)).landmarks68, rest.landmarks68, atol=1e-7,
                                   rtol=0)


def test_derived_regions_match_the_starter_regions(flame_files, flame):
    """No FLAME_masks.pkl: the loader derives regions from the landmarks; on this face they agree with the
    starter's hand-made regions."""
    def iou(a, b):
        a, b = set(a.tolist()), set(b.tolist())
        return len(a & b) / len(a | b)

    for r in ("face", "lips", "nose", "eye_left", "eye_right"):
        assert iou(flame.regions[r], flame_files.source.regions[r]) > 0.7, r
    for r in ("lip_upper", "lip_lower", "brow_left", "brow_right"):
        assert iou(flame.regions[r], flame_files.source.regions[r]) > 0.3, r


def _frontal(data, size=96):
    model = FaceModel(data)
    out = model(shape=torch.zeros(1, 100))
    cam = fit_orthographic_camera(out.vertices)
    sh = torch.zeros(1, 9, 3)
    sh[:, 0] = 2.5
    sh[:, 3] = 0.5
    r = FaceRenderer(data.faces, data.uv_coords, data.uv_faces, image_size=size, uv_size=64)
    return r, out, cam, sh


def test_renderer_renders_the_flame_file_with_cylindrical_uvs(flame_files, flame):
    r, out, cam, sh = _frontal(flame)
    grey = torch.full((1, flame.num_vertices, 3), 0.5)
    res = r(out.vertices, cam, grey, sh, landmarks3d=out.landmarks68)
    coverage = res.alpha.mean().item()
    assert 0.2 < coverage < 0.8, coverage
    # Same geometry as the starter: the same pixels are covered (UVs do not matter for coverage).
    r0, out0, cam0, _ = _frontal(flame_files.source)
    assert torch.equal(res.alpha, r0(out0.vertices, cam0, grey, sh).alpha)
    # A uniform UV texture through the cylindrical UVs gives the same image as the same per-vertex albedo.
    tex = r(out.vertices, cam, torch.full((1, 3, 64, 64), 0.5), sh)
    face = res.alpha[0, 0] > 0
    diff = (tex.image - res.image).abs()[0].amax(0)[face]
    assert torch.quantile(diff, 0.98) < 1e-3, diff.max()
    assert res.uv_grid is not None and (res.uv_grid[0][face].abs() <= 1).all()
    # The 68 landmarks project inside the face.
    px = ((res.landmarks2d[0] + 1) * 48).long().clamp(0, 95)
    assert face[px[17:, 1], px[17:, 0]].float().mean() > 0.97
    maps = r.uv_maps(out.vertices)
    assert maps.mask.mean() > 0.3


def test_synthetic_corpus_clip_with_the_flame_file(flame_files, tmp_path):
    from avface.io import read_audio, read_video
    from avface.synth.corpus import synthesize_corpus
    from avface.synth.vox import SIDECAR_KEYS

    size = 128
    summary = synthesize_corpus({
        "out": str(tmp_path), "size": "tiny", "seed": 5, "occlusion_share": 0.0, "progress": False,
        "vox": {"dev_identities": 1, "test_identities": 0, "videos_per_identity": 1, "clips_per_video": 1,
                "image_size": size},
        "multiface": {"enabled": False},
        "face": {"face_model": str(flame_files.model), "landmark_embedding": str(flame_files.landmark_embedding)},
    }, use_ray=False)
    assert summary["vox_clips"] == summary["generated"] == 1
    (mp4,) = sorted((tmp_path / "voxceleb2").glob("dev/mp4/*/*/*.mp4"))
    (gt_path,) = sorted((tmp_path / "voxceleb2" / "gt").glob("dev/*/*/*.npz"))
    with np.load(gt_path, allow_pickle=False) as z:
        gt = {k: z[k] for k in z.files}
    assert set(SIDECAR_KEYS) <= set(gt)
    assert str(gt["face_model"]) == "flame:generic_model.pkl"
    t = int(gt["num_frames"])
    frames, fps = read_video(mp4)
    assert frames.shape == (t, size, size, 3) and fps == pytest.approx(25.0)
    assert 0.05 < np.abs(read_audio(mp4, 16000)).max() <= 1.0
    assert gt["vertices"].shape == (t, flame_files.source.num_vertices, 3)
    assert gt["shape"].shape == (t, 100) and gt["expression"].shape == (t, 50) and gt["albedo"].shape == (0,)
    # Landmarks: the orthographic re-projection of the 3D landmarks, and on the rendered face.
    lm, mask = gt["landmarks2d_static"], gt["face_mask"].astype(bool)
    s, tx, ty = (gt["camera"][:, k, None] for k in range(3))
    proj = np.stack([(s * (gt["landmarks3d"][..., 0] + tx) + 1) * size / 2,
                     (-s * (gt["landmarks3d"][..., 1] + ty) + 1) * size / 2], -1)
    assert np.abs(proj - lm).max() < 1e-2
    np.testing.assert_allclose(gt["landmarks2d"], lm, atol=1e-4)  # the dynamic contour repeats the static one
    c = np.clip(np.floor(lm[:, 17:]).astype(int), 0, size - 1)
    on_face = mask[np.arange(t)[:, None], c[..., 1], c[..., 0]]
    assert on_face.mean() > 0.97, on_face.mean()
    assert 0.1 < mask.mean() < 0.8
    # The video shows the face where the mask says (skin-coloured fallback albedo, not the background).
    f0 = frames[t // 2].astype(float)
    m0 = mask[t // 2]
    assert f0[m0][:, 0].mean() > f0[m0][:, 2].mean() + 10  # warmer than blue: the skin fallback
    assert json.loads(str(gt["meta"]))["identity"]["id"].startswith("id")


def test_main_job_with_the_flame_file(flame_files, tmp_path: Path):
    import decord

    from avface.demo.config import CorpusStage, MainConfig
    from avface.demo.job import run_main_job as run

    paths = run(MainConfig(out=str(tmp_path / "demo"), face_model=str(flame_files.model),
                           landmark_embedding=str(flame_files.landmark_embedding),
                           corpus=CorpusStage(enabled=False),
                           turntable=TurntableConfig(num_frames=4, image_size=64)))["turntable"]
    assert Path(paths["face_model"]).name == "flame_generic_model.pkl.npz"  # portable: no ':' from the model name
    saved = type(flame_files.source).load_npz(paths["face_model"])
    assert saved.name == "flame:generic_model.pkl" and not saved.has_albedo
    np.testing.assert_array_equal(saved.v_template, flame_files.source.v_template)
    video = decord.VideoReader(str(paths["turntable"]))
    assert len(video) == 4 and video[0].shape == (64, 64, 3)
    frame = video[0].asnumpy().astype(int)
    assert ((frame.max(-1) - frame.min(-1)) < 20).all()  # no albedo model: a neutral grey clay face
    assert (frame.max(-1) > 90).mean() > 0.15
    assert Path(paths["contact_sheet"]).stat().st_size > 1000


def _ellipsoid_head(n_lat=24, n_lon=48):
    """A head-sized ellipsoid (a star-shaped surface about its centre, like FLAME's head) open at the poles (where
    the cylindrical angle is undefined): (V, 3) vertices, (F, 3) faces wound outwards."""
    lat = np.linspace(0, np.pi, n_lat + 1)[1:-1]
    lon = np.linspace(-np.pi, np.pi, n_lon, endpoint=False)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    v = np.stack([0.08 * np.sin(la) * np.sin(lo), 0.12 * np.cos(la), 0.1 * np.sin(la) * np.cos(lo)], -1)
    v = v.reshape(-1, 3)
    ring = lambda i, j: i * n_lon + j % n_lon  # noqa: E731
    f = []
    for i in range(n_lat - 2):
        for j in range(n_lon):
            f += [[ring(i, j), ring(i + 1, j), ring(i + 1, j + 1)], [ring(i, j), ring(i + 1, j + 1), ring(i, j + 1)]]
    return v, np.array(f)


def test_cylindrical_uv_seam_does_not_cover_the_uv_map(flame):
    """Triangles crossing the seam at the back of the head must not be stretched across the whole UV map: the UV
    rasterization has no depth order, so they would hide the face's triangles in ``uv_maps``."""
    v, faces = _ellipsoid_head()
    for f in (faces, faces[::-1].copy()):  # which of two overlapping UV triangles wins depends on their order
        uv, uv_faces = cylindrical_uv(v, f)
        assert uv_faces.shape == f.shape and uv.min() >= 0 and uv.max() <= 1
        np.testing.assert_allclose(uv[uv_faces][..., 1], uv[f][..., 1])  # seam copies keep v
        span = np.ptp(uv[uv_faces][..., 0], axis=1)
        assert span.max() < 0.1, span.max()
        # Every UV-map texel holds the surface point whose cylindrical angle is the texel's u.
        r = FaceRenderer(f, uv, uv_faces, image_size=32, uv_size=64)
        maps = r.uv_maps(torch.as_tensor(v, dtype=torch.float32)[None])
        m = maps.mask[0, 0] > 0
        assert m.float().mean() > 0.8
        p = maps.position[0].permute(1, 2, 0)[m].numpy()
        u_texel = ((torch.arange(64) + 0.5) / 64).expand(64, 64)[m].numpy()
        u_pos = 0.5 + np.arctan2(p[:, 0] - v[:, 0].mean(), p[:, 2] - v[:, 2].mean()) / (2 * np.pi)
        err = np.abs((u_pos - u_texel + 0.5) % 1.0 - 0.5)
        assert np.mean(err > 0.05) < 0.01, np.mean(err > 0.05)
    # The FLAME-format file: no triangle spans the map either.
    assert np.ptp(flame.uv_coords[flame.uv_faces][..., 0], axis=1).max() < 0.5


def test_turntable_without_albedo_model_shows_shading_not_a_white_blob(flame):
    """FLAME has no albedo model: the turntable's uniform clay albedo must stay below white under its light, or
    the clipped face shows no shape."""
    from avface.viz.turntable import render_turntable

    frames = render_turntable(flame, TurntableConfig(num_frames=4, image_size=96)).astype(int)
    face = frames.max(-1) > 90
    assert face.mean() > 0.15
    clipped = (frames >= 254).any(-1) & face
    assert clipped.sum() / face.sum() < 0.02, clipped.sum() / face.sum()
    assert frames[face].std() > 15  # shading varies over the face

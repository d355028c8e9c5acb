"""Known-answer tests of avface.metrics: landmark NME/CED/AUC, exact point-to-surface distances, NoW-style
scan-to-mesh, aligned vertex error, LVE and jitter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial.transform import Rotation

from avface.metrics import (
    NOW_LANDMARKS_68,
    TriangleIndex,
    aligned_vertex_error,
    apply_similarity,
    auc,
    ced_curve,
    crop_scan,
    failure_rate,
    jitter,
    landmark_nme,
    lip_nme,
    lip_vertex_error,
    mesh_vertex_errors,
    nme_normalizer,
    occluded_nme,
    point_mesh_distance_allpairs,
    scan_to_mesh,
    similarity_procrustes,
    vertex_acceleration,
    vertex_errors,
)
from avface.metrics.surface import closest_points_on_triangles


def _landmarks(rng, n=5) -> np.ndarray:
    base = rng.uniform(0, 200, (68, 2))
    base[36], base[45] = (50.0, 80.0), (150.0, 80.0)  # inter-ocular distance exactly 100
    return np.repeat(base[None], n, axis=0)


# ---------------------------------------------------------------- landmarks
def test_nme_of_a_known_shift(rng):
    gt = _landmarks(rng)
    pred = gt + np.array([3.0, 4.0])  # every point 5 px off; inter-ocular 100
    assert np.allclose(landmark_nme(pred, gt), 0.05)
    wh = gt[0].max(0) - gt[0].min(0)
    assert np.allclose(landmark_nme(pred, gt, "box"), 5.0 / np.sqrt(wh[0] * wh[1]))
    assert np.allclose(nme_normalizer(gt), 100.0)
    # lips only: shift the lips alone by 10 px
    pred2 = gt.copy()
    pred2[:, 48:68] += [6.0, 8.0]
    assert np.allclose(lip_nme(pred2, gt), 0.10)
    assert np.allclose(landmark_nme(pred2, gt), 0.10 * 20 / 68)
    # invisible points do not count
    vis = np.ones((5, 68), bool)
    vis[:, 48:68] = False
    assert np.allclose(landmark_nme(pred2, gt, visible=vis), 0.0)


def test_occluded_nme_uses_only_the_masked_samples(rng):
    gt = _landmarks(rng, 4)
    pred = gt.copy()
    pred[1] += [0.0, 2.0]
    pred[3] += [0.0, 7.0]
    occ = np.array([False, True, False, True])
    assert np.allclose(occluded_nme(pred, gt, occ), [0.02, 0.07])
    with pytest.raises(ValueError):
        occluded_nme(pred, gt, occ[:3])


def test_ced_auc_failure_of_a_known_distribution():
    # errors uniform on [0, 0.1]: CED(t) = t / 0.1, so AUC_0.07 = 0.07 / 0.2 = 0.35 and AUC_0.1 = 0.5
    e = np.linspace(0.0, 0.1, 100_001)
    assert ced_curve(e, [0.0, 0.05, 0.1, 1.0]) == pytest.approx([1e-5, 0.5, 1.0, 1.0], abs=1e-4)
    assert auc(e, 0.07) == pytest.approx(0.35, abs=1e-3)
    assert auc(e, 0.1) == pytest.approx(0.5, abs=1e-3)
    assert auc(np.zeros(10), 0.07) == pytest.approx(1.0)
    assert auc(np.full(10, 0.2), 0.07) == pytest.approx(0.0)
    assert failure_rate(e, 0.07) == pytest.approx(0.3, abs=1e-4)
    assert failure_rate(np.array([0.01, np.nan, 0.2]), 0.1) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        auc(np.array([np.nan]))


def test_inter_ocular_needs_68_points():
    with pytest.raises(ValueError, match="68"):
        nme_normalizer(np.zeros((1, 5, 2)))
    with pytest.raises(ValueError, match="degenerate"):
        nme_normalizer(np.zeros((1, 68, 2)))


# ---------------------------------------------------------------- point-to-surface distances
def _sphere(subdivisions=3, radius=100.0):
    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return np.asarray(m.vertices), np.asarray(m.faces)


def test_closest_point_regions_on_one_triangle():
    a, b, c = np.array([0.0, 0, 0]), np.array([1.0, 0, 0]), np.array([0.0, 1, 0])
    p = np.array([[0.2, 0.2, 3.0], [-1, -1, 0], [2, -0.5, 0], [0.5, -1, 0], [-1, 0.5, 1], [1, 1, 0], [-0.5, 2, 0]])
    want = np.array([[0.2, 0.2, 0], [0, 0, 0], [1, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0.5, 0.5, 0], [0, 1, 0]])
    n = len(p)
    got = closest_points_on_triangles(p, np.tile(a, (n, 1)), np.tile(b, (n, 1)), np.tile(c, (n, 1)))
    assert np.allclose(got, want)
    # a degenerate (zero-area) triangle falls back to its edges
    got = closest_points_on_triangles(np.array([[0.5, 1.0, 0]]), a[None], b[None], (2 * b)[None])
    assert np.allclose(got, [[0.5, 0, 0]])


def test_known_normal_offset_gives_that_distance():
    v, f = _sphere()
    tri = v[f]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    for delta in (0.0, 0.7, 2.5):  # outward offsets from face centroids of a convex mesh: distance = delta
        p = tri.mean(1) + delta * n
        res = TriangleIndex(v, f).query(p)
        assert np.allclose(res.distances, delta, atol=1e-9)
        assert np.array_equal(res.face_ids, np.arange(len(f)))
    res = TriangleIndex(v, f).query(tri.mean(1) - 0.5 * n)  # inward by less than the distance to other faces
    assert np.allclose(res.distances, 0.5, atol=1e-9)


def test_index_is_exact_against_all_pairs(rng):
    # a mesh with very unequal triangles (big triangles make the index fall back to its ball query) and points
    # both near the surface and far from it
    v, f = _sphere(2)
    v = v * np.array([1.0, 0.6, 1.3])
    v[:12] *= 1.5  # the icosahedron's original vertices: stretched spikes
    p = np.concatenate([v[rng.integers(len(v), size=300)] + rng.normal(0, 3, (300, 3)),
                        rng.uniform(-300, 300, (200, 3))])
    ref = point_mesh_distance_allpairs(p, v, f)
    for k, spacing in ((1, None), (4, None), (16, None), (4, 5.0), (8, 1e3)):
        got = TriangleIndex(v, f, spacing=spacing).query(p, k=k)
        assert np.allclose(np.linalg.norm(got.closest - p, axis=1), got.distances)
        assert np.allclose(got.distances, ref.distances, atol=1e-9), (k, spacing)


# ---------------------------------------------------------------- scan to mesh
def _face_like(rng):
    """A half ellipsoid in mm (about a face's size) with 68-point-like NoW landmarks on it."""
    v, f = _sphere(4, radius=1.0)
    front = v[:, 2] > -0.2
    keep = np.nonzero(front)[0]
    remap = -np.ones(len(v), np.int64)
    remap[keep] = np.arange(len(keep))
    f = remap[f]
    f = f[(f >= 0).all(1)]
    v = v[keep] * np.array([75.0, 95.0, 60.0])
    # 7 landmarks: vertices nearest to eye corners, subnasale and mouth corners of a face of this size
    targets = np.array([[-45, 30, 0], [-15, 30, 0], [15, 30, 0], [45, 30, 0], [0, -15, 0], [-25, -40, 0],
                        [25, -40, 0]], np.float64)
    ids = [int(np.argmin(np.linalg.norm(v[:, :2] - t[:2], axis=1) - 0.001 * v[:, 2])) for t in targets]
    return v, f, np.array(ids)


def test_mesh_against_itself_is_zero(rng):
    v, f, lm = _face_like(rng)
    r = scan_to_mesh(v, v[lm], v, f, v[lm])
    assert r.median < 1e-9 and r.mean < 1e-9 and r.distances.max() < 1e-8
    assert 0 < r.crop.sum() <= len(v)


def test_known_similarity_transform_is_undone(rng):
    v, f, lm = _face_like(rng)
    R = Rotation.from_euler("xyz", [20, -35, 10], degrees=True).as_matrix()
    s, t = 1.3, np.array([10.0, -40.0, 250.0])
    pred = (v @ R.T) * s + t  # the prediction lives in another frame and scale
    # landmarks with 2 mm noise: Procrustes alone leaves an error, the refinement removes it
    noisy = pred[lm] + rng.normal(0, 2.0, (7, 3))
    init = scan_to_mesh(v, v[lm], pred, f, noisy, refine=False)
    r = scan_to_mesh(v, v[lm], pred, f, noisy)
    assert init.mean > 0.2
    assert r.mean < 1e-3 and r.median < 1e-3, (init.mean, r.mean)
    assert r.iterations < 30
    assert r.scale == pytest.approx(1 / s, rel=1e-4)
    assert np.allclose(r.rotation, R.T, atol=1e-4)
    assert np.allclose(r.aligned, v, atol=1e-2)
    assert mesh_vertex_errors(r.aligned, v, f).max() < 1e-2  # the per-vertex (Fig. 6) error on the prediction
    # NoW's metrical variant (unit scale, rigid refinement) undoes a rigid transform
    rigid = v @ R.T + t
    m = scan_to_mesh(v, v[lm], rigid, f, rigid[lm] + rng.normal(0, 2.0, (7, 3)), scale=False)
    assert m.scale == 1.0 and m.mean < 1e-3 and np.allclose(m.rotation, R.T, atol=1e-4)


def test_scan_offset_along_normals_without_refinement(rng):
    v, f, lm = _face_like(rng)
    m = trimesh.Trimesh(v, f, process=False)
    scan = v + 1.5 * np.asarray(m.vertex_normals)  # a smooth convex surface: distance ~ the offset
    r = scan_to_mesh(scan, scan[lm], v, f, scan[lm], refine=False, scale=False)  # landmarks agree: identity
    assert r.median == pytest.approx(1.5, abs=0.02)
    assert abs(r.scale - 1.0) < 1e-12


def test_crop_keeps_the_face_region():
    lm = np.array([[-45, 30, 0], [-15, 30, 0], [15, 30, 0], [45, 30, 0], [0, -15, 0], [-25, -40, 0], [25, -40, 0]],
                  np.float64)
    # bridge (0, 30), centre (0, -1.5), radius 1.4 * (90 + 45) / 2 = 94.5
    pts = np.array([[0, -1.5, 94.0], [0, -1.5, 95.0], [94.4, -1.5, 0]])
    assert crop_scan(pts, lm).tolist() == [True, False, True]
    assert NOW_LANDMARKS_68 == (36, 39, 42, 45, 33, 48, 54)


# ---------------------------------------------------------------- 3D vertex metrics
def test_procrustes_recovers_a_similarity(rng):
    src = torch.as_tensor(rng.normal(size=(2, 50, 3)))
    R = torch.as_tensor(Rotation.random(2, random_state=1).as_matrix())
    dst = 0.7 * torch.einsum("bij,bnj->bni", R, src) + torch.tensor([1.0, 2.0, 3.0])
    sim = similarity_procrustes(src, dst)
    assert torch.allclose(sim.scale, torch.full((2,), 0.7, dtype=torch.float64))
    assert torch.allclose(sim.rotation, R, atol=1e-10)
    assert torch.allclose(sim.inverse().scale, torch.full((2,), 1 / 0.7, dtype=torch.float64))


def test_aligned_vertex_error(rng):
    gt = rng.normal(0, 0.05, (4, 100, 3))  # metres
    R = Rotation.from_euler("y", 30, degrees=True).as_matrix()
    pred = 1.2 * gt @ R.T + 0.3
    assert np.allclose(aligned_vertex_error(pred, gt), 0.0, atol=1e-9)
    # a per-vertex offset that alignment cannot remove: one vertex 2 mm off, masked out or counted
    gt2 = gt.copy()
    pred2 = gt.copy()
    pred2[:, 0] += [0.002, 0, 0]
    mask = np.ones(100, bool)
    mask[0] = False
    assert np.allclose(aligned_vertex_error(pred2, gt2, mask), 0.0, atol=1e-9)
    assert np.all(aligned_vertex_error(pred2, gt2) > 0)
    assert np.allclose(aligned_vertex_error(pred2, gt2, scale=False, mask=mask), 0.0, atol=1e-9)
    # torch in, torch out, differentiable
    p = torch.as_tensor(pred2, dtype=torch.float32).requires_grad_(True)
    e = aligned_vertex_error(p, torch.as_tensor(gt2, dtype=torch.float32))
    assert e.shape == (4,)
    e.sum().backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_lip_vertex_error_known_answer():
    gt = np.zeros((3, 10, 3))
    pred = gt.copy()
    pred[0, 2] = [0.003, 0.0, 0.004]  # 5 mm -> 25 mm^2
    pred[1, 3] = [0.001, 0.0, 0.0]  # 1 mm^2 (max over lips), non-lip vertex 9 ignored
    pred[1, 9] = [0.1, 0.0, 0.0]
    assert lip_vertex_error(pred, gt, [2, 3, 4]) == pytest.approx((25 + 1 + 0) / 3)
    assert lip_vertex_error(pred * 1000, gt, [2, 3, 4], scale_to_mm=1.0) == pytest.approx(26 / 3)


def test_jitter_of_a_constant_acceleration_sequence(rng):
    t = np.arange(20, dtype=np.float64)[:, None, None]
    v0, vel = rng.normal(size=(1, 30, 3)), rng.normal(size=(1, 30, 3))
    a = np.array([0.3, -0.4, 0.0])  # |a| = 0.5 mm / frame^2 for every vertex
    seq = v0 + vel * t + 0.5 * a * t**2
    assert jitter(seq, scale_to_mm=1.0) == pytest.approx(0.5)
    assert np.allclose(vertex_acceleration(seq, scale_to_mm=1.0), 0.5)
    assert jitter(v0 + vel * t, scale_to_mm=1.0) == pytest.approx(0.0, abs=1e-12)  # constant velocity
    with pytest.raises(ValueError):
        jitter(seq[:2])


def test_vertex_errors_are_the_aligned_vertex_error_fit_on_all_vertices():
    """Validation's and evaluation's 3D errors (all vertices, lips under the same all-vertex similarity) are the
    aligned vertex error's: the same numbers, bit for bit, as the explicit Procrustes in float64."""
    g = torch.Generator().manual_seed(0)
    gt = torch.randn(6, 500, 3, generator=g) * 0.05
    rot = torch.linalg.qr(torch.randn(3, 3, generator=g))[0]
    pred = (gt @ rot * 1.1 + 0.01 + torch.randn(6, 500, 3, generator=g) * 0.002).float()
    lips = torch.arange(40, 90)
    v3d, lip = vertex_errors(pred, gt.float(), lips)
    p, t = pred.double(), gt.float().double()
    err = torch.linalg.norm(apply_similarity(p, similarity_procrustes(p, t)) - t, dim=-1) * 1000.0
    assert torch.equal(v3d, err.mean(1).float()) and torch.equal(lip, err[:, lips].mean(1).float())
    assert torch.allclose(v3d.double(), aligned_vertex_error(p, t), rtol=1e-6)

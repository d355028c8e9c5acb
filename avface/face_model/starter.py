"""An open starter morphable face model with FLAME's structure, built from MediaPipe's canonical face mesh.

FLAME cannot be redistributed (it needs a registration), so the project ships a small model that every module can
use out of the box: same parameterisation (identity + expression blendshapes, 5 joints global/neck/jaw/eyes,
linear blend skinning, 68-landmark embedding, per-vertex albedo model, UVs, regions), different numbers.
It is *not* a statistical model learned from scans: its bases are hand-designed smooth deformations. It is good for
pipelines, tests, the synthetic corpus and demos; for research numbers load the real FLAME with
:func:`avface.face_model.load_face_model` and a ``generic_model.pkl`` path.

How it is built (:func:`build_starter_model`, deterministic for a given ``seed``, ~0.2 s):

1. Read ``canonical_face_model.obj`` (468 vertices = MediaPipe face-mesh landmark ids, 898 triangles, cm).
2. Cut the 18 triangles that close the mouth and the 2 x 14 that close the eyes, so the jaw can open and the
   eyelids can move.
3. Convert to metres and centre like FLAME: origin 3.4 cm behind the ear points at their height (about the
   middle of the head), +y up, +z towards the viewer, +x to the subject's left (the canonical mesh already has
   these axes).
4. One interpolating subdivision (every edge gets a midpoint placed on the cubic Hermite curve defined by the
   end-point normals, as PN triangles do): the surface gets smoother and vertices 0..467 keep their positions and
   ids, so MediaPipe landmark ids stay valid vertex ids of the starter model.
5. Close the lips at rest (the canonical mesh's inner-lip contours are 5 mm apart; they are moved to meet).
6. Add two eyeballs (UV spheres, pole forward, radius 13.5 mm so they fill the canonical eye openings) skinned to
   the eye joints, and a dark mouth-cavity sheet behind the lips (half on the jaw) so an open mouth is not a hole.
7. Joints: global/root at the top of the neck, neck slightly above it, jaw hinge 1 cm in front of the ear points,
   eyes at the eyeball centres; ``J_regressor`` rows are affine combinations of vertices reproducing them exactly
   (so identity changes move the joints, as FLAME's regressor does).
8. Skinning: the lower lip, chin and jaw line follow the jaw joint with a smooth transition towards the ears;
   everything else follows the neck joint; eyeballs follow the eye joints. ``posedirs`` are zeros (no pose
   correctives: there are no scans to learn them from).
9. Identity (100) and expression (50) bases, albedo (mean + 50 bases), 68-landmark embedding, UVs, regions: see
   the functions below.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree
from threadpoolctl import threadpool_limits

from avface.face_model.data import FaceModelData
from avface.face_model.mesh import point_in_polygon, read_obj, vertex_normals

__all__ = [
    "ASSET_OBJ",
    "MEDIAPIPE_TO_IBUG68",
    "N_ALBEDO",
    "N_EXPRESSION",
    "N_SHAPE",
    "EXPRESSION_NAMES",
    "SHAPE_NAMES",
    "build_starter_model",
]

ASSET_OBJ = Path(__file__).resolve().parents[1] / "assets" / "mediapipe_canonical_face" / "canonical_face_model.obj"
N_SHAPE = 100
N_EXPRESSION = 50
N_ALBEDO = 50

# --- MediaPipe face-mesh contours (landmark ids) ---------------------------------------------------------------
LIP_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIP_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
LIP_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIP_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
# Eye contours, outer corner -> inner corner. "right" = subject's right = -x (image left in a frontal view).
EYE_RIGHT_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
EYE_RIGHT_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
EYE_LEFT_UPPER = (263, 466, 388, 387, 386, 385, 384, 398, 362)
EYE_LEFT_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)
BROW_RIGHT = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46)
BROW_LEFT = (300, 293, 334, 296, 336, 285, 295, 282, 283, 276)
# Face oval from the subject's right ear point (127) over the chin (152) to the left one (356).
OVAL_JAW = (127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152,
            377, 400, 378, 379, 365, 397, 288, 361, 323, 454, 356)
NOSE_TIP, SUBNASALE, NASION = 4, 2, 168
CHEEK_RIGHT, CHEEK_LEFT = 50, 280
CHIN = 152

#: iBUG-68 -> MediaPipe vertex id for points 17..67 (0..16, the jaw contour, are resampled along OVAL_JAW by arc
#: length). A common correspondence (brows on their upper edge, nose bridge 168-197-5-4, nostrils 98/97/2/326/327,
#: eyes at the lid contours, lips at the outer and inner contours); checked here to be mirror-symmetric.
MEDIAPIPE_TO_IBUG68: dict[int, int] = dict(zip(range(17, 68), (
    70, 63, 105, 66, 107,            # 17-21 right brow, outer -> inner
    336, 296, 334, 293, 300,         # 22-26 left brow, inner -> outer
    168, 197, 5, 4,                  # 27-30 nose bridge -> tip
    98, 97, 2, 326, 327,             # 31-35 nostrils, right -> left (33 = subnasale)
    33, 160, 158, 133, 153, 144,     # 36-41 right eye
    362, 385, 387, 263, 373, 380,    # 42-47 left eye
    61, 39, 37, 0, 267, 269, 291,    # 48-54 outer upper lip, right corner -> left corner
    321, 314, 17, 84, 91,            # 55-59 outer lower lip, left -> right
    78, 82, 13, 312, 308,            # 60-64 inner upper lip
    317, 14, 87,                     # 65-67 inner lower lip
), strict=True))

SHAPE_NAMES: tuple[str, ...] = (
    "face_width", "face_height", "face_depth", "nose_length", "nose_width", "nose_bridge", "jaw_width",
    "chin_length", "chin_protrusion", "cheek_fullness", "eye_spacing", "brow_height", "lip_thickness",
    "mouth_width", "forehead_slope", "eye_depth", "cheekbone_width",
)
EXPRESSION_NAMES: tuple[str, ...] = (
    "lip_rounding", "lip_spread", "smile", "lip_press", "upper_lip_raise", "lower_lip_depress", "blink_left",
    "blink_right", "brow_raise", "brow_furrow", "cheek_puff", "mouth_sideways", "nose_wrinkle",
)


_EYE_RADIUS = 1.35  # cm; fills the canonical eye openings (2.6 cm wide)
_EYE_RING_DEG = (0.0, 8.0, 16.0, 24.0, 31.0, 40.0, 55.0, 70.0, 90.0, 115.0, 145.0, 180.0)
_EYE_SEGMENTS = 16
_CM = 0.01


# ====================================================================================== mesh utilities
def _closure_faces(f: np.ndarray, contour_sets: list[set[int]]) -> np.ndarray:
    """Mask of faces whose three vertices all lie on one of the given contours (triangles spanning a hole)."""
    mask = np.zeros(len(f), bool)
    for s in contour_sets:
        mask |= np.array([all(int(i) in s for i in tri) for tri in f])
    return mask


def subdivide_pn(v: np.ndarray, f: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """One interpolating 1-to-4 subdivision.

    v: (V, 3); f: (F, 3); uv: (V, 2) per-vertex UVs. Returns ``(v2 (V+E, 3), f2 (4F, 3), uv2 (V+E, 2), mid)`` where
    ``mid[(a, b)]`` (a < b) is the new vertex of edge (a, b). Original vertices keep ids and positions; an edge
    midpoint is the midpoint of the cubic Hermite curve whose end tangents are the edge projected onto the tangent
    planes of its end points (PN triangles): ``(a + b) / 2 - ((b - a).n_a n_a + (a - b).n_b n_b) / 8``.
    UVs are split linearly.
    """
    n = vertex_normals(v, f)
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    edges, inverse = np.unique(e, axis=0, return_inverse=True)
    a, b = edges[:, 0], edges[:, 1]
    wa = np.einsum("ij,ij->i", v[b] - v[a], n[a])
    wb = np.einsum("ij,ij->i", v[a] - v[b], n[b])
    mids = 0.5 * (v[a] + v[b]) - (wa[:, None] * n[a] + wb[:, None] * n[b]) / 8.0
    nv = len(v)
    ids = nv + inverse.reshape(3, -1).T  # (F, 3): mids of edges (0,1), (1,2), (2,0)
    m01, m12, m20 = ids[:, 0], ids[:, 1], ids[:, 2]
    f2 = np.concatenate([
        np.stack([f[:, 0], m01, m20], 1), np.stack([m01, f[:, 1], m12], 1),
        np.stack([m20, m12, f[:, 2]], 1), np.stack([m01, m12, m20], 1),
    ])
    uv2 = np.concatenate([uv, 0.5 * (uv[a] + uv[b])])
    mid = {(int(x), int(y)): nv + k for k, (x, y) in enumerate(edges)}
    return np.concatenate([v, mids]), f2, uv2, mid


def _refine_polyline(ids: tuple[int, ...], mid: dict) -> list[int]:
    """Vertex ids of a contour after subdivision (edge midpoints inserted)."""
    out = [ids[0]]
    for p, q in zip(ids[:-1], ids[1:], strict=True):
        out += [mid[(min(p, q), max(p, q))], q]
    return out


def _uv_sphere(center: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sphere with its first pole pointing +z (the pupil). Returns (verts (N,3), faces (M,3), polar angle (N,) rad)
    and the vertex order is: front pole, rings front -> back, back pole."""
    rings = np.deg2rad(np.asarray(_EYE_RING_DEG[1:-1]))
    phi = np.linspace(0.0, 2 * np.pi, _EYE_SEGMENTS, endpoint=False)
    th = [0.0] + list(np.repeat(rings, _EYE_SEGMENTS)) + [np.pi]
    ph = [0.0] + list(np.tile(phi, len(rings))) + [0.0]
    th, ph = np.asarray(th), np.asarray(ph)
    d = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], 1)
    s = _EYE_SEGMENTS
    faces = []
    for j in range(s):  # front cap, counter-clockwise seen from the front (+z)
        faces.append([0, 1 + j, 1 + (j + 1) % s])
    for r in range(len(rings) - 1):
        for j in range(s):
            a0, a1 = 1 + r * s + j, 1 + r * s + (j + 1) % s
            b0, b1 = a0 + s, a1 + s
            faces += [[a0, b0, b1], [a0, b1, a1]]
    last = 1 + (len(rings) - 1) * s
    back = len(th) - 1
    for j in range(s):
        faces.append([last + j, back, last + (j + 1) % s])
    return center + radius * d, np.asarray(faces, np.int64), th


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _gauss(p: np.ndarray, c: np.ndarray, s: float) -> np.ndarray:
    return np.exp(-np.sum((p - c) ** 2, axis=-1) / (2 * s * s))


def _interp_contour(x: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """y(x), z(x) of a contour polyline pts (N, 3), linearly interpolated in x (clamped at the ends)."""
    o = np.argsort(pts[:, 0])
    return np.interp(x, pts[o, 0], pts[o, 1]), np.interp(x, pts[o, 0], pts[o, 2])


# ====================================================================================== the build
@dataclass
class _Geometry:
    v: np.ndarray  # (V, 3) cm, final template (lips closed)
    v_open: np.ndarray  # (V, 3) cm, before closing the lips (used to tell upper from lower lip)
    f: np.ndarray
    uv: np.ndarray
    n_skin: int  # vertices [0, n_skin) are the face surface
    eye_ids: dict[str, np.ndarray]  # "left"/"right" -> eyeball vertex ids
    eye_theta: np.ndarray  # polar angle of each eyeball vertex (same order for both eyes)
    eye_center: dict[str, np.ndarray]
    mouth_ids: np.ndarray  # mouth cavity sheet vertex ids
    contours: dict[str, list[int]]  # refined contours (skin vertex ids)
    mirror: np.ndarray  # (V,) id of the mirror-image vertex (x -> -x)
    mid: dict


def _build_geometry() -> _Geometry:
    v0, f0, vt, ft = read_obj(ASSET_OBJ)
    # UVs are indexed separately in the OBJ but map one-to-one to vertices; make them per-vertex.
    uv0 = np.zeros((len(v0), 2))
    uv0[f0.reshape(-1)] = vt[ft.reshape(-1)]
    cut = _closure_faces(f0, [set(LIP_INNER_UPPER) | set(LIP_INNER_LOWER),
                              set(EYE_RIGHT_UPPER) | set(EYE_RIGHT_LOWER),
                              set(EYE_LEFT_UPPER) | set(EYE_LEFT_LOWER)])
    if cut.sum() != 18 + 14 + 14:  # the asset's documented closure triangles
        raise RuntimeError(f"expected 46 mouth/eye closure triangles in {ASSET_OBJ}, found {int(cut.sum())}")
    f0 = f0[~cut]
    # Centre: origin 3.4 cm behind the ear points (234/454), at their height (about the head's centre).
    origin = np.array([0.0, v0[234, 1], v0[234, 2] - 3.4])
    v0 = v0 - origin

    v, f, uv, mid = subdivide_pn(v0, f0, uv0)
    contours = {name: _refine_polyline(ids, mid) for name, ids in [
        ("lip_inner_upper", LIP_INNER_UPPER), ("lip_inner_lower", LIP_INNER_LOWER),
        ("lip_outer_upper", LIP_OUTER_UPPER), ("lip_outer_lower", LIP_OUTER_LOWER),
        ("eye_right_upper", EYE_RIGHT_UPPER), ("eye_right_lower", EYE_RIGHT_LOWER),
        ("eye_left_upper", EYE_LEFT_UPPER), ("eye_left_lower", EYE_LEFT_LOWER), ("oval_jaw", OVAL_JAW)]}
    v_open = v.copy()
    v = _close_lips(v, contours)
    n_skin = len(v)

    # Eyeballs: centred behind each opening, front pole 1.2 mm behind the most forward lid point.
    verts, faces, uvs = [v], [f], [uv]
    eye_ids, eye_center = {}, {}
    offset = n_skin
    theta = np.zeros(0)
    for side, up, lo, uv_c in (("right", EYE_RIGHT_UPPER, EYE_RIGHT_LOWER, (0.09, 0.09)),
                               ("left", EYE_LEFT_UPPER, EYE_LEFT_LOWER, (0.91, 0.09))):
        ring = v[list(up) + list(lo)]
        c = np.array([ring[:, 0].mean(), ring[:, 1].mean(), ring[:, 2].max() - 0.12 - _EYE_RADIUS])
        ev, ef, theta = _uv_sphere(c, _EYE_RADIUS)
        # Eyeball UVs: azimuthal-equidistant disk in a free corner of the face atlas.
        d = ev - c
        phi = np.arctan2(d[:, 1], d[:, 0])
        rr = 0.08 * theta / np.pi
        euv = np.stack([uv_c[0] + rr * np.cos(phi), uv_c[1] + rr * np.sin(phi)], 1)
        verts.append(ev)
        faces.append(ef + offset)
        uvs.append(euv)
        eye_ids[side] = np.arange(offset, offset + len(ev))
        eye_center[side] = c
        offset += len(ev)

    # Mouth cavity: a curved dark sheet behind the lips (hidden by the lips when closed).
    mv, mf, muv = _mouth_sheet(v, contours)
    verts.append(mv)
    faces.append(mf + offset)
    uvs.append(muv)
    mouth_ids = np.arange(offset, offset + len(mv))

    v_all = np.concatenate(verts)
    v_open_all = np.concatenate([v_open, v_all[n_skin:]])
    tree = cKDTree(v_all * np.array([-1.0, 1.0, 1.0]))
    dist, mirror = tree.query(v_all)
    if dist.max() > 1e-4:  # the canonical mesh is exactly symmetric; so is everything built from it
        raise RuntimeError(f"starter model is not mirror-symmetric (max error {dist.max():.2e} cm)")
    return _Geometry(v=v_all, v_open=v_open_all, f=np.concatenate(faces), uv=np.concatenate(uvs), n_skin=n_skin,
                     eye_ids=eye_ids, eye_theta=theta, eye_center=eye_center, mouth_ids=mouth_ids,
                     contours=contours, mirror=mirror, mid=mid)


def _close_lips(v: np.ndarray, contours: dict) -> np.ndarray:
    """Move the inner-lip contours onto their common mid curve (the lips touch at rest), with a smooth falloff over
    the lips. v: (V, 3) cm. Returns a new array."""
    up, lo = v[contours["lip_inner_upper"]], v[contours["lip_inner_lower"]]
    x0, x1 = up[:, 0].min(), up[:, 0].max()
    out = v.copy()
    x = v[:, 0]
    inside = (x > x0) & (x < x1)
    yu, zu = _interp_contour(x, up)
    yl, zl = _interp_contour(x, lo)
    ym, zm = 0.5 * (yu + yl), 0.5 * (zu + zl)
    near = inside & (np.abs(v[:, 1] - ym) < 1.5) & (v[:, 2] > zm - 1.5)
    upper = near & (v[:, 1] >= ym)
    lower = near & (v[:, 1] < ym)
    wu = np.exp(-(np.maximum(v[:, 1] - yu, 0) / 0.35) ** 2)
    wl = np.exp(-(np.maximum(yl - v[:, 1], 0) / 0.35) ** 2)
    out[upper, 1] += wu[upper] * (ym - yu)[upper]
    out[upper, 2] += wu[upper] * (zm - zu)[upper]
    out[lower, 1] += wl[lower] * (ym - yl)[lower]
    out[lower, 2] += wl[lower] * (zm - zl)[lower]
    return out


def _mouth_sheet(v: np.ndarray, contours: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A (9 x 7) grid behind the lips: x across the mouth, y from under the nose to the chin, bowed backwards."""
    up = v[contours["lip_inner_upper"]]
    # Wider than the mouth and bowed back at the sides, so that a turned head never sees past its edges.
    xc = np.abs(up[:, 0]).max() + 1.2
    ymid = up[:, 1].mean()
    zback = up[:, 2].min() - 0.9
    xs = np.linspace(-xc, xc, 9)
    ys = np.linspace(ymid + 1.4, ymid - 2.2, 7)
    gx, gy = np.meshgrid(xs, ys)
    gz = zback - 1.5 * (gx / xc) ** 2 - 0.3 * ((gy - ymid) / 2.0) ** 2
    mv = np.stack([gx.ravel(), gy.ravel(), gz.ravel()], 1)
    nx = len(xs)
    faces = []
    for r in range(len(ys) - 1):
        for c in range(nx - 1):
            a, b, cc, d = r * nx + c, r * nx + c + 1, (r + 1) * nx + c, (r + 1) * nx + c + 1
            # rows go downwards in y, so (a, cc, b) is counter-clockwise seen from +z
            faces += [[a, cc, b], [b, cc, d]]
    # Texture: a small patch in a free corner of the atlas (the cavity is a flat dark colour anyway).
    muv = np.stack([0.45 + 0.1 * (gx.ravel() + xc) / (2 * xc), 0.005 + 0.02 * (gy.ravel() - ys[-1]) / (ys[0] - ys[-1])],
                   1)
    return mv, np.asarray(faces, np.int64), muv


# ------------------------------------------------------------------------------------------------- landmarks
def _face_with_edge(f: np.ndarray, a: int, b: int) -> tuple[int, int, int]:
    """A face containing vertices a and b; returns (face id, slot of a, slot of b)."""
    hit = np.nonzero((f == a).any(1) & (f == b).any(1))[0]
    if len(hit) == 0:
        raise RuntimeError(f"no face contains edge ({a}, {b})")
    fi = int(hit[0])
    return fi, int(np.nonzero(f[fi] == a)[0][0]), int(np.nonzero(f[fi] == b)[0][0])


def _landmark_embedding(g: _Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Static iBUG-68 embedding (faces (68,), barycentrics (68, 3))."""
    f, v = g.f, g.v
    faces = np.zeros(68, np.int64)
    bary = np.zeros((68, 3))
    # 0..16: 17 points evenly spaced by arc length along the jaw part of the face oval, 8 exactly at the chin.
    poly = g.contours["oval_jaw"]
    p = v[poly]
    seg = np.linalg.norm(np.diff(p, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    targets = np.linspace(0.0, s[-1], 17)
    for k, t in enumerate(targets):
        j = int(np.clip(np.searchsorted(s, t, side="right") - 1, 0, len(seg) - 1))
        w = float(np.clip((t - s[j]) / seg[j], 0.0, 1.0))
        fi, sa, sb = _face_with_edge(f, poly[j], poly[j + 1])
        faces[k] = fi
        bary[k, sa] += 1 - w
        bary[k, sb] += w
    for k, vid in MEDIAPIPE_TO_IBUG68.items():
        fi = int(np.nonzero((f == vid).any(1))[0][0])
        faces[k] = fi
        bary[k, int(np.nonzero(f[fi] == vid)[0][0])] = 1.0
    return faces, bary


# ------------------------------------------------------------------------------------------------- skinning
_JOINTS_CM = {  # in the centred frame (origin 3.4 cm behind the ear points, at their height)
    "global": (0.0, -3.0, 0.4),
    "neck": (0.0, -2.0, 0.4),
    "jaw": (0.0, -0.4, 1.9),
}


def _affine_regressor(v: np.ndarray, anchors: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Minimum-norm weights w over anchor vertices with sum(w) = 1 and sum(w_i v_i) = target (exactly)."""
    A = np.concatenate([v[anchors].T, np.ones((1, len(anchors)))])  # (4, K)
    b = np.concatenate([target, [1.0]])
    w = A.T @ np.linalg.solve(A @ A.T, b)
    return w


def _skinning(g: _Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (J_regressor (5, V), lbs_weights (V, 5), jaw weight per vertex (V,))."""
    V = len(g.v)
    # Anchors for the head joints: the whole face oval (a ring around the head, stable under identity changes).
    ring = np.asarray(g.contours["oval_jaw"] + [10, 338, 297, 332, 284, 251, 389, 162, 21, 54, 103, 67, 109])
    J_reg = np.zeros((5, V))
    for j, name in enumerate(("global", "neck", "jaw")):
        J_reg[j, ring] = _affine_regressor(g.v, ring, np.asarray(_JOINTS_CM[name]))
    J_reg[3, g.eye_ids["left"]] = 1.0 / len(g.eye_ids["left"])
    J_reg[4, g.eye_ids["right"]] = 1.0 / len(g.eye_ids["right"])

    # Jaw weight: 1 below the lip parting line, 0 above, with a transition band that is sharp at the mouth (the
    # lips are cut apart there) and widens towards the ears (the cheek stretches when the mouth opens).
    p = g.v_open
    up, lo = p[g.contours["lip_inner_upper"]], p[g.contours["lip_inner_lower"]]
    xc = up[:, 0].max()
    yu, _ = _interp_contour(p[:, 0], up)
    yl, _ = _interp_contour(p[:, 0], lo)
    y_corner = up[0, 1]
    ax = np.abs(p[:, 0])
    lateral = np.maximum(ax - xc, 0.0)
    y_line = np.where(ax <= xc, 0.5 * (yu + yl), y_corner + lateral * (-1.3 - y_corner) / (7.6 - xc))
    band = 0.22 + 0.45 * lateral
    w_jaw = _smoothstep(0.5 + 0.5 * (y_line - p[:, 1]) / band)
    w_jaw[g.n_skin:] = 0.0
    # The mouth sheet: upper half with the head, lower half with the jaw.
    m = g.mouth_ids
    ym = 0.5 * (up[:, 1].mean() + lo[:, 1].mean())
    w_jaw[m] = _smoothstep(0.5 + (ym - p[m, 1]) / 1.2)
    W = np.zeros((V, 5))
    non_eye = np.setdiff1d(np.arange(V), np.concatenate([g.eye_ids["left"], g.eye_ids["right"]]))
    W[non_eye, 2] = w_jaw[non_eye]
    W[non_eye, 1] = 1.0 - w_jaw[non_eye]
    W[g.eye_ids["left"], 3] = 1.0
    W[g.eye_ids["right"], 4] = 1.0
    return J_reg, W, w_jaw


# ------------------------------------------------------------------------------------------------- bases
def _symmetrize(d: np.ndarray, mirror: np.ndarray, sign: float = 1.0) -> np.ndarray:
    """(V, 3) field -> its (anti-)symmetric part under the x -> -x mirror."""
    m = d[mirror] * np.array([-1.0, 1.0, 1.0])
    return 0.5 * (d + sign * m)


def _rigid_eyes(d: np.ndarray, g: _Geometry, field_at) -> np.ndarray:
    """Eyeballs move rigidly with the field at their centres (so identity/expression never squash them)."""
    for side, ids in g.eye_ids.items():
        d[ids] = field_at(g.eye_center[side][None])[0]
    return d


def _random_field(rng: np.random.Generator, g: _Geometry, centers_p: np.ndarray, n_centers: int,
                  sigma: tuple[float, float]):
    """A smooth random vector field: Gaussian RBFs at random centres drawn with probability ``centers_p``."""
    idx = rng.choice(g.n_skin, size=n_centers, replace=False, p=centers_p)
    c = g.v[idx]
    s = rng.uniform(*sigma, size=n_centers)
    amp = rng.standard_normal((n_centers, 3))

    def field(p: np.ndarray) -> np.ndarray:
        w = np.exp(-np.sum((p[:, None, :] - c[None]) ** 2, axis=-1) / (2 * s[None] ** 2))  # (N, K)
        return w @ amp

    return field


def _orthonormalize(cols: list[np.ndarray], keep: int = 0) -> np.ndarray:
    """Gram-Schmidt (QR) over flattened (V, 3) fields in order; signs follow the inputs. Returns (V, 3, K) with
    unit Frobenius norm columns. The first ``keep`` fields are only normalised (not orthogonalised) so that
    semantic bases keep their exact meaning (e.g. blink = 1 closes the eye)."""
    M = np.stack([c.reshape(-1) for c in cols], 1)
    Q, R = np.linalg.qr(M)
    Q = Q * np.sign(np.diag(R))[None]
    for k in range(keep):
        Q[:, k] = M[:, k] / np.linalg.norm(M[:, k])
    return Q.reshape(cols[0].shape[0], 3, -1)


def _identity_fields(g: _Geometry) -> list:
    v = g.v
    lm = {k: v[k] for k in (NOSE_TIP, SUBNASALE, NASION, CHEEK_RIGHT, CHEEK_LEFT, CHIN, 13, 105, 334, 159, 386)}
    mouth = 0.5 * (v[13] + v[14])
    eye_r, eye_l = g.eye_center["right"], g.eye_center["left"]
    brow_r, brow_l = lm[105], lm[334]
    zyg_r, zyg_l = np.array([-6.0, 0.9, 0.2]), np.array([6.0, 0.9, 0.2])  # cheekbones, in front of the ears
    nose_y = lm[SUBNASALE][1]

    def ex(p, w):
        return np.stack([w, 0 * w, 0 * w], 1)

    def ey(p, w):
        return np.stack([0 * w, w, 0 * w], 1)

    def ez(p, w):
        return np.stack([0 * w, 0 * w, w], 1)

    normals = vertex_normals(v, g.f)
    nt = cKDTree(v)

    def normal_at(p):
        return normals[nt.query(p)[1]]

    return [
        lambda p: ex(p, p[:, 0]),  # face_width
        lambda p: ey(p, p[:, 1] - nose_y),  # face_height
        lambda p: ez(p, p[:, 2] - 4.0),  # face_depth
        lambda p: ez(p, _gauss(p, lm[NOSE_TIP], 1.1)),  # nose_length
        lambda p: ex(p, p[:, 0] * _gauss(p, lm[SUBNASALE] + [0, 0.5, 0], 1.2)),  # nose_width
        lambda p: ez(p, _gauss(p, lm[NASION] + [0, -0.6, 0], 1.0)),  # nose_bridge
        lambda p: ex(p, p[:, 0] / 7.0 * _smoothstep((mouth[1] + 1.0 - p[:, 1]) / 4.0)),  # jaw_width
        lambda p: ey(p, -_gauss(p, lm[CHIN], 2.0)),  # chin_length
        lambda p: ez(p, _gauss(p, lm[CHIN] + [0, 0.8, 0], 1.6)),  # chin_protrusion
        lambda p: normal_at(p) * (_gauss(p, lm[CHEEK_RIGHT], 1.8) + _gauss(p, lm[CHEEK_LEFT], 1.8))[:, None],
        lambda p: ex(p, np.sign(p[:, 0]) * (_gauss(p, eye_r, 1.6) + _gauss(p, eye_l, 1.6))),  # eye_spacing
        lambda p: ey(p, _gauss(p, brow_r, 1.3) + _gauss(p, brow_l, 1.3)),  # brow_height
        lambda p: ey(p, np.tanh((p[:, 1] - mouth[1]) / 0.3) * _gauss(p, mouth, 1.2)),  # lip_thickness
        lambda p: ex(p, p[:, 0] * _gauss(p, mouth, 1.4)),  # mouth_width
        lambda p: ez(p, -np.maximum(p[:, 1] - brow_r[1], 0.0) ** 2 / 10.0),  # forehead_slope
        lambda p: ez(p, -(_gauss(p, eye_r, 1.4) + _gauss(p, eye_l, 1.4))),  # eye_depth
        lambda p: ex(p, np.sign(p[:, 0]) * (_gauss(p, zyg_r, 1.8) + _gauss(p, zyg_l, 1.8))),  # cheekbone_width
    ]


def _evaluate(field, g: _Geometry) -> np.ndarray:
    d = np.zeros_like(g.v)
    d[: g.n_skin] = field(g.v[: g.n_skin])
    d[g.mouth_ids] = field(g.v[g.mouth_ids])
    return _rigid_eyes(d, g, field)


#: Peak displacement (mm) of each semantic identity field at coefficient 1 (about one standard deviation of adult
#: faces, from anthropometric tables of the kind Farkas published; rounded, hand-set).
_SHAPE_PEAK_MM = (5.0, 5.0, 4.0, 3.0, 2.0, 2.0, 4.0, 3.0, 3.0, 3.0, 2.0, 2.5, 1.5, 2.5, 3.0, 2.0, 3.0)


def _identity_basis(g: _Geometry, rng: np.random.Generator) -> np.ndarray:
    """(V, 3, 100) cm: 17 semantic fields (SHAPE_NAMES) then smooth random ones, symmetrised (every 5th random one
    anti-symmetric, for natural asymmetry) and orthogonalised in that order. Each is then scaled by its peak
    per-vertex displacement (not its RMS, which would blow up localised fields such as the chin): the semantic ones
    to _SHAPE_PEAK_MM, the random ones to 1.2 mm * sqrt(17 / (k + 1)). N(0, 1) coefficients give plausible faces."""
    cols = [_symmetrize(_evaluate(fn, g), g.mirror) for fn in _identity_fields(g)]
    assert len(cols) == len(SHAPE_NAMES) == len(_SHAPE_PEAK_MM)
    p = np.ones(g.n_skin) / g.n_skin
    while len(cols) < N_SHAPE:
        k = len(cols)
        fn = _random_field(rng, g, p, n_centers=8, sigma=(2.0, 4.0))
        sign = -1.0 if k % 5 == 4 else 1.0
        cols.append(_symmetrize(_evaluate(fn, g), g.mirror, sign))
    Q = _orthonormalize(cols)
    k = np.arange(N_SHAPE) + 1.0
    n_sem = len(SHAPE_NAMES)
    peak_mm = np.where(k <= n_sem, np.resize(np.asarray(_SHAPE_PEAK_MM), N_SHAPE), 1.2 * np.sqrt(n_sem / k))
    peaks = np.linalg.norm(Q, axis=1).max(axis=0)  # (K,)
    return Q * (0.1 * peak_mm / peaks)[None, None, :]


def _blink_field(g: _Geometry, side: str) -> np.ndarray:
    """Displacements (V, 3) cm that close one eye: the upper lid comes down 75 % of the gap, the lower lid up 25 %,
    meeting slightly in front of the eyeball; the skin above/below follows with a Gaussian falloff."""
    v = g.v
    up, lo = v[g.contours[f"eye_{side}_upper"]], v[g.contours[f"eye_{side}_lower"]]
    x0, x1 = up[:, 0].min(), up[:, 0].max()
    d = np.zeros_like(v)
    skin = np.arange(g.n_skin)
    p = v[skin]
    yu, zu = _interp_contour(p[:, 0], up)
    yl, zl = _interp_contour(p[:, 0], lo)
    gap = yu - yl
    ym = yl + 0.25 * gap
    zm = np.maximum(zu, zl) + 0.15 * gap
    inside = (p[:, 0] > x0) & (p[:, 0] < x1) & (np.abs(p[:, 1] - ym) < 2.5) & (p[:, 2] > zm - 2.0)
    upper = inside & (p[:, 1] >= 0.5 * (yu + yl))
    lower = inside & ~upper
    wu = np.exp(-(np.maximum(p[:, 1] - yu, 0) / 0.7) ** 2)
    wl = np.exp(-(np.maximum(yl - p[:, 1], 0) / 0.35) ** 2)
    d[skin[upper], 1] = (wu * (ym - yu))[upper]
    d[skin[upper], 2] = (wu * (zm - zu))[upper]
    d[skin[lower], 1] = (wl * (ym - yl))[lower]
    d[skin[lower], 2] = (wl * (zm - zl))[lower]
    return d


def _expression_basis(g: _Geometry, rng: np.random.Generator) -> np.ndarray:
    """(V, 3, 50) cm. Bases 0..12 are semantic (EXPRESSION_NAMES) with coefficient 1 = a strong expression
    (blink 1 = eye closed); 13..49 are smooth random fields on the mobile parts of the face (mouth, cheeks, brows,
    lids), orthogonal to everything before them, 0.8 mm RMS per unit coefficient. Jaw opening is the jaw joint."""
    v = g.v
    lip_top_y = v[0, 1]
    mouth = 0.5 * (v[13] + v[14])
    corner_r, corner_l = v[61], v[291]
    ym = mouth[1]
    skin = np.zeros(len(v), bool)
    skin[: g.n_skin] = True
    lips = _gauss(v, mouth, 1.1) * skin
    # Upper/lower lip by the side of the cut the vertex was on (the lips touch at rest, so y alone is ambiguous).
    up_side = g.v_open[:, 1] >= ym
    upper, lower = up_side & skin, ~up_side & skin
    g_corner = (_gauss(v, corner_r, 1.0) + _gauss(v, corner_l, 1.0)) * skin
    sx = np.sign(v[:, 0])
    brow_r, brow_l = v[105], v[334]
    inner_r, inner_l = v[107], v[336]
    brows = (_gauss(v, brow_r, 1.5) + _gauss(v, brow_l, 1.5)) * skin
    fields: list[np.ndarray] = []

    def vec(x, y, z):
        return np.stack([x, y, z], 1)

    zero = np.zeros(len(v))
    # lip_rounding: lips pulled towards the mouth centre and pushed forward
    w = _gauss(v, mouth, 1.3) * skin
    fields.append(vec(-0.35 * (v[:, 0] - mouth[0]) * w, zero, 0.45 * w))
    # lip_spread: corners pulled out and slightly back
    fields.append(vec(0.5 * sx * g_corner, zero, -0.15 * g_corner))
    # smile: corners out, up, back; cheeks raise
    cheeks = (_gauss(v, v[CHEEK_RIGHT], 1.5) + _gauss(v, v[CHEEK_LEFT], 1.5)) * skin
    fields.append(vec(0.35 * sx * g_corner, 0.45 * g_corner + 0.2 * cheeks, -0.15 * g_corner + 0.1 * cheeks))
    # lip_press: lips pressed together (thinner, rolled in)
    fields.append(vec(zero, -0.12 * lips * upper + 0.12 * lips * lower, -0.2 * lips))
    # upper_lip_raise
    wu = _gauss(v, np.array([0.0, lip_top_y, mouth[2]]), 1.0) * upper
    fields.append(vec(zero, 0.35 * wu, 0.05 * wu))
    # lower_lip_depress
    wl = _gauss(v, np.array([0.0, v[17, 1], v[17, 2]]), 1.0) * lower
    fields.append(vec(zero, -0.35 * wl, 0.05 * wl))
    fields.append(_blink_field(g, "left"))
    fields.append(_blink_field(g, "right"))
    # brow_raise
    fields.append(vec(zero, 0.45 * brows, 0.05 * brows))
    # brow_furrow: inner brows down and together
    wf = (_gauss(v, inner_r, 1.1) + _gauss(v, inner_l, 1.1)) * skin
    fields.append(vec(-0.2 * sx * wf, -0.25 * wf, 0.05 * wf))
    # cheek_puff: cheeks out along the normal
    n = vertex_normals(v, g.f)
    wc = (_gauss(v, v[205], 1.6) + _gauss(v, v[425], 1.6)) * skin * (1 - 0.8 * lips)
    fields.append(n * 0.5 * wc[:, None])
    # mouth_sideways (anti-symmetric): the lips shift towards the subject's left
    w = _gauss(v, mouth, 1.6) * skin
    fields.append(vec(0.4 * w, zero, zero))
    # nose_wrinkle: the nose wings and upper lip go up
    wn = (_gauss(v, v[98], 0.9) + _gauss(v, v[327], 0.9)) * skin
    fields.append(vec(zero, 0.25 * wn, 0.05 * wn))
    assert len(fields) == len(EXPRESSION_NAMES)
    # Rigid eyes, symmetric bases symmetric (mouth_sideways anti-symmetric; blinks mirror each other).
    for i, d in enumerate(fields):
        if EXPRESSION_NAMES[i].startswith("blink"):
            continue
        sign = -1.0 if EXPRESSION_NAMES[i] == "mouth_sideways" else 1.0
        fields[i] = _symmetrize(d, g.mirror, sign)
        for ids in g.eye_ids.values():
            fields[i][ids] = 0.0

    semantic = [f.copy() for f in fields]
    # Random bases: centres drawn where faces move (mouth, cheeks, brows, eyelids).
    mob = (2.0 * _gauss(v, mouth, 2.0) + cheeks + brows + _gauss(v, g.eye_center["left"], 1.5)
           + _gauss(v, g.eye_center["right"], 1.5))[: g.n_skin] + 0.02
    mob = mob / mob.sum()
    cols = list(semantic)
    while len(cols) < N_EXPRESSION:
        fn = _random_field(rng, g, mob, n_centers=5, sigma=(0.8, 1.8))
        d = _evaluate(fn, g)
        for ids in g.eye_ids.values():
            d[ids] = 0.0
        cols.append(_symmetrize(d, g.mirror, 1.0 if rng.random() < 0.7 else -1.0))
    Q = _orthonormalize(cols, keep=len(semantic))
    out = np.zeros((len(v), 3, N_EXPRESSION))
    for i, d in enumerate(semantic):
        out[:, :, i] = d
    out[:, :, len(semantic):] = Q[:, :, len(semantic):] * np.sqrt(len(v)) * 0.08
    return out


# ------------------------------------------------------------------------------------------------- albedo
def _albedo(g: _Geometry, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex albedo mean (V, 3) in [0, 1] and basis (V, 3, 50).

    Mean: medium skin tone, redder lips, darker brows, slightly darker eyelids; eyeballs with pupil, iris, sclera;
    dark red mouth cavity. Basis (per unit coefficient): 0 skin tone (melanin-like, lighter/darker), 1 redness
    (haemoglobin-like), 2 lip colour, 3 brow darkness, 4 iris colour, then smooth random colour variations of
    decreasing size. N(0, 1) coefficients stay roughly within [0, 1].
    """
    v = g.v
    V = len(v)
    skin = np.zeros(V, bool)
    skin[: g.n_skin] = True
    base = np.array([0.78, 0.58, 0.48])
    mean = np.tile(base, (V, 1))
    lip_ids = _inside_lips(g)
    lip_w = np.zeros(V)
    lip_w[lip_ids] = 1.0
    lip_colour = np.array([0.70, 0.38, 0.38])
    mean = mean * (1 - lip_w[:, None]) + lip_colour * lip_w[:, None]
    brow_w = np.zeros(V)
    for side in ("left", "right"):
        brow_w[_brow_ids(g, side)] = 0.8
    # A hard per-vertex brow boundary follows the triangulation (zig-zag "stitches"): feather it over the mesh.
    # Rescaled to the original peak: thin brows would otherwise fade.
    brow_w = _smooth_vertex_field(brow_w, g.f, iterations=1)
    brow_w = np.clip(1.5 * brow_w / max(brow_w.max(), 1e-9), 0.0, 1.0)
    mean = mean * (1 - 0.55 * brow_w[:, None]) + np.array([0.25, 0.17, 0.12]) * 0.55 * brow_w[:, None]
    lids = (_gauss(v, g.eye_center["left"], 1.2) + _gauss(v, g.eye_center["right"], 1.2)) * skin
    mean = mean * (1 - 0.12 * lids[:, None])
    th = np.rad2deg(g.eye_theta)
    eye = np.where(th[:, None] < 4, np.array([0.03, 0.03, 0.03]),
                   np.where(th[:, None] < 9, np.array([0.08, 0.06, 0.05]),
                            np.where(th[:, None] < 32, np.array([0.35, 0.22, 0.12]), np.array([0.90, 0.88, 0.85]))))
    iris_w = ((th >= 9) & (th < 32)).astype(float)
    for ids in g.eye_ids.values():
        mean[ids] = eye
    mean[g.mouth_ids] = np.array([0.25, 0.06, 0.06])
    mean = np.clip(mean, 0.0, 1.0)

    basis = np.zeros((V, 3, N_ALBEDO))
    sk = skin.astype(float)
    basis[:, :, 0] = sk[:, None] * np.array([0.10, 0.09, 0.08])  # tone: lighter (+) / darker (-)
    basis[:, :, 1] = sk[:, None] * np.array([0.04, -0.015, -0.01])  # redness
    basis[:, :, 2] = lip_w[:, None] * np.array([0.05, -0.02, -0.01])  # lip colour
    basis[:, :, 3] = brow_w[:, None] * np.array([-0.06, -0.05, -0.04])  # brow darkness
    eye_iris = np.zeros(V)
    for ids in g.eye_ids.values():
        eye_iris[ids] = iris_w
    basis[:, :, 4] = eye_iris[:, None] * np.array([-0.08, 0.0, 0.08])  # iris: browner (-) / bluer (+)
    p = np.ones(g.n_skin) / g.n_skin
    for k in range(5, N_ALBEDO):
        fn = _random_field(rng, g, p, n_centers=6, sigma=(1.5, 4.0))
        d = np.zeros((V, 3))
        d[: g.n_skin] = fn(v[: g.n_skin])
        d = _symmetrize(d, g.mirror, 1.0 if k % 4 else -1.0)
        # Mostly luminance with a little chroma (skin varies mostly in brightness and redness).
        lum = d.mean(axis=1, keepdims=True)
        d = 0.8 * lum + 0.2 * (d - lum)
        rms = np.sqrt((d[: g.n_skin] ** 2).sum(1).mean()) + 1e-12
        basis[:, :, k] = d / rms * 0.03 / np.sqrt(1.0 + (k - 5) / 10.0)
    return mean, basis


# ------------------------------------------------------------------------------------------------- regions
def _inside_lips(g: _Geometry) -> np.ndarray:
    """Skin vertices on the lips: inside the outer lip contour (frontal projection of the open-mouth geometry)."""
    c = g.contours
    poly = g.v_open[c["lip_outer_upper"] + c["lip_outer_lower"][::-1][1:-1]][:, :2]
    p = g.v_open[: g.n_skin, :2]
    inside = point_in_polygon(p, poly)
    inside[np.asarray(c["lip_outer_upper"] + c["lip_outer_lower"])] = True
    # Only the front surface (the mask wraps far back at the sides, never inside the lip outline anyway).
    return np.nonzero(inside)[0]


def _smooth_vertex_field(w: np.ndarray, faces: np.ndarray, iterations: int) -> np.ndarray:
    """Average a per-vertex field with its mesh neighbours.

    Args:
        w: (V,) field. faces: (F, 3).
    Returns:
        (V,) smoothed field (each iteration: mean over the vertex and its one-ring, weighted by shared faces).
    """
    n = len(w)
    rows = np.repeat(faces, 3, axis=1).reshape(-1)  # (a, a, a, b, b, b, c, c, c) per face ...
    # ... paired with (a, b, c, a, b, c, a, b, c): every corner receives its face's three vertices.
    cols = np.tile(faces, (1, 3)).reshape(-1)
    counts = np.bincount(rows, minlength=n).astype(np.float64)
    for _ in range(iterations):
        w = np.bincount(rows, weights=w[cols], minlength=n) / np.maximum(counts, 1)
    return w


def _brow_ids(g: _Geometry, side: str) -> np.ndarray:
    ids = BROW_LEFT if side == "left" else BROW_RIGHT
    poly = g.v[list(ids)][:, :2]
    p = g.v[: g.n_skin, :2]
    inside = point_in_polygon(p, poly)
    inside[list(ids)] = True
    return np.nonzero(inside)[0]


def _regions(g: _Geometry, w_jaw: np.ndarray) -> dict[str, np.ndarray]:
    v = g.v
    skin = np.arange(g.n_skin)
    lips = _inside_lips(g)
    ym = 0.5 * (v[13, 1] + v[14, 1])
    lip_upper = lips[g.v_open[lips, 1] >= ym]
    lip_lower = lips[g.v_open[lips, 1] < ym]
    regions: dict[str, np.ndarray] = {"face": skin, "lips": lips, "lip_upper": lip_upper, "lip_lower": lip_lower}
    for side in ("left", "right"):
        c = g.eye_center[side]
        near = skin[(np.abs(v[skin, 0] - c[0]) < 1.9) & (np.abs(v[skin, 1] - c[1]) < 1.1) & (v[skin, 2] > c[2])]
        regions[f"eye_{side}"] = np.union1d(near, g.eye_ids[side])
        regions[f"eyeball_{side}"] = g.eye_ids[side]
        regions[f"brow_{side}"] = _brow_ids(g, side)
    # Nose: between the nasion and the subnasale, narrowing towards the bridge, in front of the cheeks.
    yt, yb = v[NASION, 1], v[SUBNASALE, 1] - 0.25
    t = np.clip((v[skin, 1] - yb) / (yt - yb), 0, 1)
    half_w = 2.0 - 1.1 * t
    regions["nose"] = skin[(v[skin, 1] <= yt) & (v[skin, 1] >= yb) & (np.abs(v[skin, 0]) <= half_w)
                           & (v[skin, 2] > v[NASION, 2] - 1.0)]
    regions["jaw"] = skin[w_jaw[skin] > 0.5]
    regions["forehead"] = skin[v[skin, 1] > v[105, 1] + 0.3]
    regions["mouth_cavity"] = g.mouth_ids
    regions["mediapipe468"] = np.arange(468)
    return regions


# ------------------------------------------------------------------------------------------------- public
def build_starter_model(seed: int = 0) -> FaceModelData:
    """Build the open starter face model (deterministic for a given ``seed``; the seed drives only the random
    smooth basis fields). See the module docstring for what is in it.

    Built with single-threaded BLAS: a multi-threaded BLAS sums in an order that depends on the thread count, so a
    Ray worker (OMP_NUM_THREADS=1) and a plain process would build bases that differ in the last bits, and a
    checkpoint trained in one would not match the face-model fingerprint of the other."""
    with threadpool_limits(limits=1):
        return _build_starter_model(seed)


def _build_starter_model(seed: int) -> FaceModelData:
    rng = np.random.default_rng(seed)
    g = _build_geometry()
    J_reg, W, w_jaw = _skinning(g)
    lmk_faces, lmk_bary = _landmark_embedding(g)
    shapedirs = _identity_basis(g, rng)
    exprdirs = _expression_basis(g, rng)
    albedo_mean, albedo_basis = _albedo(g, rng)
    V = len(g.v)
    return FaceModelData(
        name=f"avface-starter-v1-seed{seed}",
        v_template=g.v * _CM,
        faces=g.f,
        shapedirs=shapedirs * _CM,
        exprdirs=exprdirs * _CM,
        posedirs=np.zeros((9 * 4, V * 3)),
        J_regressor=J_reg,
        parents=np.array([-1, 0, 1, 1, 1]),
        lbs_weights=W,
        uv_coords=g.uv,
        uv_faces=g.f,
        lmk68_faces=lmk_faces,
        lmk68_bary=lmk_bary,
        albedo_mean=albedo_mean,
        albedo_basis=albedo_basis,
        regions=_regions(g, w_jaw),
        n_semantic_expression=len(EXPRESSION_NAMES),  # bases 0..12 are the named ones
    )

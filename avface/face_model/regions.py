"""Face regions (lips, nose, eyes, brows, face) of a FLAME-topology mesh from FLAME's masks where given, else
derived from the 68-landmark embedding on the template (the rules are in :func:`derive_regions`)."""

from __future__ import annotations

import numpy as np

from avface.face_model.mesh import dist_to_polyline, point_in_polygon

__all__ = ["derive_regions"]


def _landmarks_on(v: np.ndarray, f: np.ndarray, faces: np.ndarray, bary: np.ndarray) -> np.ndarray:
    return np.einsum("lkc,lk->lc", v[f[faces]], bary)


def derive_regions(v: np.ndarray, f: np.ndarray, lmk_faces: np.ndarray, lmk_bary: np.ndarray,
                   weights: np.ndarray, masks: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Regions (see the module docstring) from FLAME masks where given, else from the 68-landmark embedding.
    v: (V, 3) template in metres; weights: (V, 5) skinning weights (eyeballs = vertices on the eye joints)."""
    masks = masks or {}
    L = _landmarks_on(v, f, lmk_faces, lmk_bary)
    xy = v[:, :2]
    ids = np.arange(len(v))
    eyeball_left = ids[weights[:, 3] > 0.5]
    eyeball_right = ids[weights[:, 4] > 0.5]
    # "Front" = in front of the plane through the eye corners pushed 3 cm back (excludes the back of the head).
    z_front = L[[36, 45], 2].mean() - 0.03

    def front(mask: np.ndarray) -> np.ndarray:
        return mask & (v[:, 2] > z_front)

    def dilate_poly(poly_ids: list[int], r: float) -> np.ndarray:
        poly = L[poly_ids, :2]
        inside = point_in_polygon(xy, poly)
        closed = np.concatenate([poly, poly[:1]])
        return inside | (dist_to_polyline(xy, closed) < r)

    out: dict[str, np.ndarray] = {}
    lips = front(dilate_poly(list(range(48, 60)), 0.001))
    mouth_line_y = np.interp(v[:, 0], L[[60, 61, 62, 63, 64], 0], 0.5 * (L[[60, 61, 62, 63, 64], 1]
                                                                      + L[[60, 67, 66, 65, 64], 1]))
    out["lips"] = masks.get("lips", ids[lips])
    lip_ids = out["lips"]
    out["lip_upper"] = lip_ids[v[lip_ids, 1] >= mouth_line_y[lip_ids]]
    out["lip_lower"] = lip_ids[v[lip_ids, 1] < mouth_line_y[lip_ids]]
    out["nose"] = masks.get("nose", ids[front(dilate_poly([27, 31, 32, 33, 34, 35], 0.005))])
    for side, eye_lm, brow_lm, eyeball, mkey in (
            ("right", list(range(36, 42)), list(range(17, 22)), eyeball_right, "right_eye_region"),
            ("left", list(range(42, 48)), list(range(22, 27)), eyeball_left, "left_eye_region")):
        region = masks.get(mkey, ids[front(dilate_poly(eye_lm, 0.008))])
        ball = masks.get(f"{side}_eyeball", eyeball)
        out[f"eye_{side}"] = np.union1d(region, ball)
        out[f"eyeball_{side}"] = np.asarray(ball)
        out[f"brow_{side}"] = ids[front(dist_to_polyline(v, L[brow_lm]) < 0.008)]
    if "face" in masks:
        out["face"] = masks["face"]
    else:
        hull = np.concatenate([L[0:17, :2], L[[26, 25, 24, 23, 22, 21, 20, 19, 18, 17], :2] + [0.0, 0.04]])
        out["face"] = ids[front(point_in_polygon(xy, hull))]
    # A region the geometric rule leaves empty (unusual meshes) falls back to the vertices nearest its landmarks.
    groups = {"lips": range(48, 68), "lip_upper": range(48, 55), "lip_lower": [48, *range(54, 60)],
              "nose": range(27, 36), "eye_right": range(36, 42), "eye_left": range(42, 48),
              "brow_right": range(17, 22), "brow_left": range(22, 27), "face": range(68)}
    for name, lms in groups.items():
        if len(out[name]) == 0:
            d = np.linalg.norm(v[None] - L[list(lms)][:, None], axis=-1)  # (K, V)
            out[name] = np.unique(d.argmin(axis=1))
    for k, val in masks.items():
        out.setdefault(f"flame_{k}", np.asarray(val))
    return {k: np.unique(np.asarray(val, dtype=np.int64)) for k, val in out.items()}

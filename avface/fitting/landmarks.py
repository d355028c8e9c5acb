"""The face model fitted to 2D landmarks: per-frame pose, camera, expression and jaw and a per-sequence shape
offset, by L-BFGS (pure functions over tensors). Two users: the test-time fit of a network's prediction
(``avface reconstruct --refine landmarks``, :mod:`avface.inference.refine`) and the pseudo-ground truth of
preprocessing (``fit.enabled``, :mod:`avface.data.fit`: the mean face fitted to a clip's detected landmarks).

Per sequence (``(B, T)``: a streaming chunk in reconstruction, a window in the evaluation and in preprocessing) it
minimises

    data    robust (pseudo-Huber) distance of the projected 68 landmarks to the detected ones (crop NDC, DECA's
            per-point weights), on frames with a detection
    prior   ||expression - e_start||^2, ||jaw - j_start||^2 per frame, ||shape offset||^2 (one offset shared by the
            sequence's frames: the speaker does not change within it)
    smooth  squared acceleration of the projected landmarks (x, y and depth, crop NDC): no added shake

over pose, camera, expression, jaw and the shape offset with L-BFGS, from a closed-form weak-perspective start
(:func:`avface.render.cameras.fit_orthographic_camera`, kept per frame where it beats the start's own pose).

The landmarks come from :class:`LandmarkRig`: the face model restricted to the vertices its landmark embeddings
use (the joints carried as extra "vertices": joints are linear in the blendshapes); it gives the same
``landmarks68_dynamic`` as :class:`avface.face_model.FaceModel` at a fraction of the cost.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from avface.face_model.flame import dynamic_contour_index, vertices2landmarks
from avface.face_model.lbs import batch_rigid_transform, batch_rodrigues
from avface.losses.landmarks import landmark_weights
from avface.render.cameras import fit_orthographic_camera, orthographic_project

__all__ = ["FitParams", "FitResult", "LandmarkRig", "RefineConfig", "fit_landmarks", "landmark_rig",
           "lip_landmark_offsets", "matrix_to_axis_angle", "pixels_to_crop_ndc", "rig_landmarks"]


@dataclass
class RefineConfig:
    """Weights and budget of the fit (units: crop NDC for the data and smoothness terms, coefficients for the
    priors). Measured in benchmarks/bench_refine.py."""

    iterations: int = 12  # L-BFGS iterations (each a few evaluations with the line search)
    max_eval: int = 40  # bound on the evaluations of the loss per sequence
    sigma: float = 0.01  # pseudo-Huber scale of a landmark residual (crop NDC; ~1 px at 224 px)
    w_expression: float = 1e-2  # prior towards the network's expression, per coefficient
    w_jaw: float = 1.0  # prior towards the network's jaw (rad^2)
    # prior on the sequence's shape offset, per coefficient: a detector's points (MediaPipe on held-out renders) pull
    # the shape away at 1e-2 (3D error +3-5 % over the network alone); at 1.0 it stays level with the network
    w_shape: float = 1.0
    w_smooth: float = 1.0  # squared landmark acceleration (crop NDC per frame^2) against the data term
    contour_weight: float = 0.5  # the 17 jaw-contour points (detectors place them loosely) x DECA's weights


@dataclass
class FitParams:
    """Per-frame parameters ``(B, T, k)``: shape (NS), expression (NE), jaw (3), global_pose (3), cam (3)."""

    shape: torch.Tensor
    expression: torch.Tensor
    jaw: torch.Tensor
    global_pose: torch.Tensor
    cam: torch.Tensor

    def map(self, fn) -> FitParams:
        return FitParams(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})


@dataclass
class FitResult:
    """``params`` fitted (frames not refined keep the start), ``landmarks2d (B, T, 68, 2)`` crop NDC of ``params``,
    ``refined (B, T)`` bool, ``loss`` the final objective (float)."""

    params: FitParams
    landmarks2d: torch.Tensor
    refined: torch.Tensor
    loss: float


# ------------------------------------------------------------------------------------------------ the rig
@dataclass
class LandmarkRig:
    """The face model restricted to the vertices of its landmark embeddings, plus its J joints as the last J
    "vertices" (their blendshapes are the joint regressor applied to the model's: joints are linear in the shape).

    v_template (Vs+J, 3), shapedirs (Vs+J, 3, NS+NE), posedirs (P, (Vs+J)*3), J_regressor (J, Vs+J) selecting the
    joint rows, parents (J,), lbs_weights (Vs+J, J), faces (F', 3) sub-vertex ids, lmk_faces (68,), lmk_bary
    (68, 3), dyn_faces (79, 17) | None, dyn_bary (79, 17, 3) | None, n_shape, n_expression, lmk_matrix (68, Vs+J) the
    static embedding's barycentric weights."""

    v_template: torch.Tensor
    shapedirs: torch.Tensor
    posedirs: torch.Tensor
    J_regressor: torch.Tensor
    parents: torch.Tensor
    lbs_weights: torch.Tensor
    faces: torch.Tensor
    lmk_faces: torch.Tensor
    lmk_bary: torch.Tensor
    dyn_faces: torch.Tensor | None
    dyn_bary: torch.Tensor | None
    n_shape: int
    n_expression: int
    lmk_matrix: torch.Tensor  # (68, Vs+J) barycentric weights of the static embedding


def landmark_rig(face_model: torch.nn.Module) -> LandmarkRig:
    """The :class:`LandmarkRig` of an :class:`avface.face_model.FaceModel` (its device and dtype)."""
    fm = face_model
    used = [fm.lmk68_faces.reshape(-1)]
    if fm.has_dynamic_landmarks:
        used.append(fm.dynamic_lmk_faces.reshape(-1))
    face_ids = torch.unique(torch.cat(used))
    vids = torch.unique(fm.faces[face_ids].reshape(-1))
    remap = torch.full((fm.num_vertices,), -1, dtype=torch.long, device=vids.device)
    remap[vids] = torch.arange(len(vids), device=vids.device)
    face_remap = torch.full((fm.faces.shape[0],), -1, dtype=torch.long, device=vids.device)
    face_remap[face_ids] = torch.arange(len(face_ids), device=vids.device)
    faces = remap[fm.faces[face_ids]]
    jreg = fm.J_regressor  # (J, V)
    j = jreg.shape[0]
    vs = len(vids)
    posedirs = fm.posedirs.reshape(fm.posedirs.shape[0], -1, 3)[:, vids]
    posedirs = torch.cat([posedirs, posedirs.new_zeros(posedirs.shape[0], j, 3)], 1).reshape(posedirs.shape[0], -1)
    weights = fm.lbs_weights[vids]
    corners = faces[face_remap[fm.lmk68_faces]]  # (68, 3) sub-vertex ids
    lmk_matrix = fm.v_template.new_zeros(68, vs + j)
    lmk_matrix.scatter_add_(1, corners, fm.lmk68_bary.to(lmk_matrix))
    return LandmarkRig(
        v_template=torch.cat([fm.v_template[vids], jreg @ fm.v_template]),
        shapedirs=torch.cat([fm.shapedirs[vids], torch.einsum("jv,vkn->jkn", jreg, fm.shapedirs)]),
        posedirs=posedirs, parents=fm.parents,
        J_regressor=torch.cat([jreg.new_zeros(j, vs), torch.eye(j, dtype=jreg.dtype, device=jreg.device)], 1),
        lbs_weights=torch.cat([weights, weights.new_zeros(j, weights.shape[1])]),
        faces=faces, lmk_faces=face_remap[fm.lmk68_faces], lmk_bary=fm.lmk68_bary,
        dyn_faces=face_remap[fm.dynamic_lmk_faces] if fm.has_dynamic_landmarks else None,
        dyn_bary=fm.dynamic_lmk_bary if fm.has_dynamic_landmarks else None,
        n_shape=fm.n_shape, n_expression=fm.n_expression, lmk_matrix=lmk_matrix)


def rig_landmarks(rig: LandmarkRig, shape: torch.Tensor, expression: torch.Tensor, global_pose: torch.Tensor,
                  jaw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, NS'), (N, NE'), (N, 3), (N, 3) -> ``(landmarks68_dynamic (N, 68, 3), root joint (N, 3))``, as
    :class:`avface.face_model.FaceModel` gives them (no neck or eye pose; fewer coefficients are zero-padded)."""
    n = shape.shape[0]
    pad = torch.nn.functional.pad
    betas = torch.cat([pad(shape, [0, rig.n_shape - shape.shape[1]]),
                       pad(expression, [0, rig.n_expression - expression.shape[1]])], 1)
    zero3 = global_pose.new_zeros(n, 3)
    # lbs() of avface.face_model.lbs, written with plain matrix products: its einsum/bmm forms cost ~50x more on
    # the CPU for this few vertices and many frames (equal results: tests/test_refine.py)
    v = rig.v_template.shape[0]
    v_shaped = rig.v_template + (betas @ rig.shapedirs.reshape(v * 3, -1).T).reshape(n, v, 3)
    rot = batch_rodrigues(torch.cat([global_pose, zero3, jaw, zero3, zero3], 1).reshape(-1, 3)).reshape(n, 5, 3, 3)
    eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
    v_posed = v_shaped + ((rot[:, 1:] - eye).reshape(n, -1) @ rig.posedirs).reshape(n, v, 3)
    joints = v_shaped[:, -rig.J_regressor.shape[0]:]
    posed_joints, a = batch_rigid_transform(rot, joints, rig.parents)
    nj = a.shape[1]
    t = (a.reshape(n, nj, 16).transpose(1, 2).reshape(n * 16, nj) @ rig.lbs_weights.T)  # one mm, not n bmm's
    t = t.reshape(n, 16, v).transpose(1, 2).reshape(n, v, 4, 4)
    verts = (t[:, :, :3, :3] * v_posed[:, :, None, :]).sum(-1) + t[:, :, :3, 3]
    # the static embedding as one (68, V) barycentric matrix: a matrix product instead of a gather, whose backward
    # (a scatter) costs more than the whole forward
    lmk = (rig.lmk_matrix @ verts.transpose(0, 1).reshape(v, n * 3)).reshape(68, n, 3).transpose(0, 1)
    if rig.dyn_faces is not None:
        row = dynamic_contour_index(global_pose.detach(), zero3)
        contour = vertices2landmarks(verts, rig.faces, rig.dyn_faces[row], rig.dyn_bary[row].to(verts))
        lmk = torch.cat([contour, lmk[:, 17:]], 1)
    return lmk, posed_joints[:, 0]


def lip_landmark_offsets(face_model: torch.nn.Module, lip_offsets: torch.Tensor, lip_ids: torch.Tensor) -> torch.Tensor:
    """The lip refiner's canonical-frame offsets ``(N, K, 3)`` at vertices ``lip_ids (K,)`` -> what they move the 68
    static landmarks by, ``(N, 68, 3)`` canonical frame (rotate with the head, as the offsets are)."""
    n = lip_offsets.shape[0]
    full = lip_offsets.new_zeros(n, face_model.num_vertices, 3).index_add(1, lip_ids, lip_offsets)
    return vertices2landmarks(full, face_model.faces, face_model.lmk68_faces[None].expand(n, -1),
                              face_model.lmk68_bary[None].expand(n, -1, -1).to(full))


def matrix_to_axis_angle(rot: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) rotation matrices -> (N, 3) axis-angle (the inverse of ``batch_rodrigues``; angles up to pi)."""
    cos = ((rot.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1.0, 1.0)
    angle = torch.acos(cos)
    axis = torch.stack([rot[:, 2, 1] - rot[:, 1, 2], rot[:, 0, 2] - rot[:, 2, 0], rot[:, 1, 0] - rot[:, 0, 1]], -1)
    sin = torch.sin(angle)
    aa = axis * torch.where(sin.abs() < 1e-6, torch.full_like(angle, 0.5), angle / (2 * sin.clamp_min(1e-12)))[:, None]
    # beyond 90 degrees the antisymmetric part is small: the axis from the symmetric part,
    # (R + R^T) / 2 = cos I + (1 - cos) a a^T, its sign from the antisymmetric part
    wide = cos < 0
    if wide.any():
        r, c = rot[wide], cos[wide]
        sym = ((r + r.transpose(1, 2)) / 2 - c[:, None, None] * torch.eye(3, dtype=rot.dtype, device=rot.device))
        sym = sym / (1 - c)[:, None, None]
        k = sym.diagonal(dim1=1, dim2=2).argmax(-1)
        col = sym[torch.arange(len(k)), :, k]
        a = col / col.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        sign = torch.where((a * axis[wide]).sum(-1) < 0, -1.0, 1.0).to(a)
        aa[wide] = a * (sign * angle[wide])[:, None]
    return aa


def pixels_to_crop_ndc(uv: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Frame pixels ``(N, K, 2)`` -> NDC of each frame's crop box ``(N, 4)`` xyxy (the result's camera frame)."""
    x0, y0, x1, y1 = (boxes[:, i, None] for i in range(4))
    return np.stack([2 * (uv[..., 0] - x0) / (x1 - x0) - 1, 2 * (uv[..., 1] - y0) / (y1 - y0) - 1], -1)


# ------------------------------------------------------------------------------------------------ the fit
#: shape / expression coefficients per unit of their optimisation variable: a coefficient moves the face by
#: millimetres where a radian of pose moves it by a decimetre, and L-BFGS converges faster on comparable scales
_COEFF_STEP = 20.0

def _posed_landmarks(rig: LandmarkRig, p: FitParams, offsets: torch.Tensor | None) -> torch.Tensor:
    """(B, T, 68, 3) posed landmarks (model space) of ``p``, with the lip offsets rotated by the head."""
    b, t = p.cam.shape[:2]

    def flat(x):
        return x.reshape(b * t, *x.shape[2:])

    lmk, _ = rig_landmarks(rig, flat(p.shape), flat(p.expression), flat(p.global_pose), flat(p.jaw))
    if offsets is not None:
        lmk = lmk + torch.einsum("nij,nkj->nki", batch_rodrigues(flat(p.global_pose)), flat(offsets))
    return lmk.reshape(b, t, 68, 3)


def _project(lmk3: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """(B, T, 68, 3), (B, T, 3) -> (B, T, 68, 3) crop NDC x, y and depth."""
    b, t = cam.shape[:2]
    return orthographic_project(lmk3.reshape(b * t, 68, 3), cam.reshape(b * t, 3)).reshape(b, t, 68, 3)


def _point_weights(cfg: RefineConfig, like: torch.Tensor) -> torch.Tensor:
    w = landmark_weights().to(like)
    w[:17] = w[:17] * cfg.contour_weight
    return w / w.mean()


def _data_terms(proj: torch.Tensor, target: torch.Tensor, w: torch.Tensor, cfg: RefineConfig) -> torch.Tensor:
    """(B, T) mean over points of the weighted pseudo-Huber landmark residual."""
    r2 = (proj[..., :2] - target).square().sum(-1)
    rho = cfg.sigma ** 2 * (torch.sqrt(1 + r2 / cfg.sigma ** 2) - 1)
    return (rho * w).mean(-1)


def _rigid_start(rig: LandmarkRig, p: FitParams, target: torch.Tensor, valid: torch.Tensor,
                 offsets: torch.Tensor | None, w: torch.Tensor) -> FitParams:
    """Per frame, the closed-form weak-perspective pose and camera of the network's face, where it fits the
    landmarks better than the network's own pose and camera."""
    b, t = p.cam.shape[:2]
    zero = torch.zeros_like(p.global_pose)
    canon = _posed_landmarks(rig, replace(p, global_pose=zero), offsets)  # (B, T, 68, 3)
    n = b * t
    rot, cam = fit_orthographic_camera(canon.reshape(n, 68, 3), target.reshape(n, 68, 2), w)
    _, root = rig_landmarks(rig, p.shape.reshape(n, -1), p.expression.reshape(n, -1), zero.reshape(n, 3),
                            p.jaw.reshape(n, 3))
    # the fit rotates about the origin, the global pose about the root joint J0: R L + (I - R) J0
    shift = root - torch.einsum("nij,nj->ni", rot, root)
    cam = torch.cat([cam[:, :1], cam[:, 1:] - shift[:, :2]], 1)
    ok = torch.isfinite(rot).all((1, 2)) & torch.isfinite(cam).all(1) & (cam[:, 0] > 0)
    start = replace(p, global_pose=matrix_to_axis_angle(rot).reshape(b, t, 3), cam=cam.reshape(b, t, 3))
    with torch.no_grad():
        e_net = _data_terms(_project(_posed_landmarks(rig, p, offsets), p.cam), target, w, RefineConfig(sigma=1.0))
        e_cf = _data_terms(_project(_posed_landmarks(rig, start, offsets), start.cam), target, w,
                           RefineConfig(sigma=1.0))
    take = (ok.reshape(b, t) & (e_cf < e_net) & valid)[..., None]
    # per-frame closed-form fits follow the landmarks' noise: smoothed in time, so that L-BFGS starts from a steady
    # head (its few iterations cannot remove a start's shake)
    return replace(p, global_pose=_smooth_time(torch.where(take, start.global_pose, p.global_pose)),
                   cam=_smooth_time(torch.where(take, start.cam, p.cam)))


def _smooth_time(x: torch.Tensor, kernel: tuple[float, ...] = (1.0, 2.0, 3.0, 2.0, 1.0)) -> torch.Tensor:
    """(B, T, C) -> the same smoothed along T by a normalised ``kernel`` (edges replicated)."""
    b, t, c = x.shape
    k = len(kernel)
    if t < 2:
        return x
    w = x.new_tensor(kernel) / sum(kernel)
    pad = torch.nn.functional.pad(x.transpose(1, 2).reshape(b * c, 1, t), (k // 2, k // 2), mode="replicate")
    return torch.nn.functional.conv1d(pad, w.reshape(1, 1, k)).reshape(b, c, t).transpose(1, 2).contiguous()


def fit_landmarks(rig: LandmarkRig, init: FitParams, target: torch.Tensor, valid: torch.Tensor,
                  config: RefineConfig | None = None, lip_offsets: torch.Tensor | None = None) -> FitResult:
    """Fit ``init`` (the network's parameters, ``(B, T, k)``: B independent sequences of T consecutive frames) to
    ``target (B, T, 68, 2)`` landmarks in the camera's NDC on frames ``valid (B, T)`` (see the module docstring).
    ``lip_offsets (B, T, 68, 3)``: fixed canonical-frame landmark offsets (:func:`lip_landmark_offsets`).
    Frames not valid keep ``init`` exactly. Runs without autograd's history outside."""
    cfg = config or RefineConfig()
    init = init.map(lambda x: x.detach().float())
    target = target.detach().float()
    valid = valid.bool() & torch.isfinite(target).all(-1).all(-1)
    target = torch.where(valid[..., None, None], target, torch.zeros_like(target))
    b, t = init.cam.shape[:2]
    w = _point_weights(cfg, target)
    if not valid.any():
        with torch.no_grad():
            lmk2 = _project(_posed_landmarks(rig, init, lip_offsets), init.cam)[..., :2]
        return FitResult(init, lmk2, valid, 0.0)
    with torch.no_grad():
        start = _rigid_start(rig, init, target, valid, lip_offsets, w)
    s0 = start.cam[..., :1].clamp_min(1e-6)
    vf = valid.float()
    n_valid = vf.sum().clamp_min(1.0)
    # the variables, scaled so that a unit step moves the landmarks by comparable amounts
    d_pose = torch.zeros_like(start.global_pose, requires_grad=True)
    d_logs = torch.zeros_like(s0, requires_grad=True)
    d_t = torch.zeros_like(start.cam[..., 1:], requires_grad=True)  # NDC units
    d_exp = torch.zeros_like(start.expression, requires_grad=True)
    d_jaw = torch.zeros_like(start.jaw, requires_grad=True)
    d_shape = torch.zeros(b, 1, start.shape.shape[-1], dtype=start.shape.dtype, device=start.shape.device,
                          requires_grad=True)
    variables = [d_pose, d_logs, d_t, d_exp, d_jaw, d_shape]

    def params() -> FitParams:
        s = s0 * torch.exp(d_logs)
        cam = torch.cat([s, start.cam[..., 1:] + d_t / s0], -1)
        return FitParams(shape=start.shape + _COEFF_STEP * d_shape, expression=start.expression + _COEFF_STEP * d_exp,
                         jaw=start.jaw + d_jaw,
                         global_pose=start.global_pose + d_pose, cam=cam)

    def objective() -> torch.Tensor:
        p = params()
        proj = _project(_posed_landmarks(rig, p, lip_offsets), p.cam)
        data = (_data_terms(proj, target, w, cfg) * vf).sum() / n_valid / cfg.sigma ** 2
        prior = (cfg.w_expression * _COEFF_STEP ** 2 * d_exp.square().sum(-1) + cfg.w_jaw * d_jaw.square().sum(-1)
                 ).mul(vf).sum() / n_valid + cfg.w_shape * _COEFF_STEP ** 2 * d_shape.square().sum() / b
        loss = data + prior
        if t >= 3 and cfg.w_smooth > 0:
            acc = proj[:, 2:] - 2 * proj[:, 1:-1] + proj[:, :-2]
            loss = loss + cfg.w_smooth * acc.square().sum(-1).mean() / cfg.sigma ** 2
        return loss

    opt = torch.optim.LBFGS(variables, lr=1.0, max_iter=cfg.iterations, max_eval=cfg.max_eval,
                            history_size=10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = objective()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        fitted = params()
        loss = float(objective())
        ok = valid & torch.stack([torch.isfinite(getattr(fitted, f.name)).all(-1) for f in fields(fitted)]).all(0)
        ok = ok & (fitted.cam[..., 0] > 0)
        keep = ok[..., None]
        out = FitParams(**{f.name: torch.where(keep, getattr(fitted, f.name), getattr(init, f.name))
                           for f in fields(fitted)})
        lmk2 = _project(_posed_landmarks(rig, out, lip_offsets), out.cam)[..., :2]
    return FitResult(out, lmk2, ok, loss)

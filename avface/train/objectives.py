"""Each training stage's objective: one function per stage, the weighted loss terms it minimises.

Every objective is ``objective(model, batch, outputs, ctx=None) -> {term: scalar tensor, ..., "total": sum}``:
``outputs = model(batch, render=renders_in_forward(model, stage))`` for ``model`` set to the stage's model depth
(``STAGE_TABLE[stage].depth``); ``ctx`` (:class:`ObjectiveInputs`, the training step's context) carries what
pretraining and the occlusion fine-tune need beside the model. A term whose inputs are missing (no renderer, no
pseudo-GT normals, no VGG19 / face-recognition weights) is absent, never a fake zero. The terms' names are the
``train/<term>`` metrics; their weights are ``AVFaceConfig.losses`` (:class:`avface.models.config.LossWeights`)
and the stage's ``StageConfig``.

- pretrain: :func:`pretrain_objective`: ``param_<group>``, ``landmark``, ``vertices_mm``, ``lip_vertices_mm``;
- pretrain and coarse, with ``LossWeights.dense_landmarks > 0``: ``dense_landmarks`` (:func:`dense_landmark_term`);
- coarse: :func:`coarse_objective`: ``landmark``, ``eye``, ``mouth_closure``, ``lip_corner``, ``reg_shape``,
  ``reg_expression``, ``reg_albedo``, ``reg_light``, ``shape_consistency``, ``photometric``, ``identity``;
- lip: :func:`lip_objective`: the coarse terms in the re-fitted frame + ``normals_lip``, ``lip_smooth``;
- detail: :func:`detail_objective`: ``photometric_detail``, ``normals``, ``mrf``, ``symmetry``, ``displacement``;
- occlusion: :func:`occlusion_objective`: the coarse terms + ``clean_consistency``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

import torch

from avface.face_model import FaceModel
from avface.losses import landmarks as L
from avface.losses import maps as M
from avface.losses.geometry import uniform_laplacian_loss, vertex_distance_loss
from avface.losses.landmarks import landmark_loss
from avface.losses.params import parameter_loss
from avface.losses.reduction import masked_mean
from avface.metrics.ground_truth import flat_frames, ground_truth_vertices
from avface.models.avface import AVFace
from avface.models.inputs import Batch
from avface.models.outputs import AVFaceOutput
from avface.models.stages import STAGE_TABLE, Stage
from avface.render.cameras import orthographic_project, pixels_to_ndc

__all__ = ["ObjectiveInputs", "Objective", "OBJECTIVES", "objective", "renders_in_forward", "pretrain_objective",
           "coarse_objective", "lip_objective", "detail_objective", "occlusion_objective", "pretrain_losses",
           "clean_consistency_loss"]

Terms = dict[str, torch.Tensor]


class ObjectiveInputs(Protocol):
    """What pretraining and the occlusion fine-tune need beside the model (``avface.train.loop.StepContext``)."""

    scales: dict[str, torch.Tensor]  # pretraining parameter spreads, name -> (k,)
    face_model: FaceModel
    lip_ids: torch.Tensor  # (L,) long, the face model's lip vertices
    landmark_weight: float
    fit_lip_detail: bool
    lip_vertex_weight: float
    n_param_expression: int | None
    teacher: AVFace | None  # the stage's starting model, frozen
    clean_consistency: float


Objective = Callable[[AVFace, Batch, AVFaceOutput, "ObjectiveInputs | None"], Terms]


def _total(terms: Terms, like: torch.Tensor) -> Terms:
    terms["total"] = sum(terms.values()) if terms else like.new_zeros(())
    return terms


def _visible(batch: Batch) -> torch.Tensor | None:
    """(B, T, 1, S, S) 1 where no synthetic occluder covers the pixel; None without an occlusion mask."""
    occ = batch.occlusion_mask
    return None if occ is None else (1.0 - occ.to(batch.images.dtype))[:, :, None]


# ---------------------------------------------------------------------------------------------------- stages
def _coarse_terms(model: AVFace, batch: Batch, outputs: AVFaceOutput) -> Terms:
    """L_coarse (DECA + EMOCA's lip terms), weighted: landmarks, eyes, mouth closure, lip corners, DECA's
    coefficient regularisers, shape consistency, photometric and identity (where there is a rendering)."""
    w = model.config.losses
    terms: Terms = {}
    images = batch.images
    h, wd = images.shape[-2:]
    visible = _visible(batch)
    if outputs.landmarks2d is not None:
        gt = pixels_to_ndc(batch.landmarks.to(images.dtype), (h, wd))
        pred, valid = outputs.landmarks2d, batch.landmarks_valid
        terms["landmark"] = w.landmark * L.landmark_loss(pred, gt, valid)
        terms["eye"] = w.eye * L.eye_closure_loss(pred, gt, valid)
        terms["mouth_closure"] = w.lip * L.mouth_closure_loss(pred, gt, valid)
        terms["lip_corner"] = w.lip * L.lip_corner_loss(pred, gt, valid)
    if w.dense_landmarks > 0:
        dense = dense_landmark_term(model, batch, outputs)
        if dense is not None:
            terms["dense_landmarks"] = w.dense_landmarks * dense
    # DECA's batch-summed sum(code**2)/2 at the paper's batch (regularizer_batch_frames), batch invariant
    nreg = float(w.regularizer_batch_frames)
    terms["reg_shape"] = w.reg_shape * nreg * M.coefficient_regularizer(outputs.shape)
    terms["reg_expression"] = w.reg_expression * nreg * M.coefficient_regularizer(outputs.expression)
    terms["reg_albedo"] = w.reg_albedo * nreg * M.coefficient_regularizer(outputs.albedo)
    terms["reg_light"] = w.light * M.light_regularizer(outputs.light)
    terms["shape_consistency"] = w.shape_consistency * M.shape_consistency_loss(outputs.shape, batch.identity)
    if outputs.render_coarse is not None:
        mask = outputs.alpha_coarse if visible is None else outputs.alpha_coarse * visible
        terms["photometric"] = w.photometric * M.photometric_loss(
            flat_frames(outputs.render_coarse), flat_frames(images), flat_frames(mask))
        if model.identity_loss is not None:
            idl = model.identity_loss(flat_frames(outputs.render_coarse), flat_frames(images))
            if idl is not None:
                terms["identity"] = w.identity * idl
    return terms


#: MediaPipe face-mesh points that are the starter model's vertices of the same ids (its template's 468 vertices)
DENSE_POINTS = 468


def dense_landmark_term(model: AVFace, batch: Batch, outputs: AVFaceOutput) -> torch.Tensor | None:
    """The dense 2D landmark loss (``LossWeights.dense_landmarks``): the starter model's vertices 0..467 projected
    by the predicted camera against the detector's first 468 MediaPipe points (``Batch.points``); None where it does
    not apply (no points, another point set, a face model that is not the starter model)."""
    fm = model.face_model
    pts = batch.points
    if (pts is None or outputs.vertices is None or pts.shape[-2] < DENSE_POINTS
            or not str(getattr(fm, "name", "")).startswith("avface-starter")):
        return None
    b, t = pts.shape[:2]
    verts = outputs.vertices[:, :, :DENSE_POINTS].reshape(b * t, DENSE_POINTS, 3)
    pred = orthographic_project(verts, outputs.cam.reshape(b * t, 3))[..., :2].reshape(b, t, DENSE_POINTS, 2)
    target = pixels_to_ndc(pts[..., :DENSE_POINTS, :2].to(pred), tuple(batch.images.shape[-2:]))
    return L.dense_landmark_loss(pred, target, batch.points_valid)


def coarse_objective(model: AVFace, batch: Batch, outputs: AVFaceOutput, ctx: ObjectiveInputs | None = None) -> Terms:
    """The coarse stage (sec. 3.2): L_coarse on E_c and the expression-jaw branch."""
    return _total(_coarse_terms(model, batch, outputs), batch.images)


def lip_objective(model: AVFace, batch: Batch, outputs: AVFaceOutput, ctx: ObjectiveInputs | None = None) -> Terms:
    """The lip stage (eq. 1): L_coarse + lambda_n lip normals (+ NHA's Laplacian smoothness of the offsets), seen
    through the frame re-fitted to the image's rigid landmarks when ``LossWeights.lip_frame`` is "landmarks"
    (``AVFace.refit_frame``, which renders in that frame: the forward pass then does not render)."""
    w = model.config.losses
    if w.lip_frame == "landmarks" and outputs.landmarks3d is not None:
        outputs = model.refit_frame(batch, outputs)
    terms = _coarse_terms(model, batch, outputs)
    images = batch.images
    visible = _visible(batch)
    if batch.normals is not None and outputs.normals_coarse is not None:
        mask = outputs.lip_mask_coarse if visible is None else outputs.lip_mask_coarse * visible
        target = flat_frames(batch.normals.to(images.dtype))
        # the stencil may reach past the lips into the skin, not past the rendered or target face
        defined = (flat_frames(outputs.alpha_coarse) * (target.norm(dim=1, keepdim=True) > 0.5).to(target)).detach()
        if w.lip_normals == "lowpass":
            terms["normals_lip"] = w.normals * M.lowpass_normals_loss(
                flat_frames(outputs.normals_coarse), target, flat_frames(mask), defined)
        else:
            terms["normals_lip"] = w.normals * M.laplacian_normals_loss(
                flat_frames(outputs.normals_coarse), target, flat_frames(mask), defined=defined)
    if w.lip_smooth > 0 and outputs.lip_offsets is not None:
        terms["lip_smooth"] = w.lip_smooth * uniform_laplacian_loss(outputs.lip_offsets, model.lip_ring,
                                                                    model.lip_ring_mask)
    return _total(terms, images)


def detail_objective(model: AVFace, batch: Batch, outputs: AVFaceOutput, ctx: ObjectiveInputs | None = None) -> Terms:
    """The fine stage (eq. 4): photometric on the detailed rendering, Laplacian normals on the face, ID-MRF,
    symmetry of the hidden UV region and the displacement's L1."""
    w = model.config.losses
    terms: Terms = {}
    images = batch.images
    visible = _visible(batch)
    if outputs.displacement is not None:
        mask = outputs.alpha_detail if visible is None else outputs.alpha_detail * visible
        terms["photometric_detail"] = w.detail_photometric * M.photometric_loss(
            flat_frames(outputs.render_detail), flat_frames(images), flat_frames(mask))
        if batch.normals is not None:
            fmask = outputs.face_mask_detail if visible is None else outputs.face_mask_detail * visible
            terms["normals"] = w.normals * M.laplacian_normals_loss(
                flat_frames(outputs.normals_detail), flat_frames(batch.normals.to(images.dtype)), flat_frames(fmask))
        if model.mrf_loss is not None:
            m = flat_frames(mask)
            mrf = model.mrf_loss(flat_frames(outputs.render_detail) * m, flat_frames(images) * m)
            if mrf is not None:
                terms["mrf"] = w.mrf * mrf
        # Both on the network's normalised output D / displacement_scale (in [-1, 1]): on D in metres
        # (|D| <= 0.01) they were 1e-7..1e-6 against terms of order 1 and did nothing.
        d = flat_frames(outputs.displacement) / model.config.detail.displacement_scale
        um = flat_frames(outputs.uv_mask)
        nonvis = M.nonvisible_region(flat_frames(outputs.uv_visible), um)
        terms["symmetry"] = w.symmetry * M.symmetry_loss(d, nonvis, um)
        terms["displacement"] = w.displacement * M.displacement_l1(d, um)
    return _total(terms, images)


def occlusion_objective(model: AVFace, batch: Batch, outputs: AVFaceOutput,
                        ctx: ObjectiveInputs | None = None) -> Terms:
    """The occlusion fine-tune: L_coarse + ``ctx.clean_consistency`` x :func:`clean_consistency_loss` against the
    frozen ``ctx.teacher`` (absent without a teacher or with weight 0)."""
    terms = coarse_objective(model, batch, outputs)
    if ctx is not None and ctx.teacher is not None and ctx.clean_consistency > 0:
        terms["clean_consistency"] = ctx.clean_consistency * clean_consistency_loss(model, outputs, ctx.teacher,
                                                                                    batch)
        terms["total"] = terms["total"] + terms["clean_consistency"]
    return terms


def pretrain_objective(model: AVFace, batch: Batch, outputs: AVFaceOutput, ctx: ObjectiveInputs | None = None) -> Terms:
    """Pretraining (the open stand-in for DECA's encoder): :func:`pretrain_losses` with the step's settings."""
    if ctx is None:
        raise ValueError("the pretraining objective needs the parameter spreads and the face model (ctx)")
    terms = pretrain_losses(outputs, batch, ctx.scales, ctx.face_model, ctx.lip_ids, ctx.landmark_weight,
                            ctx.fit_lip_detail, ctx.lip_vertex_weight, ctx.n_param_expression)
    weight = model.config.losses.dense_landmarks
    dense = dense_landmark_term(model, batch, outputs) if weight > 0 else None
    if dense is not None:
        terms["dense_landmarks"] = weight * dense
        terms["total"] = terms["total"] + terms["dense_landmarks"]
    return terms


#: the objective of each stage
OBJECTIVES: dict[Stage, Objective] = {
    Stage.PRETRAIN: pretrain_objective,
    Stage.COARSE: coarse_objective,
    Stage.LIP: lip_objective,
    Stage.DETAIL: detail_objective,
    Stage.OCCLUSION: occlusion_objective,
}


def objective(stage: str) -> Objective:
    """The objective function of ``stage`` (a :class:`Stage` or its name)."""
    return OBJECTIVES[Stage(stage)]


def renders_in_forward(model: AVFace, stage: str) -> bool:
    """Whether the training step's forward pass renders the coarse mesh: not for a supervised stage (no
    image-space term: half the step time) nor for the lip stage in the re-fitted frame (its objective renders in
    that frame itself, so the mesh is not rendered twice)."""
    if STAGE_TABLE[Stage(stage)].supervised:
        return False
    return not (Stage(stage) is Stage.LIP and model.config.losses.lip_frame == "landmarks")


# ---------------------------------------------------------------------------------------------------- terms
def pretrain_losses(out, batch, scales: dict[str, torch.Tensor], face_model: FaceModel | None = None,
                    lip_ids: torch.Tensor | None = None, landmark_weight: float = 0.0,
                    fit_lip_detail: bool = False, lip_vertex_weight: float = 1.0,
                    n_param_expression: int | None = None) -> Terms:
    """The pretraining stage's supervised terms: each predicted parameter group against the synthetic ground
    truth, divided by its spread over the corpus (``scales``: name -> (k,) std; albedo and light are per clip in
    the targets and per frame in the prediction), and with ``face_model`` the mean vertex distance (mm) of the
    predicted identity + expression + jaw under the true pose, over all vertices and over ``lip_ids``; with
    ``landmark_weight`` DECA's weighted 2D landmark loss against the ground-truth landmarks. ``lip_vertex_weight``
    weighs the lip term; ``n_param_expression``: only the first that many expression coefficients in the parameter
    term (None: all). Targets with a ``valid`` mask (fitted pseudo-ground truth) supervise only those frames in the
    parameter and vertex terms."""
    tg = batch.targets
    t = batch.window
    pred = {"shape": out.shape, "expression": out.expression, "jaw": out.jaw, "global_pose": out.global_pose,
            "cam": out.cam}
    target = {"shape": tg.shape, "expression": tg.expression, "jaw": tg.jaw, "global_pose": tg.global_pose,
              "cam": tg.cam}
    if tg.albedo is not None:
        pred["albedo"] = out.albedo
        target["albedo"] = tg.albedo[:, None].expand(-1, t, -1)
    if tg.light is not None:
        pred["light"] = out.light.reshape(*out.light.shape[:2], -1)
        target["light"] = tg.light.reshape(tg.light.shape[0], 1, -1).expand(-1, t, -1)
    scale = {k: scales[k].to(pred[k]) for k in pred}
    weights = None
    if n_param_expression is not None:
        n = n_param_expression
        pred["expression"], target["expression"] = pred["expression"][..., :n], target["expression"][..., :n]
        scale["expression"] = scale["expression"][..., :n]
        weights = {"expression": 0.0} if n == 0 else None  # no coefficient left: the group is not scored
    # fitted pseudo-ground truth: only the frames fitted well supervise (None: every frame, exact ground truth)
    mask = tg.valid
    terms = parameter_loss(pred, {k: v.to(pred[k]) for k, v in target.items()}, scale, weights, mask=mask)
    terms = {f"param_{k}": v for k, v in terms.items()}
    if landmark_weight > 0 and out.landmarks2d is not None:
        # the 2D reprojection that NME measures: pose and camera errors weighted by what they do to the image
        gt = pixels_to_ndc(batch.landmarks.to(out.landmarks2d), tuple(batch.images.shape[-2:]))
        terms["landmark"] = landmark_weight * landmark_loss(out.landmarks2d, gt, batch.landmarks_valid)
    if face_model is not None:
        # The geometry the parameters make, in mm: weighs each coefficient by how much it moves the surface
        # (the std-normalised terms weigh a coefficient that barely moves a vertex like one that opens the jaw).
        # The true pose is used, so these terms train identity and expression, not the camera. The target has the
        # lips' detail only with ``fit_lip_detail`` (the exact mesh, reached as far as the expression space allows).
        gt_v = ground_truth_vertices(face_model, tg, lip_detail=fit_lip_detail)
        pred_v = ground_truth_vertices(face_model, tg, expression=flat_frames(out.expression), jaw=flat_frames(out.jaw),
                                       shape=flat_frames(out.shape))
        dist = (pred_v - gt_v).norm(dim=-1) * 1000.0  # (N, V) mm
        frames = None if mask is None else flat_frames(mask)[:, None]
        terms["vertices_mm"] = masked_mean(dist, frames)
        terms["lip_vertices_mm"] = lip_vertex_weight * masked_mean(dist[:, lip_ids], frames)
    terms["total"] = sum(terms.values())
    return terms


def clean_consistency_loss(model: AVFace, out: AVFaceOutput, teacher: AVFace, batch: Batch) -> torch.Tensor:
    """Mean vertex distance (mm) between the model's face on ``batch`` (``out``) and the frozen ``teacher``'s face
    on the same windows without the occluder (``batch.clean_images``): shape, expression and jaw, no head pose.

    Why: the occluded copies carry the clean frames' landmarks, but the landmark and photometric terms see the
    mouth's 3D shape only through a few pixels; the clean twin says what the face under the hand is. The teacher
    (the stage's starting weights) sees no occluder, so the term asks the network to be as good under occlusion
    as it already is without one, and on clean windows it holds the network where it started. The pose is left
    to the landmark term (the 3D metrics align it away)."""
    if batch.clean_images is None:
        raise ValueError("the clean-twin consistency needs Batch.clean_images (BatchStream(clean_twins=True))")
    with torch.no_grad():
        ref = teacher(replace(batch, images=batch.clean_images, occlusion_mask=None), render=False)
        target = teacher.canonical_vertices(ref)
    return vertex_distance_loss(model.canonical_vertices(out), target)

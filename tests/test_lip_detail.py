"""Lip detail: the synthetic lips' motion outside the mouth rig's expression bases and jaw (FaceModel(lip_detail=)),
from the generator through the sidecar and the shards into the targets and the true mesh."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avface.data.batch import samples_to_batch
from avface.data.sample import pack_gt_params, unpack_gt_params
from avface.face_model import FaceModel, load_face_model, vertices2landmarks
from avface.face_model.lbs import batch_rodrigues
from avface.face_model.lip_detail import _JAW_STEP_RAD, LIP_DETAIL_NAMES
from avface.face_model.starter import EXPRESSION_NAMES
from avface.metrics import flat_frames, ground_truth_vertices, vertex_errors
from avface.models.inputs import ParamTargets


@pytest.fixture(scope="module")
def fm() -> FaceModel:
    return FaceModel(load_face_model(None)).double()


def _lips(fm: FaceModel) -> torch.Tensor:
    return torch.as_tensor(fm.regions["lips"]).long()


def test_basis_is_outside_the_rigs_expression_bases_and_jaw(fm):
    lips = _lips(fm)
    detail = torch.eye(len(LIP_DETAIL_NAMES), dtype=torch.float64)  # one unit of each channel
    zero = torch.zeros(len(detail), 3, dtype=torch.float64)
    d = (fm(jaw_pose=zero, lip_detail=detail).vertices - fm(jaw_pose=zero).vertices)  # (C, V, 3)
    # only the lips move, each channel by 1 mm RMS over them
    assert d[:, [i for i in range(fm.num_vertices) if i not in set(lips.tolist())]].abs().max() == 0
    rms_mm = d[:, lips].pow(2).sum(-1).mean(-1).sqrt() * 1000
    np.testing.assert_allclose(rms_mm.numpy(), 1.0, rtol=1e-6)
    # orthogonal over the lips to every semantic expression direction, the jaw's motion and each other
    fields = d[:, lips].reshape(len(detail), -1)
    n_sem = len(EXPRESSION_NAMES)
    expr = fm.shapedirs[lips, :, fm.n_shape:fm.n_shape + n_sem].reshape(-1, n_sem)
    expr = expr[:, expr.norm(dim=0) > 1e-6]  # the bases that move the lips (not the blinks and brows)
    assert expr.shape[1] >= 8
    rest = fm(jaw_pose=zero[:1]).vertices[0, lips]

    def jaw_motion(opening: float) -> torch.Tensor:  # (K*3, 1) lips' displacement per radian of opening
        jaw = torch.zeros(1, 3, dtype=torch.float64)
        jaw[0, 0] = opening
        return ((fm(jaw_pose=jaw).vertices[0, lips] - rest) / opening).reshape(-1, 1)

    def cos(span: torch.Tensor) -> torch.Tensor:
        return (fields @ span) / fields.norm(dim=1, keepdim=True) / span.norm(dim=0, keepdim=True)

    assert cos(expr).abs().max() < 1e-9
    assert (cos(fields.T) - torch.eye(len(fields), dtype=torch.float64)).abs().max() < 1e-9
    assert cos(jaw_motion(_JAW_STEP_RAD)).abs().max() < 1e-9
    # the jaw is not linear: over the corpus's openings (up to 0.3 rad) its lip motion stays nearly orthogonal
    assert max(cos(jaw_motion(o)).abs().max() for o in (1e-4, 0.1, 0.2, 0.3)) < 0.03  # 0.022 at 0.3
    # so the best fit of the semantic expressions and the jaw to a lip-detail face leaves the detail in place
    target = fields[0] + 0.5 * fields[1]
    a = torch.cat([expr, jaw_motion(0.1), jaw_motion(0.25)], 1)
    fit = a @ torch.linalg.lstsq(a, target[:, None]).solution
    assert (target - fit[:, 0]).norm() > 0.95 * target.norm()  # 0.957: the two jaw secants take a little


def test_lip_detail_rotates_with_the_head_and_moves_the_landmarks(fm):
    lips = _lips(fm)
    g = torch.Generator().manual_seed(3)
    expr = 0.5 * torch.randn(2, fm.n_expression, generator=g, dtype=torch.float64)
    jaw = torch.tensor([[0.2, 0.0, 0.0], [0.05, 0.01, 0.0]], dtype=torch.float64)
    pose = torch.tensor([[0.1, 0.5, -0.2], [0.0, 0.0, 0.0]], dtype=torch.float64)
    detail = torch.tensor([[1.0, -0.5, 2.0], [0.0, 1.5, 0.0]], dtype=torch.float64)
    base = fm(expression=expr, jaw_pose=jaw, global_pose=pose)
    out = fm(expression=expr, jaw_pose=jaw, global_pose=pose, lip_detail=detail)
    canon = fm(expression=expr, jaw_pose=jaw, lip_detail=detail).vertices - fm(expression=expr, jaw_pose=jaw).vertices
    expected = torch.einsum("bij,bkj->bki", batch_rodrigues(pose), canon)  # the canonical offsets, rotated
    torch.testing.assert_close(out.vertices - base.vertices, expected, atol=1e-12, rtol=0)
    assert (out.vertices - base.vertices)[:, lips].norm(dim=-1).max() > 1e-3
    lmk = vertices2landmarks(out.vertices, fm.faces, fm.lmk68_faces[None].expand(2, -1),
                             fm.lmk68_bary[None].expand(2, -1, -1))
    torch.testing.assert_close(out.landmarks68, lmk)
    assert (out.landmarks68 - base.landmarks68)[:, 48:].norm(dim=-1).max() > 1e-4  # the mouth landmarks move
    torch.testing.assert_close(out.landmarks68[:, :17], base.landmarks68[:, :17])  # the jaw contour does not
    torch.testing.assert_close(fm(expression=expr, lip_detail=torch.zeros(2, 3, dtype=torch.float64)).vertices,
                               fm(expression=expr).vertices)
    with pytest.raises(ValueError, match="lip_detail must be"):
        fm(expression=expr, lip_detail=torch.zeros(2, 4, dtype=torch.float64))


def _targets(t: int = 4, b: int = 2, seed: int = 0) -> ParamTargets:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, k=0.1: k * torch.randn(b, t, *s, generator=g)  # noqa: E731
    return ParamTargets(shape=r(100, k=0.5), expression=r(50, k=0.3), jaw=r(3).abs(), global_pose=r(3),
                        neck_pose=torch.zeros(b, t, 3), eye_pose=r(6), cam=r(3), lip_detail=r(3, k=1.0))


def test_the_true_mesh_has_the_detail_and_a_model_made_face_has_not():
    fm = FaceModel(load_face_model(None))
    lips = _lips(fm)
    tg = _targets()
    true = ground_truth_vertices(fm, tg)
    params_only = ground_truth_vertices(fm, tg, lip_detail=False)
    made = ground_truth_vertices(fm, tg, expression=flat_frames(tg.expression), jaw=flat_frames(tg.jaw))
    torch.testing.assert_close(made, params_only)  # the true parameters, replaced: no detail
    _, lip_err = vertex_errors(params_only, true, lips)
    assert lip_err.min() > 0.1  # mm: exact parameters do not make the true lips
    with_detail = fm(**{"shape": flat_frames(tg.shape), "expression": flat_frames(tg.expression),
                        "global_pose": flat_frames(tg.global_pose), "jaw_pose": flat_frames(tg.jaw),
                        "eye_pose": flat_frames(tg.eye_pose), "lip_detail": flat_frames(tg.lip_detail)}).vertices
    torch.testing.assert_close(true, with_detail)


def test_lip_detail_round_trips_through_the_shard_parameters_and_the_batch():
    t = 16
    rng = np.random.default_rng(0)
    gt = {"shape": rng.normal(size=(t, 100)), "expression": rng.normal(size=(t, 50)), "jaw": rng.normal(size=(t, 3)),
          "global_pose": rng.normal(size=(t, 3)), "neck_pose": rng.normal(size=(t, 3)),
          "eye_pose": rng.normal(size=(t, 6)), "cam": rng.normal(size=(t, 3)), "lip_detail": rng.normal(size=(t, 3)),
          "albedo": rng.normal(size=(50,))}
    packed, layout = pack_gt_params(gt, t)
    assert packed.shape == (t, 100 + 50 + 3 + 3 + 3 + 6 + 3 + 3 + 50) and layout["lip_detail"][1] - \
        layout["lip_detail"][0] == 3
    back = unpack_gt_params(packed, layout)
    for k, v in gt.items():
        np.testing.assert_allclose(back[k], v, rtol=1e-6)
    without = {k: v for k, v in gt.items() if k != "lip_detail"}
    assert "lip_detail" not in pack_gt_params(without, t)[1]

    def sample(g: dict) -> dict:
        return {"key": "k", "frames": np.zeros((t, 8, 8, 3), np.uint8),
                "audio_features": np.ones((t, 16, 80), np.float32), "landmarks": np.zeros((t, 68, 2), np.float32),
                "landmarks_valid": np.ones(t, bool), "meta": {"key": "k"},
                "gt": unpack_gt_params(*pack_gt_params(g, t))}

    batch = samples_to_batch([sample(gt), sample(gt)])
    assert batch.targets.lip_detail.shape == (2, t, 3)
    np.testing.assert_allclose(batch.targets.lip_detail[1].numpy(), gt["lip_detail"], rtol=1e-6)
    assert samples_to_batch([sample(gt), sample(without)]).targets.lip_detail is None  # one lacks it: absent


def test_the_generator_drives_the_detail_by_the_lip_articulation():
    from avface.speech.espeak import Phoneme
    from avface.synth.config import FaceConfig, SpeechConfig
    from avface.synth.face import MouthRig, face_sequence, sample_identity
    from avface.synth.render import FaceContext

    ctx = FaceContext.get(None, None)
    phonemes = [Phoneme("m", 0.1, 0.2, "moo"), Phoneme("u:", 0.2, 0.45, "moo"), Phoneme("i:", 0.5, 0.7, "me")]
    identity = sample_identity(np.random.default_rng(1), ctx.data, FaceConfig(), SpeechConfig())
    cfg = FaceConfig(lip_detail_mm=2.0)
    seq = face_sequence(np.random.default_rng(2), identity, phonemes, 20, 25.0, MouthRig(ctx.data), cfg)
    np.testing.assert_allclose(seq.lip_detail, 2.0 * seq.articulation[:, [1, 3, 2]], rtol=1e-6)
    assert seq.lip_detail[:, 0].max() > 1.0  # the /u:/ protrudes the lips
    off = face_sequence(np.random.default_rng(2), identity, phonemes, 20, 25.0, MouthRig(ctx.data),
                        FaceConfig(lip_detail_mm=0.0))
    assert off.lip_detail is None
    np.testing.assert_array_equal(off.expression, seq.expression)  # the detail draws no random numbers
    posed, plain = ctx.pose(seq), ctx.pose(off)
    moved = np.linalg.norm(posed.vertices - plain.vertices, axis=-1)
    lips = ctx.data.regions["lips"]
    assert moved[:, lips].max() > 1e-3 and np.delete(moved, lips, axis=1).max() == 0

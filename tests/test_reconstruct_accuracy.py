"""The product's promise on data with exact ground truth: ``avface reconstruct`` of a held-out synthetic clip with
a trained tiny checkpoint beats the constant-expression baseline (template + the training set's mean expression
and jaw) in 3D vertex error and lip error, against the clip's ground-truth sidecar."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avface.inference import Reconstructor
from avface.inference.reconstruct import ReconstructConfig
from avface.metrics import vertex_errors
from avface.trained.checkpoints import load_trained

pytestmark = [pytest.mark.slow]  # its model is trained in-process (conftest tiny_checkpoint)


def test_held_out_clip_beats_the_constant_expression_baseline(train_shards, tiny_checkpoint):
    corpus = Path(train_shards).parent / "corpus" / "voxceleb2"
    clips = sorted((corpus / "test" / "mp4").rglob("*.mp4"))  # held-out speakers (the test split)
    assert clips
    trained = load_trained(tiny_checkpoint)
    fm = trained.face_model
    stats = trained.meta["extras"]["statistics"]
    lips = torch.as_tensor(fm.region("lips")).long()
    ours, const = [], []
    for mp4 in clips:
        rel = mp4.relative_to(corpus / "test" / "mp4")
        with np.load(corpus / "gt" / "test" / rel.with_suffix(".npz"), allow_pickle=False) as z:
            gt = {k: z[k] for k in ("vertices", "global_pose", "neck_pose", "eye_pose")}
        rec = Reconstructor(tiny_checkpoint, "cpu", ReconstructConfig(crop="none", progress=False)).run(mp4)
        assert rec.num_frames == len(gt["vertices"])
        with torch.no_grad():
            pred = torch.as_tensor(rec.vertices(fm))
            n = len(pred)
            f = {k: torch.as_tensor(gt[k], dtype=torch.float32) for k in ("global_pose", "neck_pose", "eye_pose")}
            baseline = fm(shape=torch.zeros(n, fm.n_shape),
                          expression=torch.tensor(stats["expression"]["mean"]).float()[None].expand(n, -1),
                          jaw_pose=torch.tensor(stats["jaw"]["mean"]).float()[None].expand(n, -1),
                          **f).vertices
        target = torch.as_tensor(gt["vertices"], dtype=torch.float32)
        ours.append([e.mean().item() for e in vertex_errors(pred, target, lips)])
        const.append([e.mean().item() for e in vertex_errors(baseline, target, lips)])
    (v3d, lip), (c_v3d, c_lip) = np.mean(ours, 0), np.mean(const, 0)
    assert v3d < c_v3d, (v3d, c_v3d)
    assert lip < c_lip, (lip, c_lip)

"""End to end: the synthetic corpus (pipelines/synthesize.py size=tiny) -> preprocess -> shards with GT landmarks."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avface.data.sample import decode_sample

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_synthetic_corpus_to_shards(tmp_path):
    import ray
    import webdataset as wds

    if ray.is_initialized():
        ray.shutdown()
    corpus = tmp_path / "corpus"
    r = subprocess.run([sys.executable, "pipelines/synthesize.py", "size=tiny", f"out={corpus}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    roots = [p.parent.parent for p in corpus.rglob("mp4") if p.is_dir() and p.parent.name in ("dev", "test")]
    assert roots, f"no VoxCeleb2 layout under {corpus}"
    out = tmp_path / "shards"
    r = subprocess.run([sys.executable, "pipelines/preprocess.py", f"data.root={roots[0]}", f"out={out}",
                        "ray.num_cpus=1", "ray.task_memory_mb=300", "normals.source=auto", "progress=false"],
                       cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] > 0 and summary["failures"] == 0, summary
    tars = sorted(str(p) for p in out.glob("*.tar"))
    masks_checked = 0
    for s in wds.WebDataset(tars, shardshuffle=False):
        d = decode_sample(s)
        assert d["meta"]["landmark_source"] == "gt" and d["landmarks_valid"].all()
        assert d["frames"].shape[1:3] == (224, 224)
        if "occlusion_mask" in d and not d["meta"]["occluded"]:
            # The synthetic clip's own hand mask (sidecar, uint8 soft edges) reaches the shard unchanged.
            m = d["meta"]
            sidecar = np.load(next(corpus.rglob(f"gt/*/{m['identity']}/{m['ytid']}/{m['utterance']}.npz")))
            expected = sidecar["occlusion_mask"][m["source_indices"]]
            assert np.abs(d["occlusion_mask"].astype(int) - expected.astype(int)).max() <= 1
            masks_checked += int(expected.any())
    assert masks_checked > 0, "the tiny corpus has an occluded clip: its mask must be in the shards"

    # The shards feed the model as they are: a batch of real shard samples through every AVFace stage.
    import dataclasses

    import torch

    from avface.data.batch import samples_to_batch
    from avface.face_model import FaceModel, load_face_model
    from avface.models import AVFaceConfig
    from avface.models.avface import AVFace
    from avface.train.objectives import objective

    samples = [decode_sample(s) for s in wds.WebDataset(tars, shardshuffle=False)][:2]
    cfg = AVFaceConfig.tiny()
    cfg = dataclasses.replace(cfg, audio_dim=samples[0]["audio_features"].shape[-1])
    batch = samples_to_batch(samples, image_size=cfg.image_size)
    assert batch.normals is not None  # normals.source=auto: the renderer's exact normals for synthetic clips
    torch.manual_seed(0)  # initialisation and modality dropout draws: the same run every time
    model = AVFace(cfg, FaceModel(load_face_model(None)))
    for stage in ("coarse", "lip", "detail"):
        model.set_stage(stage)
        model.zero_grad(set_to_none=True)
        losses = objective(stage)(model, batch, model(batch))
        assert torch.isfinite(losses["total"]) and losses["total"] > 0, (stage, losses)
        losses["total"].backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()), stage


"""Staged training of AVFace with Ray Train on the preprocessed shards, tracked in MLflow.

    python pipelines/train.py data.shards=data/shards stage=all model=tiny          # local Ray
    python pipelines/train.py data.shards=data/shards stage=lip init=runs/train/avface/coarse/final.pt
    ray job submit --working-dir . -- python pipelines/train.py data.shards=/shared/shards out=/shared/runs \
        model=paper scaling.num_workers=8 scaling.use_gpu=true scaling.mixed_precision=true

Re-running the same command resumes (same ``name`` and ``out``). Library: ``avface.train``.
"""

from __future__ import annotations

import json
import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from avface.configs import register_all

log = logging.getLogger("avface.train")
register_all()


@hydra.main(version_base=None, config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> dict:
    from avface.train.trainer import run_training

    result = run_training(OmegaConf.to_container(cfg, resolve=True))
    print(json.dumps({k: result[k] for k in ("name", "final", "registered", "chain")}, indent=2))
    return result


if __name__ == "__main__":
    main()

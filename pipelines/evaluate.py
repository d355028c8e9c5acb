"""Evaluation of a trained model the way the paper reports it (Tables 4 and 5, Fig. 6), logged to MLflow.

    python pipelines/evaluate.py model_uri=runs/train/avface/coarse/final.pt faceset.shards=data/shards \
        multiface.root=data/synthetic/multiface out=runs/evaluate
    python pipelines/evaluate.py model_uri=models:/avface@champion faceset.shards=null nightly.enabled=true \
        tracking.tracking_uri=sqlite:////data/mlflow/mlflow.db         # exits 1 on a regression

Every key: avface/evaluate/config.py (EvaluateConfig); `--cfg job` prints them. Library: ``avface.evaluate.job``.
"""

from __future__ import annotations

import json
import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from avface.configs import register_all

log = logging.getLogger("avface.evaluate")
register_all()


@hydra.main(version_base=None, config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from avface.evaluate.job import run_evaluate

    result = run_evaluate(OmegaConf.to_container(cfg, resolve=True))
    print(json.dumps({k: result[k] for k in ("run_id", "results_md", "metrics", "exit_code")}, indent=2))
    if result["exit_code"]:
        sys.exit(result["exit_code"])


if __name__ == "__main__":
    main()

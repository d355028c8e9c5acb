"""The paper's ablation grid (Tables 1-3) as one command, compared run by run in MLflow.

    python pipelines/ablate.py profile=quick out=runs/ablation-quick          # Tables 1 and 3, one seed, < 30 min
    python pipelines/ablate.py out=runs/ablation                              # reduced: every row, 3 seeds, ~1 h
    python pipelines/ablate.py profile=full model=paper use_gpu=true workers_per_row=1 rows_in_parallel=8 \
        corpus.root=/data/voxceleb2 audio.wav2vec2_weights=/models/wav2vec2_base.pt out=/shared/ablation

Re-running the same command resumes (finished rows are skipped). Every key: avface/ablation/config.py
(AblationConfig); `--cfg job` prints them. Library: ``avface.ablation.run.run_ablation``.
"""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig, OmegaConf

from avface.configs import register_all

register_all()


@hydra.main(version_base=None, config_path="../conf", config_name="ablate")
def main(cfg: DictConfig) -> None:
    from avface.ablation.run import run_ablation

    result = run_ablation(OmegaConf.to_container(cfg, resolve=True))
    print(json.dumps({k: result[k] for k in ("parent_run_id", "tracking_uri", "experiment_id", "report",
                                             "not_run")}, indent=2, default=str))


if __name__ == "__main__":
    main()

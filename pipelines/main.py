"""The main job on the embedded default data (`make demo`): face model, turntable, synthetic corpus, shards.

    python pipelines/main.py                                   # -> runs/demo/
    python pipelines/main.py face_model=/path/generic_model.pkl out=runs/flame corpus.enabled=false
    ray job submit --working-dir . -- python pipelines/main.py out=/shared/demo

Re-running resumes: corpus clips and shards already on disk are skipped. Config: avface/demo/config.py
(MainConfig); job: avface/demo/job.py.
"""

from __future__ import annotations

import hydra

from avface.configs import register_all
from avface.demo.config import MainConfig
from avface.demo.job import run_main_job
from avface.utils.config import dataclass_from_dict

register_all()


@hydra.main(config_path="../conf", config_name="main", version_base="1.3")
def main(cfg) -> None:
    paths = run_main_job(dataclass_from_dict(MainConfig, cfg))
    print("\n".join(f"{k:>16}: {v}" for k, v in paths.items()))


if __name__ == "__main__":
    main()

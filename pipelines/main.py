"""The main job (`make demo`): synthetic corpus -> shards -> every training stage -> evaluation -> a reconstructed
held-out clip -> a report page.

    python pipelines/main.py                     # about 15-20 minutes on 2 CPU cores -> runs/demo/report.html
    python pipelines/main.py size=tiny out=runs/demo_tiny     # the CI-sized run (a couple of minutes)
    python pipelines/main.py face_model=/path/generic_model.pkl out=runs/flame
    ray job submit --working-dir . -- python pipelines/main.py out=/shared/demo

Re-running resumes (finished steps are skipped). The trained model goes to runs/train/demo/ and is registered in
runs/train/mlflow.db, where `avface reconstruct` finds it by default. Config: avface/demo/config.py (MainConfig);
job: avface/demo/job.py. Training runs through avface.train.trainer.run_training, passed in from here (the demo
package sits beside the training package and does not import it).
"""

from __future__ import annotations

import hydra

from avface.configs import register_all
from avface.demo.config import MainConfig
from avface.demo.job import run_main_job
from avface.train.trainer import run_training
from avface.utils.config import dataclass_from_dict

register_all()


@hydra.main(config_path="../conf", config_name="main", version_base="1.3")
def main(cfg) -> None:
    run_main_job(dataclass_from_dict(MainConfig, cfg), train=run_training)


if __name__ == "__main__":
    main()

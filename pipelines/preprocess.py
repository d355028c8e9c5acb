"""Preprocess VoxCeleb2 (or the synthetic corpus in its layout) into sharded WebDataset tars with Ray.

    python pipelines/preprocess.py data.root=/data/voxceleb2 out=/data/shards              # local Ray
    python pipelines/preprocess.py data.root=... out=... audio.kind=phones shards.max_samples=256
    RAY_AUTH_MODE=disabled ray start --head --dashboard-host 127.0.0.1                     # a cluster
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python pipelines/preprocess.py data.root=/shared/voxceleb2 out=/shared/shards

Under ``ray job submit`` (``RAY_ADDRESS`` set) the job joins the cluster; ``data.root`` and ``out`` must then be
paths every node can read and write (a shared file system). Re-running the same command resumes: finished shards
are skipped, the result is the same set of samples as one clean run. Exit status 0 when every shard was written
(clips that could not be used are in ``<out>/failures.parquet``), 1 when some shard task failed after its retries
(re-run to finish it). See avface/data/preprocess.py for the output layout and avface/data/sample.py for the
sample schema, avface/data/config.py (PreprocessConfig) for every key.
"""

from __future__ import annotations

import json
import logging
import sys

import hydra

from avface.configs import register_all
from avface.data.config import PreprocessConfig
from avface.data.preprocess import run_preprocess
from avface.utils.config import dataclass_from_dict

log = logging.getLogger("avface.preprocess")
register_all()


@hydra.main(config_path="../conf", config_name="preprocess", version_base="1.3")
def main(cfg) -> None:
    summary = run_preprocess(dataclass_from_dict(PreprocessConfig, cfg))
    print(json.dumps({k: v for k, v in summary.items() if k != "shards"}, indent=1))
    if summary["shards_failed"]:
        log.error("%d shard(s) failed: re-run the same command to resume", len(summary["shards_failed"]))
        sys.exit(1)


if __name__ == "__main__":
    main()

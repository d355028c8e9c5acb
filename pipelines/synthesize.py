"""Generate the synthetic talking-head corpus (VoxCeleb2 and Multiface layouts, exact 3D ground truth).

    python pipelines/synthesize.py out=/tmp/corpus size=tiny            # seconds: 4 clips + 1 Multiface sentence
    python pipelines/synthesize.py out=data/synth size=large seed=1 occlusion_share=0.3
    python pipelines/synthesize.py out=data/synth size=small face.face_model=/models/generic_model.pkl \
        face.landmark_embedding=/models/landmark_embedding.npy
    RAY_ADDRESS=... python pipelines/synthesize.py ...                  # on a cluster (one Ray task per clip)

Re-running with the same config skips what is already on disk. Library: ``avface.synth``; layout and sidecar
keys: ``avface/synth/README.md``; every key: ``avface/synth/config.py`` (SynthesizeConfig).
"""

from __future__ import annotations

import json
import logging

import hydra

from avface.configs import register_all
from avface.synth.config import SynthesizeConfig
from avface.synth.corpus import synthesize_corpus
from avface.utils.config import dataclass_from_dict

log = logging.getLogger("avface.synthesize")
register_all()


@hydra.main(config_path="../conf", config_name="synthesize", version_base="1.3")
def main(cfg) -> dict:
    config = dataclass_from_dict(SynthesizeConfig, cfg)
    summary = synthesize_corpus(config)
    summary = {k: v for k, v in summary.items() if k != "config"}
    log.info("synthesized corpus in %s: %s", config.out, json.dumps(summary))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()

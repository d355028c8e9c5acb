"""Occlude the face in a video with a synthetic moving hand (AVFace sec. 3.4; library: `occlusion_synth`).

    python pipelines/occlude.py                                   # demo: astronaut + camera shake -> runs/occlude/
    python pipelines/occlude.py input=clip.mp4 boxes=boxes.json out=runs/clip seed=3
    python pipelines/occlude.py input=frames_dir/ boxes=boxes.npy write=png occlusion.motion.enter=true
    python pipelines/occlude.py occlusion.hand.source=folder occlusion.hand.folder=/data/hands_rgba

Config: occlusion_synth/config.py (OccludeConfig); what it writes: occlusion_synth/job.py.
"""

from __future__ import annotations

import hydra

from avface.configs import register_all
from avface.utils.config import dataclass_from_dict
from occlusion_synth.config import OccludeConfig
from occlusion_synth.job import run_occlude

register_all()


@hydra.main(config_path="../conf", config_name="occlude", version_base="1.3")
def main(cfg) -> None:
    run_occlude(dataclass_from_dict(OccludeConfig, cfg))


if __name__ == "__main__":
    main()

"""The main job on the embedded default data.

Today: build (or load) the face model, save it, and render a turntable of it to an mp4 and a PNG contact sheet.

    python pipelines/main.py                       # starter model -> runs/demo/
    python pipelines/main.py face_model=/path/generic_model.pkl out=runs/flame
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from avface.face_model import load_face_model
from avface.io.media import write_mp4
from avface.viz import make_grid, save_png
from avface.viz.turntable import TurntableConfig, render_turntable

log = logging.getLogger("avface.main")


@dataclass
class MainConfig:
    out: str = "runs/demo"
    face_model: str | None = None
    turntable: TurntableConfig = field(default_factory=TurntableConfig)


ConfigStore.instance().store(name="main_schema", node=MainConfig)


def run(config: MainConfig) -> dict[str, Path]:
    """Run the main job; returns the paths of what it wrote."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. Face model: the user's FLAME file, or the open starter model built from the shipped canonical mesh.
    data = load_face_model(config.face_model)
    model_path = out / f"{data.name}.npz"
    data.save_npz(model_path)
    log.info("face model %s: %d vertices, %d faces -> %s", data.name, len(data.v_template), len(data.faces),
             model_path)

    # 2. Turntable: an mp4 to watch and a contact sheet to glance at.
    frames = render_turntable(data, config.turntable)
    video_path = out / "turntable.mp4"
    write_mp4(video_path, frames, fps=25)
    sheet_path = out / "turntable_contact_sheet.png"
    step = max(1, len(frames) // 12)
    save_png(sheet_path, make_grid(frames[::step][:12], ncols=6))
    log.info("turntable: %s, contact sheet: %s", video_path, sheet_path)
    return {"face_model": model_path, "turntable": video_path, "contact_sheet": sheet_path}


@hydra.main(config_path="../conf", config_name="main", version_base="1.3")
def main(cfg) -> None:
    config: MainConfig = OmegaConf.to_object(cfg)
    run(config)


if __name__ == "__main__":
    main()

"""The main job on the embedded default data, end to end as far as the project goes today.

1. face model: the user's FLAME file, or the open starter model built from the shipped canonical mesh;
2. turntable of it: an mp4 and a PNG contact sheet;
3. synthetic talking-head corpus (VoxCeleb2 + Multiface layouts, exact 3D ground truth), Ray tasks;
4. preprocessing of that corpus into WebDataset shards (Ray), and a preview sheet of the shards: frames with
   their ground-truth landmarks and occlusion masks.

Re-running resumes: corpus clips and shards already on disk are skipped.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from avface.data.config import PreprocessConfig
from avface.data.preprocess import run_preprocess
from avface.data.preview import shard_preview
from avface.demo.config import MainConfig
from avface.face_model import load_face_model
from avface.io.media import write_mp4
from avface.synth.corpus import synthesize_corpus
from avface.utils.files import atomic_path
from avface.viz import make_grid, save_png
from avface.viz.turntable import render_turntable

__all__ = ["run_corpus", "run_main_job", "run_shards", "run_turntable"]

log = logging.getLogger("avface.main")


def run_turntable(config: MainConfig, out: Path) -> dict[str, Path]:
    """Stages 1-2: face model (saved as .npz) and its turntable."""
    kwargs = {"landmark_embedding": config.landmark_embedding} if config.landmark_embedding else {}
    data = load_face_model(config.face_model, **kwargs)
    # Model names may hold ':' (e.g. "flame:generic_model.pkl"): keep file names portable.
    model_path = out / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', data.name)}.npz"
    data.save_npz(model_path)
    log.info("face model %s: %d vertices, %d faces -> %s", data.name, len(data.v_template), len(data.faces),
             model_path)
    frames = render_turntable(data, config.turntable)  # (T, H, W, 3) u8
    video_path = out / "turntable.mp4"
    write_mp4(video_path, frames, fps=25)
    sheet_path = out / "turntable_contact_sheet.png"
    step = max(1, len(frames) // 12)
    save_png(sheet_path, make_grid(frames[::step][:12], ncols=6))
    log.info("turntable: %s, contact sheet: %s", video_path, sheet_path)
    return {"face_model": model_path, "turntable": video_path, "contact_sheet": sheet_path}


def run_corpus(config: MainConfig, out: Path) -> dict[str, Path]:
    """Stage 3: the synthetic corpus under ``out/corpus``."""
    corpus = out / "corpus"
    summary = synthesize_corpus({
        "out": str(corpus), "size": config.corpus.size, "seed": config.seed,
        "occlusion_share": config.corpus.occlusion_share,
        "multiface": {"enabled": config.corpus.multiface},
        "face": {"face_model": config.face_model, "landmark_embedding": config.landmark_embedding},
    })
    log.info("corpus: %d VoxCeleb2 clips, %d Multiface segments (%.1f clips/min) -> %s", summary["vox_clips"],
             summary["multiface_segments"], summary["clips_per_minute"], corpus)
    return {"corpus": corpus, "voxceleb2": corpus / "voxceleb2", "multiface": corpus / "multiface"}


def run_shards(config: MainConfig, voxceleb2: Path, out: Path) -> dict[str, Path]:
    """Stage 4: WebDataset shards of the corpus under ``out/shards`` and a preview sheet of them."""
    shards = out / "shards"
    summary = run_preprocess(PreprocessConfig.from_dict({
        "data": {"root": str(voxceleb2)}, "out": str(shards), "seed": config.seed,
        "audio": {"kind": config.shards.audio_kind},
        # The tiny corpus has a few dozen windows: occlude a handful of them, as the paper does at scale.
        "occlusion": {"windows": {"train": 2, "test": 1}},
    }))
    if summary["shards_failed"]:
        raise RuntimeError(f"{len(summary['shards_failed'])} shard(s) failed; re-run to resume (see {shards})")
    log.info("shards: %d samples in %d shards, %d failed clips -> %s", summary["samples"], len(summary["shards"]),
             summary["failures"], shards)
    preview = shards / "preview.png"
    save_png(preview, shard_preview(sorted(shards.glob("*.tar")), config.shards.preview_samples))
    return {"shards": shards, "shards_preview": preview}


def run_main_job(config: MainConfig) -> dict[str, Path]:
    """Run the main job; returns the paths of what it wrote (also listed in ``out/outputs.json``)."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = run_turntable(config, out)
    if config.corpus.enabled:
        paths |= run_corpus(config, out)
        if config.shards.enabled:
            paths |= run_shards(config, paths["voxceleb2"], out)
    with atomic_path(out / "outputs.json") as tmp:
        tmp.write_text(json.dumps({k: str(v) for k, v in paths.items()}, indent=1))
    return paths

"""The main job on the embedded default data, end to end as far as the project goes today.

1. face model: the user's FLAME file, or the open starter model built from the shipped canonical mesh;
2. turntable of it: an mp4 and a PNG contact sheet;
3. synthetic talking-head corpus (VoxCeleb2 + Multiface layouts, exact 3D ground truth), Ray tasks;
4. preprocessing of that corpus into WebDataset shards (Ray), and a preview sheet of the shards: frames with
   their ground-truth landmarks and occlusion masks.

    python pipelines/main.py                                   # -> runs/demo/
    python pipelines/main.py face_model=/path/generic_model.pkl out=runs/flame corpus.enabled=false
    ray job submit --working-dir . -- python pipelines/main.py out=/shared/demo

Re-running resumes: corpus clips and shards already on disk are skipped.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import numpy as np
from hydra.core.config_store import ConfigStore

from avface.face_model import load_face_model
from avface.io.media import write_mp4
from avface.utils.config import dataclass_from_dict
from avface.utils.files import atomic_path
from avface.viz import draw_landmarks, make_grid, save_png, tint_mask
from avface.viz.turntable import TurntableConfig, render_turntable

log = logging.getLogger("avface.main")


@dataclass
class CorpusStage:
    enabled: bool = True
    size: str = "tiny"  # tiny | small | medium | large (avface/synth/config.py)
    occlusion_share: float = 0.25
    multiface: bool = True


@dataclass
class ShardStage:
    enabled: bool = True
    audio_kind: str = "mel"  # mel | deepspeech | wav2vec2 | phones
    preview_samples: int = 4


@dataclass
class MainConfig:
    out: str = "runs/demo"
    face_model: str | None = None  # None: the open starter model; a FLAME .pkl; a saved .npz
    landmark_embedding: str | None = None  # FLAME only; None: landmark_embedding.npy beside the .pkl
    seed: int = 0
    turntable: TurntableConfig = field(default_factory=TurntableConfig)
    corpus: CorpusStage = field(default_factory=CorpusStage)
    shards: ShardStage = field(default_factory=ShardStage)


ConfigStore.instance().store(name="main_schema", node=MainConfig)


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
    from avface.synth.corpus import synthesize_corpus

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
    from avface.data.config import PreprocessConfig
    from avface.data.preprocess import run_preprocess

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


def shard_preview(tars: list[Path], num_samples: int, frames_per_sample: int = 8, scan: int = 200) -> np.ndarray:
    """A contact sheet of shard samples: one row per sample, frames with landmarks drawn and occlusion tinted.

    Rows show different clips, occluded windows first, from the first ``scan`` samples.
    Returns:
        (H', W', 3) uint8 RGB.
    """
    import itertools

    import webdataset as wds

    from avface.data.sample import decode_sample

    chosen: dict[str, dict] = {}
    for raw in itertools.islice(wds.WebDataset([str(t) for t in tars], shardshuffle=False), scan):
        sample = decode_sample(raw)
        group = "occluded" if sample["meta"].get("occluded") else sample["meta"]["clip_id"]
        chosen.setdefault(group, sample)
    if not chosen:
        raise RuntimeError(f"no samples in {[str(t) for t in tars]}")
    order = sorted(chosen, key=lambda g: g != "occluded")[:num_samples]
    tiles = []
    for group in order:
        sample = chosen[group]
        frames = sample["frames"]  # (T, H, W, 3) u8
        for i in np.linspace(0, len(frames) - 1, frames_per_sample).round().astype(int):
            image = frames[i]
            if "occlusion_mask" in sample:
                image = tint_mask(image, sample["occlusion_mask"][i])
            if sample["landmarks_valid"][i]:
                image = draw_landmarks(image, sample["landmarks"][i])
            tiles.append(image)
    return make_grid(np.stack(tiles), ncols=frames_per_sample)


def run(config: MainConfig) -> dict[str, Path]:
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


@hydra.main(config_path="../conf", config_name="main", version_base="1.3")
def main(cfg) -> None:
    config = dataclass_from_dict(MainConfig, cfg)
    paths = run(config)
    print("\n".join(f"{k:>16}: {v}" for k, v in paths.items()))


if __name__ == "__main__":
    main()

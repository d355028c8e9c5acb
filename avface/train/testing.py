"""Small training corpora for tests and benchmarks: the synthetic talking-head corpus (exact ground truth)
preprocessed into shards with the renderer's normals and occluded copies, as a user would make them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from avface.data.config import PreprocessConfig
from avface.data.preprocess import run_preprocess
from avface.synth.corpus import synthesize_corpus

__all__ = ["make_training_shards"]


def make_training_shards(root: str | Path, dev_identities: int = 2, test_identities: int = 1,
                         clips_per_identity: int = 2, image_size: int = 64, occluded_windows: int = 8,
                         seed: int = 0, use_ray_for_synthesis: bool = False, num_cpus: int | None = None,
                         progress: bool = False, video: dict[str, Any] | None = None,
                         use_ray: bool = True, style: str = "studio", source_size: int | None = None,
                         preprocess: dict[str, Any] | None = None) -> dict[str, Any]:
    """Synthesize a VoxCeleb2-layout corpus under ``root/corpus`` and preprocess it into ``root/shards``
    (``video.image_size=image_size``, ``normals.source=auto``, ``occluded_windows`` occluded train windows and
    half as many test ones; ``video``: more ``video.*`` settings, e.g. a landmark crop; ``use_ray=False``:
    preprocessing in this process, no Ray started; ``style``: the corpus's appearance, ``vox.style``;
    ``source_size``: the rendered clips' side when it differs from the shards' ``image_size`` (the landmark
    detector runs on the source frames: a 64-px render gives it a face about 30 px wide);
    ``preprocess``: more preprocessing settings, section by section, e.g. ``{"fit": {"enabled": True}}``). Returns
    ``{"corpus", "shards", "synth", "preprocess"}`` (paths and summaries); re-running resumes both steps."""
    root = Path(root)
    synth = synthesize_corpus({
        "out": str(root / "corpus"), "size": "tiny", "seed": seed, "progress": progress,
        "vox": {"dev_identities": dev_identities, "test_identities": test_identities, "videos_per_identity": 1,
                "clips_per_video": clips_per_identity, "sentences_per_clip": [1, 1],
                "image_size": source_size or image_size, "style": style},
        "multiface": {"enabled": False}, **({"num_cpus": num_cpus} if num_cpus else {}),
    }, use_ray=use_ray_for_synthesis)
    settings: dict[str, Any] = {
        "data": {"root": str(root / "corpus" / "voxceleb2")}, "out": str(root / "shards"),
        "video": {"image_size": image_size, **(video or {})}, "normals": {"source": "auto"}, "progress": progress,
        "occlusion": {"windows": {"train": occluded_windows, "test": max(occluded_windows // 2, 1)}},
        "ray": {"num_cpus": num_cpus, "task_memory_mb": 400},
    }
    for section, values in (preprocess or {}).items():
        settings[section] = {**settings[section], **values} if isinstance(values, dict) and isinstance(
            settings.get(section), dict) else values
    pre = run_preprocess(PreprocessConfig.from_dict(settings), use_ray=use_ray)
    return {"corpus": root / "corpus", "shards": root / "shards", "synth": synth, "preprocess": pre}

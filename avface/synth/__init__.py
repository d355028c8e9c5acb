"""Synthetic talking-head corpus: VoxCeleb2- and Multiface-layout stand-ins with exact 3D ground truth.

Entry point: :func:`avface.synth.corpus.synthesize_corpus` (``pipelines/synthesize.py``).
"""

from avface.synth.config import SIZE_PRESETS, SynthesizeConfig, resolve_config

__all__ = ["SIZE_PRESETS", "SynthesizeConfig", "resolve_config", "synthesize_corpus"]


def synthesize_corpus(cfg, use_ray: bool = True) -> dict:
    from avface.synth.corpus import synthesize_corpus as _run

    return _run(cfg, use_ray=use_ray)

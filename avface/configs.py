"""The one place every config is registered with Hydra's ConfigStore: :func:`register_all`.

Each area keeps its dataclasses and a ``register_configs()`` in ``avface/<area>/config.py``; this module sits on
top of all of them (with ``pipelines/``) and calls each. Every ``pipelines/<name>.py`` calls :func:`register_all`
before ``@hydra.main`` composes ``conf/<name>.yaml``, so any pipeline's defaults list can pick any registered
node: its own schema (``<name>_schema``) and the groups (``model: tiny`` | ``model: paper``).
"""

from __future__ import annotations

from avface.ablation import config as ablation_config
from avface.data import config as data_config
from avface.demo import config as demo_config
from avface.evaluate import config as evaluate_config
from avface.models import config as models_config
from avface.synth import config as synth_config
from avface.train import config as train_config
from occlusion_synth import config as occlude_config

__all__ = ["register_all"]


def register_all() -> None:
    """Register every schema and preset (idempotent)."""
    models_config.register_configs()  # group model: paper | tiny
    data_config.register_configs()  # preprocess_schema
    synth_config.register_configs()  # synthesize_schema
    occlude_config.register_configs()  # occlude_schema
    demo_config.register_configs()  # main_schema
    train_config.register_configs()  # train_schema
    evaluate_config.register_configs()  # evaluate_schema
    ablation_config.register_configs()  # ablate_schema

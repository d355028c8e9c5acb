"""The project's shipped default model (``avface/assets/default_model/``): how it is made smaller for the
repository, and the held-out numbers its model card states and a test reproduces.

The shipped file is an ordinary ``avface-checkpoint/1`` file (``avface.trained.checkpoints``) without the
optimiser's state, with the training set's ground-truth statistics in its extras (``statistics``, as every
stage's ``final.pt`` has them: the constant-expression baseline of its card and of the evaluation).
``scripts/train_default_model.py`` trains and ships it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from avface.data.shard_index import ShardIndex
from avface.metrics.ground_truth import Baselines
from avface.train.testing import make_training_shards
from avface.train.validation import validate
from avface.trained.checkpoints import load_trained, read_checkpoint
from avface.utils.files import atomic_path

__all__ = ["CHECK_SET", "CARD_METRICS", "check_set_shards", "held_out_numbers", "ship_checkpoint"]

#: the fixed held-out check set the model card's second table is measured on and the test rebuilds: held-out
#: speakers only (the training speakers of its corpus are not used), 64 px, from this seed
CHECK_SET = {"dev_identities": 1, "test_identities": 3, "clips_per_identity": 1, "image_size": 64,
             "occluded_windows": 1, "seed": 20261207}
#: the numbers of a model card (mm after the similarity alignment; NME as a fraction of the inter-ocular distance)
CARD_METRICS = ("v3d_mm", "lip_mm", "expression_mm", "nme", "lip_nme", "mean_face/v3d_mm", "mean_face/lip_mm",
                "constant/v3d_mm", "constant/lip_mm", "constant/expression_mm")


def ship_checkpoint(src: str | os.PathLike, dest: str | os.PathLike, statistics: dict[str, Any] | None,
                    card: dict[str, Any] | None = None) -> Path:
    """Copy the checkpoint ``src`` to ``dest`` without its optimiser state (a few MB instead of three times as
    many), with ``statistics`` (``target_statistics`` of its training shards) and ``card`` (what it is) in its
    extras. Written atomically."""
    ckpt = read_checkpoint(src)
    ckpt.pop("optimizer", None)
    ckpt.pop("path", None)
    extras = dict(ckpt.get("extras") or {})
    extras.pop("target_statistics", None)  # the first shipped file's name for ``statistics``
    if statistics is not None:
        extras["statistics"] = statistics
    if card is not None:
        extras["default_model"] = card
    ckpt["extras"] = extras
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest, suffix=".pt") as tmp:
        torch.save(ckpt, tmp)
    return dest


def held_out_numbers(checkpoint: str | os.PathLike, shards: str | os.PathLike, windows: int = 0,
                     split: str = "test", statistics: dict[str, Any] | None = None) -> dict[str, float]:
    """The checkpoint's errors on ``windows`` evenly spaced windows of ``split`` (0: all of them) of ``shards``,
    beside the mean-face and constant baselines (``statistics``: the training set's; None: the checkpoint's
    ``statistics`` extras). Keys: ``CARD_METRICS`` and the rest of ``validate``'s."""
    trained = load_trained(checkpoint)
    extras = trained.meta.get("extras") or {}
    stats = statistics or extras.get("statistics") or extras.get("target_statistics")
    index = ShardIndex.build(shards, [split])
    batches = index.batches(index.spread(windows), trained.config.image_size)
    torch.manual_seed(0)
    return validate(trained.model, batches, Baselines.from_statistics(stats) if stats else None, prefix="")


def check_set_shards(root: str | os.PathLike) -> Path:
    """Build (or reuse) the fixed check set of :data:`CHECK_SET` under ``root`` without Ray; returns its shards
    directory (held-out split ``test``)."""
    cfg = dict(CHECK_SET)
    data = make_training_shards(root, dev_identities=cfg.pop("dev_identities"),
                                test_identities=cfg.pop("test_identities"),
                                clips_per_identity=cfg.pop("clips_per_identity"), image_size=cfg.pop("image_size"),
                                occluded_windows=cfg.pop("occluded_windows"), seed=cfg.pop("seed"), use_ray=False)
    return Path(data["shards"])

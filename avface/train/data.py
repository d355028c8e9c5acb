"""Training data: speaker-grouped, exactly-once batches over the shards' index (``avface.data.shard_index``).

Why not Ray Data's ``read_webdataset`` + ``streaming_split``: the coarse losses need several windows of one
speaker in a batch (shape consistency), and ``ray.train.report`` is a barrier that every worker must reach equally
often; ``streaming_split(equal=True)`` drops rows to equalise and ``equal=False`` gives workers unequal step counts.
So the shards are read with random access (:class:`~avface.data.shard_index.ShardIndex`: each tar's member offsets
read once), and every rank plans the same epoch from the same seed (:func:`plan_epoch`):

1. windows are grouped by speaker, shuffled within a speaker and cut into groups of ``windows_per_speaker``;
2. the groups are shuffled and concatenated; the sequence is split into ``world * steps`` batches whose sizes
   differ by at most one window (``steps = ceil(N / (world * batch_windows))``);
3. batch ``j`` goes to rank ``j % world``: every window is in exactly one batch of one rank per epoch, and every
   rank runs the same number of steps.

Inside a rank, :class:`BatchStream` (a torch ``IterableDataset``) hands batch ``i`` of the rank's list to loader
worker ``i % num_workers``; torch's DataLoader visits workers round-robin, so the order is kept. The stream starts
at any (epoch, step): a resumed run skips the batches it already trained on without reading them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from avface.data.batch import Batch, TargetSource, samples_to_batch
from avface.data.shard_index import ShardIndex

log = logging.getLogger(__name__)

__all__ = ["OCC_SUFFIX", "EpochPlan", "plan_epoch", "BatchStream", "make_loader"]

OCC_SUFFIX = "_occ"  # occluded copies of a split: ``{split}_occ`` shards


@dataclass
class EpochPlan:
    """One rank's batches of one epoch: ``batches[i]`` = row numbers of the index."""

    epoch: int
    rank: int
    world: int
    batches: list[np.ndarray] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.batches)


def plan_epoch(index: ShardIndex, epoch: int, rank: int, world: int, batch_windows: int,
               windows_per_speaker: int, seed: int, occluded_ratio: float = 0.0) -> EpochPlan:
    """Speaker-grouped batches of ``index`` for ``rank`` of ``world`` (see the module docstring).

    With ``occluded_ratio`` > 0 (occlusion fine-tuning) the epoch is the clean windows with that share of them
    replaced by occluded ones (drawn without replacement, cycling over epochs); otherwise occluded rows are left out.
    """
    if not 0.0 <= occluded_ratio <= 1.0:
        raise ValueError(f"occluded_ratio must be in [0, 1], got {occluded_ratio}")
    rng = np.random.default_rng([seed, epoch])
    t = index.table
    clean = np.flatnonzero(~t["occluded"].to_numpy())
    rows = clean
    if occluded_ratio > 0:
        occ = np.flatnonzero(t["occluded"].to_numpy())
        if occ.size == 0:
            raise ValueError(f"{index.root}: occlusion stage but no occluded ({OCC_SUFFIX}) windows in the shards; "
                             "preprocess with occlusion.windows={train: N}")
        n_occ = int(round(occluded_ratio * clean.size))
        keep = rng.permutation(clean)[: clean.size - n_occ]
        order = np.random.default_rng([seed, 7]).permutation(occ)
        take = np.resize(np.roll(order, -(epoch * n_occ) % occ.size), n_occ)
        rows = np.concatenate([keep, take])
    speakers = t["identity"].to_numpy()[rows]
    groups: list[np.ndarray] = []
    for spk in np.unique(speakers):
        mine = rng.permutation(rows[speakers == spk])
        groups.extend(np.array_split(mine, math.ceil(mine.size / windows_per_speaker)))
    order = rng.permutation(len(groups))
    flat = np.concatenate([groups[i] for i in order]) if groups else np.zeros(0, np.int64)
    steps = math.ceil(flat.size / (world * batch_windows))
    parts = world * steps
    if flat.size < parts or steps == 0:
        raise ValueError(f"{index.root}: {flat.size} windows are too few for {world} worker(s)")
    batches = np.array_split(flat, parts)
    return EpochPlan(epoch, rank, world, [b for j, b in enumerate(batches) if j % world == rank])


class BatchStream(torch.utils.data.IterableDataset):
    """Yields ``(epoch, step_in_epoch, Batch)`` for one rank, epoch after epoch, from ``(start_epoch, start_step)``.

    ``epochs`` None streams forever (the training loop stops at its step budget). ``clean_twins``: each batch
    also carries every window's clean twin as ``Batch.clean_images`` (the occlusion fine-tune's teacher input).
    ``targets``: ``Batch.targets`` from the exact ground truth or (``fitted``) the fitted pseudo-ground truth, frames
    with a fit residual above ``fit_max_residual`` masked (:func:`avface.data.batch.samples_to_batch`).
    """

    def __init__(self, index: ShardIndex, rank: int, world: int, batch_windows: int, windows_per_speaker: int,
                 image_size: int, seed: int, occluded_ratio: float = 0.0, start_epoch: int = 0,
                 start_step: int = 0, epochs: int | None = None, clean_twins: bool = False,
                 targets: TargetSource = "exact", fit_max_residual: float = float("inf")):
        super().__init__()
        self.targets, self.fit_max_residual = targets, fit_max_residual
        self.twins = index.clean_twins() if clean_twins else None
        self.index, self.rank, self.world = index, rank, world
        self.batch_windows, self.windows_per_speaker = batch_windows, windows_per_speaker
        self.image_size, self.seed, self.occluded_ratio = image_size, seed, occluded_ratio
        self.start_epoch, self.start_step, self.epochs = start_epoch, start_step, epochs

    def plan(self, epoch: int) -> EpochPlan:
        return plan_epoch(self.index, epoch, self.rank, self.world, self.batch_windows, self.windows_per_speaker,
                          self.seed, self.occluded_ratio)

    def __iter__(self) -> Iterator[tuple[int, int, Batch]]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch, first, counter = self.start_epoch, self.start_step, 0
        while self.epochs is None or epoch < self.start_epoch + self.epochs:
            plan = self.plan(epoch)
            for step in range(first, plan.steps):
                if counter % nw == wid:
                    rows = plan.batches[step]
                    samples = [self.index.read(int(r)) for r in rows]
                    clean = None
                    if self.twins is not None:  # a clean window is its own twin: read once
                        clean = [s if self.twins[r] == r else self.index.read(int(self.twins[r]))
                                 for r, s in zip(rows, samples, strict=True)]
                    yield epoch, step, samples_to_batch(samples, self.image_size, clean, self.targets,
                                                        self.fit_max_residual)
                counter += 1
            epoch, first = epoch + 1, 0


def make_loader(stream: BatchStream, num_workers: int) -> torch.utils.data.DataLoader:
    """DataLoader over a :class:`BatchStream` (batches are made by the stream: ``batch_size=None``). Workers start
    with ``forkserver`` (forking a process that holds Ray/torch threads is unsafe)."""
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs = {"multiprocessing_context": "forkserver", "persistent_workers": False, "prefetch_factor": 2}
    return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=num_workers, **kwargs)

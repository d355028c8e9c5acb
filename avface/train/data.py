"""Training data: random access to the preprocessed WebDataset shards and speaker-grouped, exactly-once batches.

Why not Ray Data's ``read_webdataset`` + ``streaming_split``: the coarse losses need several windows of one
speaker in a batch (shape consistency), and ``ray.train.report`` is a barrier that every worker must reach equally
often; ``streaming_split(equal=True)`` drops rows to equalise and ``equal=False`` gives workers unequal step counts.
So the shards are read like WebDataset's indexed ``wids`` datasets: each tar's member offsets are read once
(:class:`ShardIndex`), and every rank plans the same epoch from the same seed (:func:`plan_epoch`):

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

import io
import json
import logging
import math
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from avface.data.batch import Batch, samples_to_batch
from avface.data.sample import GT_CLIP_PARAMS, decode_sample, unpack_gt_params

log = logging.getLogger(__name__)

__all__ = ["OCC_SUFFIX", "ShardIndex", "EpochPlan", "plan_epoch", "BatchStream", "make_loader", "identity_of",
           "data_summary", "audio_statistics", "target_statistics"]

OCC_SUFFIX = "_occ"  # occluded copies of a split: ``{split}_occ`` shards


def identity_of(clip_id: str) -> str:
    """Speaker of a clip id ``{split}/{identity}/{ytid}/{utterance}`` (VoxCeleb2 layout)."""
    parts = str(clip_id).split("/")
    return parts[1] if len(parts) >= 3 else parts[0]


@dataclass
class ShardIndex:
    """Where every sample of the finished shards of some splits lives.

    ``table`` columns: key, shard (tar file name), split, clip_id, identity, start, occluded, and ``members``
    (JSON: field name -> [offset, size] of its bytes inside the tar).
    """

    root: Path
    table: pd.DataFrame

    @classmethod
    def build(cls, root: str | Path, splits: list[str]) -> ShardIndex:
        """Index ``splits`` of a preprocessing output dir (its ``index.parquet`` lists finished shards only)."""
        root = Path(root)
        index_file = root / "index.parquet"
        if not index_file.exists():
            raise FileNotFoundError(f"{index_file}: no shard index (run pipelines/preprocess.py out={root} first)")
        index = pd.read_parquet(index_file)
        index = index[index["split"].isin(splits)]
        if index.empty:
            have = sorted(pd.read_parquet(index_file, columns=["split"])["split"].unique())
            raise ValueError(f"{root}: no samples of split(s) {splits} (the shards have {have})")
        members: dict[str, dict[str, list[int]]] = {}
        for shard in sorted(index["shard"].unique()):
            members.update(_tar_members(root / shard))
        missing = [k for k in index["key"] if k not in members]
        if missing:
            raise ValueError(f"{root}: {len(missing)} indexed samples are not in their tars (e.g. {missing[0]}): "
                             "the shards changed after index.parquet was written; re-run preprocessing")
        table = index[["key", "shard", "split", "clip_id", "start", "occluded"]].copy()
        table["identity"] = table["clip_id"].map(identity_of)
        table["members"] = [json.dumps(members[k]) for k in table["key"]]
        return cls(root, table.sort_values(["split", "key"]).reset_index(drop=True))

    def __len__(self) -> int:
        return len(self.table)

    def select(self, mask: Any) -> ShardIndex:
        return ShardIndex(self.root, self.table[mask].reset_index(drop=True))

    def spread(self, n: int) -> np.ndarray:
        """Row numbers of ``n`` evenly spaced samples (all of them when ``n`` <= 0 or >= len): fixed validation and
        evaluation subsets, probes."""
        if n <= 0 or n >= len(self.table):
            return np.arange(len(self.table))
        return np.unique(np.linspace(0, len(self.table) - 1, num=n).astype(int))

    def clean_twins(self) -> np.ndarray:
        """(N,) row of each sample's clean window: an occluded copy's clean twin (same clip and start), a clean
        sample's own row. An occluded copy whose twin is not in the index is an error (index both splits)."""
        t = self.table
        clean = ~t["occluded"].to_numpy()
        row_of = {(c, int(s)): i for i, (c, s) in enumerate(zip(t["clip_id"][clean], t["start"][clean], strict=True))}
        clean_rows = np.flatnonzero(clean)
        twins = np.arange(len(t))
        for r in np.flatnonzero(~clean):
            i = row_of.get((t["clip_id"].iat[r], int(t["start"].iat[r])))
            if i is None:
                raise ValueError(f"{self.root}: occluded window {t['key'].iat[r]} has no clean twin in the index "
                                 f"(splits {sorted(t['split'].unique())})")
            twins[r] = clean_rows[i]
        return twins

    def _raw(self, row: int, fields: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The bytes of sample ``row``'s members (only ``fields`` when given)."""
        r = self.table.iloc[row]
        raw: dict[str, Any] = {"__key__": r["key"]}
        with open(self.root / r["shard"], "rb") as f:
            for name, (offset, size) in json.loads(r["members"]).items():
                if fields is None or name in fields:
                    f.seek(offset)
                    raw[name] = f.read(size)
        return raw

    def batches(self, rows: np.ndarray | list[int], image_size: int, batch_windows: int = 8) -> list[Batch]:
        """The samples of ``rows``, in that order, as :class:`~avface.data.batch.Batch` es of ``batch_windows``
        windows (the last may be smaller) at ``image_size``: fixed validation sets and evaluations."""
        rows = [int(r) for r in rows]
        return [samples_to_batch([self.read(r) for r in rows[i:i + batch_windows]], image_size)
                for i in range(0, len(rows), batch_windows)]

    def read(self, row: int) -> dict[str, Any]:
        """Decoded sample ``row`` (:func:`avface.data.sample.decode_sample`)."""
        try:
            return decode_sample(self._raw(row))
        except Exception as e:
            r = self.table.iloc[row]
            raise ValueError(f"{self.root / r['shard']}: sample {r['key']}: {type(e).__name__}: {e}") from e

    def read_targets(self, row: int) -> dict[str, np.ndarray] | None:
        """Ground-truth parameters of sample ``row`` (``decode_sample``'s ``gt``) without decoding its frames;
        None when it has none."""
        raw = self._raw(row, ("meta.json", "gt_params.npy"))
        if "gt_params.npy" not in raw:
            return None
        meta = json.loads(raw["meta.json"])
        return unpack_gt_params(np.load(io.BytesIO(raw["gt_params.npy"]), allow_pickle=False), meta["gt_layout"])


def _tar_members(path: Path) -> dict[str, dict[str, list[int]]]:
    """key -> {field: [data offset, size]} of a WebDataset tar (key = member name up to the first dot)."""
    out: dict[str, dict[str, list[int]]] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                base = m.name.rsplit("/", 1)[-1]
                key, _, field_name = base.partition(".")
                out.setdefault(key, {})[field_name] = [int(m.offset_data), int(m.size)]
    except (tarfile.TarError, OSError) as e:
        raise ValueError(f"{path}: unreadable shard: {type(e).__name__}: {e}") from e
    return out


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
    """

    def __init__(self, index: ShardIndex, rank: int, world: int, batch_windows: int, windows_per_speaker: int,
                 image_size: int, seed: int, occluded_ratio: float = 0.0, start_epoch: int = 0,
                 start_step: int = 0, epochs: int | None = None, clean_twins: bool = False):
        super().__init__()
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
                    yield epoch, step, samples_to_batch(samples, self.image_size, clean)
                counter += 1
            epoch, first = epoch + 1, 0


def make_loader(stream: BatchStream, num_workers: int) -> torch.utils.data.DataLoader:
    """DataLoader over a :class:`BatchStream` (batches are made by the stream: ``batch_size=None``). Workers start
    with ``forkserver`` (forking a process that holds Ray/torch threads is unsafe)."""
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs = {"multiprocessing_context": "forkserver", "persistent_workers": False, "prefetch_factor": 2}
    return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=num_workers, **kwargs)


def data_summary(index: ShardIndex, probe: int = 64) -> dict[str, Any]:
    """What the shards hold, read from up to ``probe`` samples: audio kind and size, image size, whether they carry
    normals / ground-truth parameters (and of which face model), speakers and windows."""
    t = index.table
    rows = index.spread(probe)
    kinds, dims, normals, gt, fm, sizes = set(), set(), [], [], set(), set()
    for r in rows:
        s = index.read(int(r))
        kinds.add(s["meta"].get("audio_kind"))
        dims.add(int(s["audio_features"].shape[-1]))
        normals.append("normals" in s)
        gt.append("gt" in s)
        fm.add(s["meta"].get("gt_face_model"))
        sizes.add(int(s["frames"].shape[1]))
    if len(kinds) > 1 or len(dims) > 1:
        raise ValueError(f"{index.root}: shards mix audio features {sorted(map(str, kinds))} / sizes {sorted(dims)}")
    return {"audio_kind": kinds.pop(), "audio_dim": dims.pop(), "has_normals": all(normals),
            "has_targets": all(gt), "gt_face_model": sorted(map(str, fm - {None})), "image_sizes": sorted(sizes),
            "windows": int((~t["occluded"]).sum()), "occluded_windows": int(t["occluded"].sum()),
            "speakers": int(t["identity"].nunique())}


def _clean_sample_rows(index: ShardIndex, max_samples: int, seed: int) -> np.ndarray:
    """Rows of the clean (not occluded) windows, a seeded random subset of ``max_samples`` when there are more."""
    rows = np.flatnonzero(~index.table["occluded"].to_numpy())
    if rows.size > max_samples:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_samples, replace=False))
    return rows


def audio_statistics(index: ShardIndex, max_samples: int = 256, seed: int = 0) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (F,) of the audio feature rows of (up to ``max_samples``) clean windows, the
    all-zero rows that pad a clip's ends left out: ``AVFaceConfig.audio_mean`` / ``audio_std``. Reads only the
    ``audio_features.npy`` members."""
    parts = []
    for r in _clean_sample_rows(index, max_samples, seed):
        raw = index._raw(int(r), ("audio_features.npy",))
        if "audio_features.npy" not in raw:
            raise ValueError(f"{index.root}: sample {raw['__key__']} has no audio_features.npy")
        a = np.load(io.BytesIO(raw["audio_features.npy"]), allow_pickle=False)
        a = a.reshape(-1, a.shape[-1])  # (T * 16, F)
        parts.append(a[np.abs(a).sum(1) > 0])
    rows = np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, 0))
    if len(rows) < 2:
        raise ValueError(f"{index.root}: no non-zero audio feature rows to take statistics from")
    mean, std = rows.mean(0), rows.std(0)
    std = np.maximum(std, 1e-3 * max(float(std.max()), 1e-6))  # a constant channel must not divide by ~0
    return [round(float(v), 5) for v in mean], [round(float(v), 5) for v in std]


def target_statistics(index: ShardIndex, max_samples: int = 2000, seed: int = 0) -> dict[str, dict[str, list]]:
    """Per-coefficient mean and std of the ground-truth parameters over (up to ``max_samples``) clean windows:
    the scales of the pretraining loss and the constant-expression baseline (training-set mean expression/jaw)."""
    t = index.table
    acc: dict[str, list[np.ndarray]] = {}
    for r in _clean_sample_rows(index, max_samples, seed):
        gt = index.read_targets(int(r))
        if gt is None:
            raise ValueError(f"{index.root}: sample {t.iloc[int(r)]['key']} has no ground-truth parameters")
        for k, v in gt.items():
            # per-frame groups contribute T rows, per-clip constants (albedo, light) one
            acc.setdefault(k, []).append(v.reshape(1, -1) if k in GT_CLIP_PARAMS else v.reshape(v.shape[0], -1))
    out = {}
    for k, vs in acc.items():
        a = np.concatenate(vs).astype(np.float64)
        out[k] = {"mean": a.mean(0).tolist(), "std": a.std(0).tolist()}
    return out

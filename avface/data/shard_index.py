"""Random access to the preprocessed WebDataset shards, and what they hold.

The shards are read like WebDataset's indexed ``wids`` datasets: each finished tar's member offsets are read once
(:class:`ShardIndex`), after which any sample is one seek per field. Training plans its epochs over the index
(``avface.train.data``); evaluation reads fixed sets of rows; :func:`data_summary` says what the shards hold (the
trained model's input contract is made from it, ``avface.trained.contract``).
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from avface.data.batch import Batch, samples_to_batch
from avface.data.sample import GT_CLIP_PARAMS, decode_sample, unpack_gt_params

__all__ = ["ShardIndex", "identity_of", "data_summary", "audio_statistics", "target_statistics",
           "fit_statistics"]


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


def data_summary(index: ShardIndex, probe: int = 64) -> dict[str, Any]:
    """What the shards hold, read from up to ``probe`` samples: audio kind and size, image size, whether they carry
    normals / ground-truth parameters (and of which face model), speakers and windows, and how the windows were made
    (``fps``, ``window`` frames, ``audio_window`` feature rows per frame, ``crop`` rule and ``crop_scale``, None
    where shards written before it was recorded do not say; a landmark crop is then known from its boxes), and
    ``detector_points``, the detector's point set the windows store (None: none, e.g. shards written before it);
    ``has_fit``: they carry fitted pseudo-ground truth (``fit.enabled``), else ``without_fit`` names the shard and
    sample of the first probed window without it."""
    t = index.table
    rows = index.spread(probe)
    kinds, dims, normals, gt, fm, sizes = set(), set(), [], [], set(), set()
    without_fit: list[str] = []  # "<shard>: <key>" of the probed windows without fitted pseudo-ground truth
    made: dict[str, set] = {"fps": set(), "window": set(), "audio_window": set(), "crop": set(), "crop_scale": set(),
                            "detector_points": set()}
    for r in rows:
        s = index.read(int(r))
        meta = s["meta"]
        kinds.add(meta.get("audio_kind"))
        dims.add(int(s["audio_features"].shape[-1]))
        normals.append("normals" in s)
        gt.append("gt" in s)
        if "fit" not in s:
            without_fit.append(f"{index.root / t.iloc[int(r)]['shard']}: sample {s['key']}")
        fm.add(meta.get("gt_face_model"))
        sizes.add(int(s["frames"].shape[1]))
        made["fps"].add(float(meta["fps"]))
        made["window"].add(int(s["frames"].shape[0]))
        made["audio_window"].add(int(s["audio_features"].shape[1]))
        made["crop"].add(meta.get("crop") or ("landmarks" if meta.get("crop_boxes") else "none"))
        made["crop_scale"].add(meta.get("crop_scale"))
        made["detector_points"].add(meta.get("detector_points"))  # None: no detector points (older shards too)
    if len(kinds) > 1 or len(dims) > 1:
        raise ValueError(f"{index.root}: shards mix audio features {sorted(map(str, kinds))} / sizes {sorted(dims)}")
    mixed = {k: sorted(map(str, v)) for k, v in made.items() if len(v) > 1}
    if mixed:
        raise ValueError(f"{index.root}: shards mix how their windows were made: {mixed}")
    return {"audio_kind": kinds.pop(), "audio_dim": dims.pop(), "has_normals": all(normals),
            "has_targets": all(gt), "has_fit": not without_fit,
            "without_fit": without_fit[0] if without_fit else None, "gt_face_model": sorted(map(str, fm - {None})),
            "image_sizes": sorted(sizes),
            "windows": int((~t["occluded"]).sum()), "occluded_windows": int(t["occluded"].sum()),
            "speakers": int(t["identity"].nunique()), **{k: v.pop() for k, v in made.items()}}


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


def fit_statistics(index: ShardIndex, max_residual: float = float("inf"), max_samples: int = 2000,
                   seed: int = 0) -> dict[str, dict[str, list]]:
    """:func:`target_statistics` of the fitted pseudo-ground truth (``fit.enabled``): per-coefficient mean and std
    of the fitted parameters over the fitted frames whose residual is at most ``max_residual``, of (up to
    ``max_samples``) clean windows; reads only the fit's members. A window without them is an error naming its
    shard and sample."""
    t = index.table
    acc: dict[str, list[np.ndarray]] = {}
    for r in _clean_sample_rows(index, max_samples, seed):
        raw = index._raw(int(r), ("meta.json", "fit_params.npy", "fit_valid.npy", "fit_residual.npy"))
        if "fit_params.npy" not in raw:
            raise ValueError(f"{index.root / t.iloc[int(r)]['shard']}: sample {raw['__key__']} has no fitted "
                             "pseudo-ground truth (fit_params.npy): preprocess with fit.enabled=true")
        meta = json.loads(raw["meta.json"])
        fit = unpack_gt_params(np.load(io.BytesIO(raw["fit_params.npy"]), allow_pickle=False), meta["fit_layout"])
        valid = np.load(io.BytesIO(raw["fit_valid.npy"]), allow_pickle=False).astype(bool)
        residual = np.load(io.BytesIO(raw["fit_residual.npy"]), allow_pickle=False)
        keep = valid & np.isfinite(residual) & (residual <= max_residual)
        for k, v in fit.items():
            acc.setdefault(k, []).append(v.reshape(v.shape[0], -1)[keep])
    out = {}
    for k, vs in acc.items():
        a = np.concatenate(vs).astype(np.float64)
        if len(a) < 2:
            raise ValueError(f"{index.root}: fewer than 2 fitted frames with a residual <= {max_residual}: no "
                             "statistics of the fitted parameters (raise stages.pretrain.fit_max_residual?)")
        out[k] = {"mean": a.mean(0).tolist(), "std": a.std(0).tolist()}
    return out

"""Shard planning, deterministic tar writing and the per-shard Ray task.

Plan: the manifest (sorted) is cut, per output split, into consecutive groups of clips whose estimated window
count stays within ``shards.max_samples`` (a clip with more windows gets a shard of its own); group g of split s
is written as ``{s}-{g:06d}.tar`` by exactly one task. The plan depends only on the manifest and the config, so a
re-run (after a crash, a killed node, or on purpose) rebuilds the very same shards.

A shard task writes, each atomically (temp name + rename):
``{s}-{g:06d}.tar`` (clean windows), ``{s}_occ-{g:06d}.tar`` (occluded copies, only when the shard has some),
``_fragments/{s}-{g:06d}.index.parquet``, ``_fragments/{s}-{g:06d}.failures.parquet`` and last
``_fragments/{s}-{g:06d}.done.json`` (counts and sha256 of the tars): a shard is finished iff its ``done.json``
exists and its tars have the recorded sizes. Tars are byte-for-byte deterministic (fixed mtime/owner/order).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from avface.data.clip import (
    ClipResources,
    estimate_windows,
    process_clip,
    validate,
    window_starts,
)
from avface.data.config import PreprocessConfig
from avface.utils.failures import ClipFailure
from avface.utils.files import atomic_path

INDEX_SCHEMA = pa.schema([
    ("key", pa.string()), ("shard", pa.string()), ("split", pa.string()), ("clip_id", pa.string()),
    ("start", pa.int64()), ("num_frames", pa.int64()), ("occluded", pa.bool_()), ("bytes", pa.int64()),
    ("landmarks_valid", pa.int64()), ("sha256", pa.string()),
])
FAILURES_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("video_path", pa.string()), ("split", pa.string()), ("shard", pa.string()),
    ("stage", pa.string()), ("error", pa.string()),
])
FRAGMENTS = "_fragments"


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


@dataclass
class ShardPlan:
    split: str  # output split name
    index: int
    clips: list[dict[str, Any]]  # manifest rows
    occluded: dict[str, list[int]] = field(default_factory=dict)  # clip_id -> window starts to occlude

    @property
    def name(self) -> str:
        return shard_name(self.split, self.index)

    @property
    def occ_name(self) -> str:
        return shard_name(f"{self.split}_occ", self.index)

    @property
    def stem(self) -> str:
        return self.name[: -len(".tar")]


# ---------------------------------------------------------------------------------------------- planning
def plan_shards(manifest: pa.Table, cfg: PreprocessConfig) -> list[ShardPlan]:
    """Deterministic shard plan (see the module docstring) with the occluded windows drawn per split."""
    s = cfg.shards
    bytes_per_sample = _bytes_per_sample_bound(cfg)
    max_samples = max(1, min(s.max_samples, cfg.shards.max_bytes // max(bytes_per_sample, 1)))
    rows = manifest.to_pylist()
    by_split: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out_split = cfg.data.split_names.get(r["split"], r["split"])
        by_split.setdefault(out_split, []).append(r)
    plans: list[ShardPlan] = []
    for split in sorted(by_split):
        group: list[dict[str, Any]] = []
        count = 0
        split_plans: list[ShardPlan] = []
        for r in by_split[split]:
            n = estimate_windows(r.get("num_frames"), r.get("fps"), cfg.video.fps, s.window, s.stride)
            if group and count + n > max_samples:
                split_plans.append(ShardPlan(split, len(split_plans), group))
                group, count = [], 0
            group.append(r)
            count += n
        if group:
            split_plans.append(ShardPlan(split, len(split_plans), group))
        _draw_occlusions(split_plans, split, cfg)
        plans.extend(split_plans)
    return plans


def _bytes_per_sample_bound(cfg: PreprocessConfig) -> int:
    """Planning estimate of one sample's bytes: raw frames for npy, a generous 1/4 of raw for JPEG strips."""
    t, size = cfg.shards.window, cfg.video.image_size
    raw = t * size * size * 3
    frames = raw if cfg.video.frames_format == "npy" else raw // 4
    audio = t * cfg.audio.window * 1024 * 4
    return frames + audio + t * 68 * 2 * 4 + 4096


def _draw_occlusions(plans: list[ShardPlan], split: str, cfg: PreprocessConfig) -> None:
    n_want = int(cfg.occlusion.windows.get(split, 0) or 0)
    if n_want <= 0:
        return
    s = cfg.shards
    candidates: list[tuple[int, str, int]] = []
    for pi, p in enumerate(plans):
        for r in p.clips:
            try:
                validate(r, cfg)  # clips known to fail get no occlusion windows
            except ClipFailure:
                continue
            n = estimate_windows(r.get("num_frames"), r.get("fps"), cfg.video.fps, s.window, s.stride)
            nf = int(np.floor((r.get("num_frames") or 0) * cfg.video.fps / (r.get("fps") or 1) + 1e-6))
            for st in window_starts(nf, s.window, s.stride)[:n]:
                candidates.append((pi, r["clip_id"], st))
    if not candidates:
        return
    rng = np.random.default_rng([cfg.occlusion.seed, *split.encode()])
    pick = rng.choice(len(candidates), size=min(n_want, len(candidates)), replace=False)
    for i in sorted(pick.tolist()):
        pi, clip, st = candidates[i]
        plans[pi].occluded.setdefault(clip, []).append(st)


# ---------------------------------------------------------------------------------------------- tar writing
class DeterministicTarWriter:
    """WebDataset tar writer whose bytes depend only on the samples (mtime 0, uid/gid 0, fields sorted)."""

    def __init__(self, fileobj):
        self.tar = tarfile.open(fileobj=fileobj, mode="w", format=tarfile.USTAR_FORMAT)

    def write(self, sample: dict[str, Any]) -> int:
        key = sample["__key__"]
        total = 0
        for name in sorted(k for k in sample if not k.startswith("__")):
            data = sample[name]
            if isinstance(data, str):
                data = data.encode()
            info = tarfile.TarInfo(f"{key}.{name}")
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o444
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self.tar.addfile(info, io.BytesIO(data))
            total += len(data)
        return total

    def close(self) -> None:
        self.tar.close()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sample_sha(sample: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for name in sorted(k for k in sample if not k.startswith("__")):
        h.update(name.encode())
        h.update(sample[name] if isinstance(sample[name], bytes) else str(sample[name]).encode())
    return h.hexdigest()[:32]


def _write_parquet(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
        os.chmod(tmp, 0o644)


def shard_done(out: Path, plan: ShardPlan) -> bool:
    """True iff the shard's ``done.json`` exists and every tar it names has the recorded size."""
    done = out / FRAGMENTS / f"{plan.stem}.done.json"
    if not done.is_file():
        return False
    try:
        info = json.loads(done.read_text())
        for name, size in info["tars"].items():
            p = out / name
            if not p.is_file() or p.stat().st_size != size:
                return False
        return all((out / FRAGMENTS / f"{plan.stem}.{k}.parquet").is_file() for k in ("index", "failures"))
    except (OSError, ValueError, KeyError):
        return False


def process_shard(plan: ShardPlan, cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """Ray task body: write one shard (and its occluded companion) plus its fragments; returns the done record."""
    cfg = PreprocessConfig.from_dict(cfg_dict)
    out = Path(cfg.out)
    t0 = time.time()
    index_rows: list[dict[str, Any]] = []
    failure_rows: list[dict[str, Any]] = []
    occ_samples: list[tuple[dict[str, Any], dict[str, Any]]] = []
    resources = ClipResources.create(cfg)
    frames_done = 0
    try:
        with atomic_path(out / plan.name) as tmp:
            with open(tmp, "wb") as f:
                writer = DeterministicTarWriter(f)
                for row in plan.clips:
                    try:
                        samples = process_clip(row, cfg, plan.split, frozenset(plan.occluded.get(row["clip_id"], [])),
                                               resources)
                    except ClipFailure as e:
                        failure_rows.append(_failure(row, plan, e.stage, e.message))
                        continue
                    except FileNotFoundError:
                        raise  # missing model file: a job-level configuration error, reported by the driver
                    except Exception as e:  # noqa: BLE001 - a bug or an unforeseen file problem: keep going
                        failure_rows.append(_failure(row, plan, "unexpected",
                                                     f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"))
                        continue
                    for smp in samples:
                        occluded = smp["__key__"].endswith("_occ")
                        if occluded:
                            occ_samples.append((smp, row))
                            continue
                        index_rows.append(_index_row(smp, plan.name, plan.split, row, writer.write(smp), False))
                        frames_done += cfg.shards.window
                writer.close()
            os.chmod(tmp, 0o644)
        tars = {plan.name: (out / plan.name).stat().st_size}
        if occ_samples:
            with atomic_path(out / plan.occ_name) as tmp:
                with open(tmp, "wb") as f:
                    writer = DeterministicTarWriter(f)
                    for smp, row in occ_samples:
                        index_rows.append(_index_row(smp, plan.occ_name, f"{plan.split}_occ", row,
                                                     writer.write(smp), True))
                    writer.close()
                os.chmod(tmp, 0o644)
            tars[plan.occ_name] = (out / plan.occ_name).stat().st_size
        _write_parquet(pa.Table.from_pylist(index_rows, schema=INDEX_SCHEMA),
                       out / FRAGMENTS / f"{plan.stem}.index.parquet")
        _write_parquet(pa.Table.from_pylist(failure_rows, schema=FAILURES_SCHEMA),
                       out / FRAGMENTS / f"{plan.stem}.failures.parquet")
        record = {"shard": plan.name, "tars": tars, "sha256": {n: _sha256(out / n) for n in tars},
                  "samples": len(index_rows), "failures": len(failure_rows), "clips": len(plan.clips),
                  "frames": frames_done, "seconds": round(time.time() - t0, 3), "pid": os.getpid(), "node": _node_id()}
        with atomic_path(out / FRAGMENTS / f"{plan.stem}.done.json") as tmp:
            tmp.write_text(json.dumps(record, sort_keys=True))
            os.chmod(tmp, 0o644)
        return record
    finally:
        resources.close()


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # noqa: BLE001
        return None


def _failure(row: dict[str, Any], plan: ShardPlan, stage: str, error: str) -> dict[str, Any]:
    return {"clip_id": row["clip_id"], "video_path": row["video_path"], "split": plan.split, "shard": plan.name,
            "stage": stage, "error": error[:2000]}


def _index_row(smp: dict[str, Any], shard: str, split: str, row: dict[str, Any], nbytes: int,
               occluded: bool) -> dict[str, Any]:
    meta = json.loads(smp["meta.json"])
    valid = np.load(io.BytesIO(smp["landmarks_valid.npy"]))
    return {"key": smp["__key__"], "shard": shard, "split": split, "clip_id": row["clip_id"],
            "start": int(meta["start"]), "num_frames": int(meta["num_frames"]), "occluded": occluded,
            "bytes": int(nbytes), "landmarks_valid": int(valid.sum()), "sha256": _sample_sha(smp)}


def read_fragments(out: Path, plans: list[ShardPlan]) -> tuple[pa.Table, pa.Table]:
    """Union of the finished shards' (:func:`shard_done`) index and failures fragments, in plan order.

    Fragments of an unfinished shard (killed before its ``done.json``, or failed on this run) are left out: the
    driver reports such a shard's clips as shard-level failures instead.
    """
    idx, fail = [], []
    for p in plans:
        if not shard_done(out, p):
            continue
        fi = out / FRAGMENTS / f"{p.stem}.index.parquet"
        ff = out / FRAGMENTS / f"{p.stem}.failures.parquet"
        if fi.is_file():
            idx.append(pq.read_table(fi, schema=INDEX_SCHEMA))
        if ff.is_file():
            fail.append(pq.read_table(ff, schema=FAILURES_SCHEMA))
    index = pa.concat_tables(idx) if idx else INDEX_SCHEMA.empty_table()
    failures = pa.concat_tables(fail) if fail else FAILURES_SCHEMA.empty_table()
    return index, failures


def plan_to_json(plans: list[ShardPlan]) -> list[dict[str, Any]]:
    return [{"split": p.split, "index": p.index, "clips": [r["clip_id"] for r in p.clips],
             "occluded": p.occluded} for p in plans]


__all__ = ["ShardPlan", "plan_shards", "process_shard", "shard_done", "shard_name", "read_fragments",
           "DeterministicTarWriter", "INDEX_SCHEMA", "FAILURES_SCHEMA"]

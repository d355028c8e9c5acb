"""The preprocessing job: VoxCeleb2 tree -> manifest -> shard plan -> Ray shard tasks -> index / failures tables.

Output directory ``<out>/``::

    manifest.parquet          one row per video (avface.data.discovery.MANIFEST_SCHEMA); reused by re-runs
    plan.json                 config fingerprint + clips of every shard (a re-run must produce the same plan)
    {split}-{NNNNNN}.tar      WebDataset shards, one sample per 16-frame window (avface.data.sample)
    {split}_occ-{NNNNNN}.tar  occluded copies of the planned windows (only shards that have some)
    _fragments/               per-shard index / failures parquet + done.json (what makes a shard "finished")
    index.parquet             sample key -> shard (+ clip, start, bytes, sha256), union of the fragments
    failures.parquet          clip, stage, error for every clip that was skipped (+ shard-level task failures)
    summary.json              counts, shard lists per split, timings

Idempotent and resumable: finished shards (``done.json`` present, tar sizes as recorded) are skipped; every other
shard is rebuilt from scratch by one task, with atomic writes, so a killed run re-run ends with exactly the
samples of a clean run. Ray retries a task whose node died (``ray.max_retries``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from avface.data.config import PreprocessConfig
from avface.data.discovery import MANIFEST_SCHEMA, build_manifest
from avface.data.shards import (
    FAILURES_SCHEMA,
    FRAGMENTS,
    ShardPlan,
    plan_shards,
    plan_to_json,
    process_shard,
    read_fragments,
    shard_done,
)
from avface.utils.files import atomic_path

log = logging.getLogger(__name__)


def _clean_temps(out: Path) -> int:
    n = 0
    for d in (out, out / FRAGMENTS):
        if d.is_dir():
            for p in d.glob(".*.tmp"):
                p.unlink(missing_ok=True)
                n += 1
    return n


def load_or_build_manifest(cfg: PreprocessConfig, use_ray: bool = True) -> pa.Table:
    path = Path(cfg.out) / "manifest.parquet"
    if path.is_file() and not cfg.rediscover:
        return pq.read_table(path, schema=MANIFEST_SCHEMA)
    table = build_manifest(cfg.data.root, list(cfg.data.splits), cfg.data.max_clips_per_split, cfg.data.probe_batch,
                           use_ray=use_ray)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
        os.chmod(tmp, 0o644)
    return table


def _write_plan(out: Path, cfg: PreprocessConfig, plans: list[ShardPlan]) -> None:
    """Record the plan; a different recorded plan is refused, or with ``overwrite`` its outputs are removed."""
    path = out / "plan.json"
    record = {"fingerprint": cfg.fingerprint(), "shards": plan_to_json(plans)}
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("fingerprint") != record["fingerprint"] or old.get("shards") != record["shards"]:
            if not cfg.overwrite:
                raise RuntimeError(
                    f"{out} holds shards of a different config or manifest (plan.json differs). Use a new "
                    f"out=..., or overwrite=true to replace them (every shard is rebuilt)."
                )
            _remove_planned_outputs(out, old.get("shards", []))
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, sort_keys=True))


def _remove_planned_outputs(out: Path, shards: list[dict[str, Any]]) -> None:
    """Delete the tars and fragments of a recorded plan (``plan_to_json`` entries), so that no shard of the old
    plan survives next to the new one (e.g. ``train-000007.tar`` when the new plan has fewer shards)."""
    for s in shards:
        p = ShardPlan(s["split"], int(s["index"]), [])
        for name in (p.name, p.occ_name):
            (out / name).unlink(missing_ok=True)
        for k in ("done.json", "index.parquet", "failures.parquet"):
            (out / FRAGMENTS / f"{p.stem}.{k}").unlink(missing_ok=True)


def _done_tars(out: Path, plan: ShardPlan) -> list[str]:
    """The tars a finished shard's ``done.json`` records (its clean tar, and its occluded one if it has one)."""
    info = json.loads((out / FRAGMENTS / f"{plan.stem}.done.json").read_text())
    return sorted(info["tars"])


def _absolutise(cfg: PreprocessConfig) -> PreprocessConfig:
    if cfg.out in ("???", "", None):
        raise ValueError("set out=/path/to/output")
    if cfg.data.root in ("???", "", None):
        raise ValueError("set data.root=/path/to/voxceleb2")
    cfg.out = str(Path(cfg.out).expanduser().resolve())
    cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())
    return cfg


def check_config(cfg: PreprocessConfig) -> None:
    """Fail fast, on the driver, with the clear message of a missing model file / optional package."""
    from avface.audio.features import check_available

    check_available(cfg.audio)
    if cfg.landmarks.detector in ("auto", "mediapipe"):
        from avface.landmarks import get_detector

        # start (and stop) the MediaPipe worker once here (~0.6 s): a broken side venv fails the job now, with the
        # worker's stderr, instead of failing every clip in the tasks
        with get_detector(cfg.landmarks.detector, cfg.landmarks.min_detection_confidence,
                          cfg.landmarks.mediapipe_python) as det:
            det.reset()
    if cfg.normals.source == "teacher" and not cfg.normals.checkpoint:
        raise ValueError("normals.source=teacher needs normals.checkpoint=/path/to/checkpoint")
    if cfg.normals.checkpoint and not Path(cfg.normals.checkpoint).expanduser().is_file():
        raise FileNotFoundError(f"normals teacher checkpoint not found: {cfg.normals.checkpoint}")
    if cfg.video.image_size % 16:
        raise ValueError("video.image_size must be a multiple of 16 (JPEG strips)")


#: what running one shard gave: its done record, or the error that ended it (after the retries)
ShardOutcome = tuple[ShardPlan, dict[str, Any] | Exception]


def _shards_on_ray(todo: list[ShardPlan], cfg: PreprocessConfig) -> Iterator[ShardOutcome]:
    """One Ray task per shard, at most ``ray.max_in_flight`` at once, outcomes as they finish."""
    import ray

    cfg_dict = cfg.to_dict()
    task = ray.remote(process_shard).options(
        num_cpus=cfg.ray.task_cpus, memory=int(cfg.ray.task_memory_mb) * 2**20, max_retries=cfg.ray.max_retries,
        retry_exceptions=True, name="preprocess_shard")
    max_in_flight = cfg.ray.max_in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    pending: dict[Any, ShardPlan] = {}
    queue = list(todo)
    while queue or pending:
        while queue and len(pending) < max_in_flight:
            p = queue.pop(0)
            pending[task.remote(p, cfg_dict)] = p
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            p = pending.pop(ref)
            try:
                yield p, ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                if isinstance(e.cause, FileNotFoundError):
                    raise e.cause from None  # a missing model file: the job's configuration, not one shard
                yield p, e
            except Exception as e:  # noqa: BLE001 - retries exhausted: report, keep going, a re-run resumes it
                yield p, e


def _shards_in_process(todo: list[ShardPlan], cfg: PreprocessConfig) -> Iterator[ShardOutcome]:
    """The same shards one after another in this process (tests, a laptop without Ray): no retries."""
    cfg_dict = cfg.to_dict()
    for p in todo:
        try:
            yield p, process_shard(p, cfg_dict)
        except FileNotFoundError:
            raise
        except Exception as e:  # noqa: BLE001 - one shard's failure is recorded, the others still run
            yield p, e


def run_preprocess(cfg: PreprocessConfig, init_ray: bool = True, use_ray: bool = True) -> dict[str, Any]:
    """Run (or resume) the whole job; returns the summary (also written to ``<out>/summary.json``).

    ``use_ray=False`` runs the shards one after another in this process, with the same outputs (no Ray started:
    the fast tests' tiny corpora)."""
    from tqdm import tqdm

    cfg = _absolutise(PreprocessConfig.from_dict(cfg.to_dict()))
    check_config(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if use_ray and init_ray:
        from avface.utils.ray_utils import init_ray as _init

        _init(cfg.ray.address, num_cpus=cfg.ray.num_cpus)
    t0 = time.time()
    _clean_temps(out)
    manifest = load_or_build_manifest(cfg, use_ray=use_ray)
    plans = plan_shards(manifest, cfg)
    _write_plan(out, cfg, plans)
    todo = [p for p in plans if not shard_done(out, p)]
    log.info("%d clips, %d shards, %d to do", manifest.num_rows, len(plans), len(todo))

    failed: list[tuple[ShardPlan, str]] = []
    frames = 0
    bar = tqdm(total=len(todo), desc="shards", unit="shard", disable=not cfg.progress)
    run = _shards_on_ray if use_ray else _shards_in_process
    try:
        for p, outcome in run(todo, cfg):
            if isinstance(outcome, Exception):
                msg = str(outcome)
                failed.append((p, msg))
                log.error("shard %s failed after %d retries: %s", p.name, cfg.ray.max_retries if use_ray else 0,
                          msg[-2000:])
            else:
                frames += outcome["frames"]
                bar.set_postfix(samples=outcome["samples"], failures=outcome["failures"],
                                frames_per_s=f"{frames / (time.time() - t0):.0f}")
            bar.update(1)
    finally:
        bar.close()
    _clean_temps(out)

    failed_names = {p.name for p, _ in failed}
    # a shard whose task failed on this run is reported as failed even if an earlier attempt of it left a
    # done.json behind: its clips are shard-level failure rows, so its fragments must not add index rows too
    finished = [p for p in plans if p.name not in failed_names and shard_done(out, p)]
    index, failures = read_fragments(out, finished)
    if failed:
        rows = [{"clip_id": r["clip_id"], "video_path": r["video_path"], "split": p.split, "shard": p.name,
                 "stage": "shard", "error": msg[-2000:]} for p, msg in failed for r in p.clips]
        failures = pa.concat_tables([failures, pa.Table.from_pylist(rows, schema=FAILURES_SCHEMA)])
    for name, table in (("index.parquet", index), ("failures.parquet", failures)):
        with atomic_path(out / name) as tmp:
            pq.write_table(table, tmp)
            os.chmod(tmp, 0o644)
    # only finished shards (their tars as recorded in done.json; an empty shard whose clips all failed is still a
    # valid tar): a planned shard that failed on this run may have a stale tar of an earlier run or plan on disk
    shards: dict[str, list[str]] = {}
    for p in finished:
        for name in _done_tars(out, p):
            shards.setdefault(name.rsplit("-", 1)[0], []).append(name)
    summary = {
        "clips": manifest.num_rows, "shards_planned": len(plans), "shards_run": len(todo) - len(failed),
        "shards_failed": [p.name for p, _ in failed], "samples": index.num_rows,
        "failures": failures.num_rows, "failed_clips": len(set(failures.column("clip_id").to_pylist())),
        "seconds": round(time.time() - t0, 2), "fingerprint": cfg.fingerprint(),
        "shards": {k: sorted(v) for k, v in sorted(shards.items())},
    }
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1, sort_keys=True))
        os.chmod(tmp, 0o644)
    return summary

"""The corpus driver: plan every clip from the seed, run them as Ray tasks, write the per-corpus files.

``synthesize_corpus(cfg)`` is what ``pipelines/synthesize.py`` calls. The plan is a pure function of the config
(identity ids, YouTube ids, utterance numbers, which clips are occluded), so re-running with the same config
skips the clips already on disk (resumable) and produces byte-identical files for the rest.

A clip whose synthesis raises (an espeak voice the library rejects, a render error, a worker killed after its
retries) does not stop the corpus: it becomes a row (kind, clip, stage, error) of ``<out>/synth_failures.parquet``
and of the summary (``failed``, ``failures``), nothing of it counts as written, and a re-run retries exactly the
clips that are not complete on disk (the failed ones). Multiface identities with a failed segment do not get their
per-identity files (KRT, frame_list.txt, ...) until a run completes every segment.
"""

from __future__ import annotations

import json
import logging
import os
import string
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from avface.synth.config import SynthesizeConfig, resolve_config
from avface.synth.multiface import MultifaceJob, finish_multiface_identity, identity_dirname, make_multiface_segment
from avface.synth.vox import VoxClipJob, clip_paths, make_vox_clip, rng_for, write_meta_csv
from avface.utils.failures import ClipFailure
from avface.utils.files import atomic_path
from avface.utils.jsonable import json_default

__all__ = ["plan_vox", "plan_multiface", "synthesize_corpus", "run_local", "job_id", "FAILURES_FILE",
           "FAILURES_SCHEMA"]

log = logging.getLogger(__name__)

#: ``<out>/synth_failures.parquet``: one row per clip / segment that failed on the last run (empty when none).
FAILURES_FILE = "synth_failures.parquet"
FAILURES_SCHEMA = pa.schema([("kind", pa.string()), ("clip", pa.string()), ("stage", pa.string()),
                             ("error", pa.string())])

_PLAN_STREAM = 0
_YT_ALPHABET = string.ascii_letters + string.digits + "-_"


def plan_vox(cfg: SynthesizeConfig) -> list[VoxClipJob]:
    """Every VoxCeleb2 clip of the corpus, in a fixed order."""
    v = cfg.vox
    if not v.enabled:
        return []
    rng = rng_for(cfg.seed, _PLAN_STREAM)
    n_ids = v.dev_identities + v.test_identities
    # VoxCeleb2-looking ids: sorted, with gaps, 5 digits
    numbers = np.sort(rng.choice(np.arange(1, 10000), size=n_ids, replace=False))
    splits = ["dev"] * v.dev_identities + ["test"] * v.test_identities
    order = rng.permutation(n_ids)  # which ids are test ids is random, as in the real split
    jobs: list[VoxClipJob] = []
    n_clips = n_ids * v.videos_per_identity * v.clips_per_video
    n_occ = int(round(cfg.occlusion_share * n_clips))
    occluded = np.zeros(n_clips, bool)
    occluded[rng.permutation(n_clips)[:n_occ]] = True
    clip = 0
    for k in range(n_ids):
        ident = f"id{numbers[order[k]]:05d}"
        utt = 1
        for vi in range(v.videos_per_identity):
            ytid = "".join(rng.choice(list(_YT_ALPHABET), 11))
            for _ in range(v.clips_per_video):
                jobs.append(VoxClipJob(splits[k], k, ident, vi, ytid, f"{utt:05d}", clip, bool(occluded[clip])))
                utt += 1
                clip += 1
    return jobs


def plan_multiface(cfg: SynthesizeConfig) -> list[MultifaceJob]:
    mf = cfg.multiface
    if not mf.enabled:
        return []
    return [MultifaceJob(i, identity_dirname(cfg.seed, i), s)
            for i in range(mf.identities) for s in range(mf.sentences)]


def job_id(kind: str, job, root: str | Path) -> str:
    """Name of a job in the failures table: the mp4 path under ``voxceleb2/``, or ``<identity dir>/sentence<k>``."""
    if kind == "vox":
        return str(clip_paths(Path(root), job)["mp4"].relative_to(root))
    return f"{job.dirname}/sentence{job.sentence_index:03d}"


def _failure(kind: str, job, root: str, stage: str, error: str) -> dict:
    row = {"kind": kind, "clip": job_id(kind, job, root), "stage": stage, "error": error[-2000:], "failed": True,
           "skipped": False}
    if kind == "multiface":
        row["identity"] = job.dirname
    return row


def _run_job(kind: str, job, cfg_dict: dict, root: str) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cfg = resolve_config(cfg_dict)
    t0 = time.perf_counter()
    try:
        if kind == "vox":
            out = make_vox_clip(job, cfg, Path(root))
        else:
            out = make_multiface_segment(job, cfg, Path(root))
    except ClipFailure as e:
        return _failure(kind, job, root, e.stage, e.message)
    except Exception as e:  # noqa: BLE001 - one bad clip must not stop the corpus: recorded, retried by a re-run
        return _failure(kind, job, root, "unexpected", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}")
    out["kind"] = kind
    out["seconds"] = time.perf_counter() - t0
    return out


def run_local(kind: str, job, cfg: SynthesizeConfig, root: Path) -> dict:
    """One job in this process (tests, debugging)."""
    return _run_job(kind, job, asdict(cfg), str(root))


def synthesize_corpus(cfg: SynthesizeConfig | dict, use_ray: bool = True) -> dict:
    """Generate the corpus under ``cfg.out``: ``voxceleb2/`` (Output A) and ``multiface/`` (Output B).

    Returns a summary (counts, seconds, clips per minute, bytes) that is also written to
    ``<out>/synth_summary.json``. Clips that failed are in ``summary["failures"]`` and
    ``<out>/synth_failures.parquet`` (see the module docstring); the call itself succeeds.
    """
    cfg = resolve_config(cfg)
    out = Path(cfg.out)
    vox_root, mf_root = out / "voxceleb2", out / "multiface"
    vox_jobs, mf_jobs = plan_vox(cfg), plan_multiface(cfg)
    tasks = [("vox", j, str(vox_root)) for j in vox_jobs] + [("multiface", j, str(mf_root)) for j in mf_jobs]
    cfg_dict = asdict(cfg)
    t0 = time.perf_counter()
    results: list[dict] = []
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="synthesize", unit="clip", disable=not cfg.progress)
    if use_ray and tasks:
        import ray

        from avface.utils.ray_utils import init_ray

        init_ray(num_cpus=cfg.num_cpus)
        memory = int(cfg.task_memory_mb) * 2**20
        if memory > ray.cluster_resources().get("memory", float("inf")):
            log.warning("task_memory_mb=%d is more than the cluster's memory resource (%.0f MB): no task can be "
                        "scheduled until the cluster grows", cfg.task_memory_mb,
                        ray.cluster_resources()["memory"] / 2**20)
        remote = ray.remote(num_cpus=1, memory=memory, max_retries=2)(_run_job)
        cfg_ref = ray.put(cfg_dict)
        pending: dict = {}
        queue = list(tasks)
        while queue or pending:
            while queue and len(pending) < cfg.max_in_flight:
                kind, job, root = queue.pop(0)
                pending[remote.remote(kind, job, cfg_ref, root)] = (kind, job, root)
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                kind, job, root = pending.pop(ref)
                try:
                    results.append(ray.get(ref))
                except Exception as e:  # noqa: BLE001 - worker died / killed for memory after its retries
                    results.append(_failure(kind, job, root, "task", f"{type(e).__name__}: {e}"))
                bar.update(1)
    else:
        for kind, job, root in tasks:
            results.append(_run_job(kind, job, cfg_dict, root))
            bar.update(1)
    bar.close()
    failures = [r for r in results if r.get("failed")]
    for r in failures:
        log.warning("%s %s failed at %s: %s", r["kind"], r["clip"], r["stage"], r["error"].splitlines()[0][:500])
    results = [r for r in results if not r.get("failed")]
    for r in results:
        if r.get("occlusion_failed"):
            log.warning("vox %s: planned as occluded, written without a hand: %s", r["clip"], r["occlusion_error"])

    # corpus-level files (cheap, on the driver)
    if vox_jobs:
        from avface.synth.render import FaceContext
        from avface.synth.vox import identity_for

        ctx = FaceContext.get(cfg.face.face_model, cfg.face.landmark_embedding)
        seen: dict[str, tuple[str, str, str]] = {}
        for j in vox_jobs:
            if j.identity not in seen:
                seen[j.identity] = (j.identity, identity_for(cfg, ctx, j.identity_index).gender, j.split)
        write_meta_csv(vox_root / "vox2_meta.csv", list(seen.values()))
    index_of = {j.dirname: j.identity_index for j in mf_jobs}
    by_identity: dict[str, list[dict]] = {}
    for r in results:
        if r["kind"] == "multiface":
            by_identity.setdefault(r["identity"], []).append(r)
    incomplete = {r["identity"] for r in failures if r["kind"] == "multiface"}
    for dirname, segs in by_identity.items():
        if dirname in incomplete:  # its files need every segment: written by the run that completes them
            log.warning("multiface %s: not finished (KRT, frame_list.txt, vert_mean) while a segment fails", dirname)
            continue
        finish_multiface_identity(cfg, mf_root, index_of[dirname], dirname, segs)

    seconds = time.perf_counter() - t0
    made = [r for r in results if not r.get("skipped")]
    vox_made = [r for r in made if r["kind"] == "vox"]
    summary = {
        "vox_clips": len(vox_jobs), "multiface_segments": len(mf_jobs), "generated": len(made),
        "skipped": len(results) - len(made), "failed": len(failures),
        "failures": [{k: r[k] for k in FAILURES_SCHEMA.names} for r in failures], "seconds": seconds,
        "clips_per_minute": 60.0 * len(made) / seconds if made and seconds > 0 else None,
        "vox_seconds_of_video": sum(r["duration"] for r in vox_made),
        "vox_bytes": {k: int(sum(r["bytes"][k] for r in vox_made)) for k in ("mp4", "txt", "gt")} if vox_made else {},
        "occluded_clips": sum(1 for r in vox_made if r.get("occluded")),
        # planned as occluded, written without a hand (every occlusion attempt failed; the sidecar meta says so)
        "occlusion_failed": [{"clip": r["clip"], "error": r["occlusion_error"]} for r in vox_made
                             if r.get("occlusion_failed")],
        "task_seconds": {"vox": float(np.mean([r["seconds"] for r in vox_made])) if vox_made else None},
        "config": cfg_dict,
    }
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / FAILURES_FILE) as tmp:  # this run's failures: a clip that succeeded now leaves it
        pq.write_table(pa.Table.from_pylist(summary["failures"], schema=FAILURES_SCHEMA), tmp)
    with atomic_path(out / "synth_summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=json_default))
    return summary

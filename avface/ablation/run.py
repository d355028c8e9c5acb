"""The ablation grid's driver: shards per audio kind -> the shared E_c -> every row and seed -> the report.

``run_ablation(cfg)`` (``pipelines/ablate.py``):

1. tracking: the MLflow store and experiment are created here, once, before any worker starts (a fresh sqlite
   store created by several processes at once races), and the grid's parent run;
2. Ray: a local Ray (or the cluster of ``ray_address`` / ``$RAY_ADDRESS``), started once by this driver; every row
   joins it (a second local Ray instance confuses Ray Train's placement-group cleaner);
3. shards: the synthetic corpus (or ``corpus.root``) preprocessed once per audio kind the rows need;
4. the shared coarse encoder E_c: the project's pretraining stage, once (no row varies it);
5. the rows: each row and seed trains its own expression-jaw branch on the frozen shared E_c (+ its lip refiner,
   + the occlusion fine-tune where the row has them) through ``run_training`` (Ray Train), then is evaluated by
   ``evaluate_faceset``; a row's result file marks it finished (a re-run skips it; an unfinished row resumes from
   its checkpoints). ``rows_in_parallel`` > 1 runs rows as Ray tasks, at most that many at once;
6. the report (``avface.ablation.report``), logged to the parent run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

from avface.ablation.config import AblationConfig
from avface.ablation.grid import Row, select_rows
from avface.ablation.report import write_report
from avface.ablation.ui import compare_view, serve_mlflow
from avface.audio.config import AudioConfig
from avface.audio.errors import AudioFeatureError
from avface.audio.features import check_available
from avface.data.config import PreprocessConfig
from avface.data.preprocess import run_preprocess
from avface.evaluate.config import FaceSetEvalConfig
from avface.evaluate.faceset import OURS, evaluate_faceset
from avface.synth.corpus import synthesize_corpus
from avface.train.trainer import run_training
from avface.trained.checkpoints import load_trained
from avface.utils.files import atomic_path
from avface.utils.jsonable import json_default
from avface.utils.ray_utils import init_ray
from avface.utils.tracking import default_tracking_uri, find_or_create_run, log_params, setup_tracking

log = logging.getLogger(__name__)

__all__ = ["ROW_TAGS", "run_ablation", "row_recipe", "run_row", "availability", "REPORT_METRICS"]

#: tags of every row's MLflow run (the UI's compare view groups and filters by them)
ROW_TAGS = ("table", "row", "seed")
#: the metrics each row run carries (``ablation/<name>``) and the report shows
REPORT_METRICS = ("nme", "auc", "nme_lips", "nme_occ", "v3d_mm", "lip_mm", "expression_mm", "jitter")


def availability(rows: list[Row], audio: AudioConfig) -> dict[str, str | None]:
    """Row name -> None when it can run here, else why not ("needs ..."): the audio kinds that need the user's
    model files (DeepSpeech's graph + TensorFlow, wav2vec 2.0's weights) or a package."""
    why: dict[str, str | None] = {}
    for kind in sorted({r.audio for r in rows}):
        try:
            check_available(dataclasses.replace(audio, kind=kind))
            why[kind] = None
        except (AudioFeatureError, FileNotFoundError, ImportError) as e:
            why[kind] = f"needs {e}"
    return {r.name: why[r.audio] for r in rows}


def make_shards(cfg: AblationConfig, kinds: list[str], use_ray: bool) -> dict[str, Path]:
    """``<out>/shards/<kind>`` for each audio kind, from ``corpus.root`` or the synthetic corpus made in
    ``<out>/corpus`` (both steps resume)."""
    out, c = Path(cfg.out).resolve(), cfg.corpus
    shards = {k: Path(v).expanduser().resolve() for k, v in c.shards.items() if k in kinds}
    kinds = [k for k in kinds if k not in shards]
    if not kinds:
        return shards
    root = Path(c.root).expanduser().resolve() if c.root else out / "corpus" / "voxceleb2"
    if not c.root:
        synthesize_corpus({
            "out": str(out / "corpus"), "size": "tiny", "seed": 0, "progress": cfg.progress,
            "vox": {"dev_identities": c.dev_identities, "test_identities": c.test_identities,
                    "videos_per_identity": 1, "clips_per_video": c.clips_per_identity,
                    "sentences_per_clip": [1, 1], "image_size": c.image_size},
            "multiface": {"enabled": False}}, use_ray=False)
    for kind in kinds:
        pre = {"data": {"root": str(root)}, "out": str(out / "shards" / kind), "progress": cfg.progress,
               "video": {"image_size": c.image_size}, "normals": {"source": "auto"},
               "occlusion": {"windows": {"train": c.occluded_windows, "test": max(c.occluded_windows // 2, 1)}},
               "ray": {"task_memory_mb": 400}, **c.preprocess}
        pre["audio"] = {**dataclasses.asdict(cfg.audio), **dict(c.preprocess.get("audio") or {}), "kind": kind}
        log.info("preprocessing %s into %s (audio features %s)", root, pre["out"], kind)
        run_preprocess(PreprocessConfig.from_dict(pre), init_ray=False, use_ray=use_ray)
        shards[kind] = out / "shards" / kind
    return shards


def _stage(steps: int, b, **more: Any) -> dict[str, Any]:
    # the grid's selection: no patience, no guard, the start not selectable: a row exports what its steps reached
    return {"steps": steps, "val_every": b.val_every, "checkpoint_every": b.val_every, "report_every": b.val_every,
            "patience": 0, "keep_start": False, "no_regression": False, **more}


def row_recipe(cfg: AblationConfig, row: Row, seed: int, shards: Path, shared: str, uri: str,
               parent: str) -> dict[str, Any]:
    """The ``TrainConfig`` dict of one row and seed: the shared E_c (frozen, the only weights taken from
    ``shared``), a fresh expression-jaw branch of the row's configuration trained with the pretraining objective,
    then the row's lip refiner and occlusion fine-tune (the project's lip and occlusion stages), each with the
    same budget in every row."""
    b = cfg.budget
    model = cfg.model.to_dict()
    model["expression"] = {**model["expression"], **row.expression}
    chain = ["pretrain"] + (["lip"] if row.lip else []) + (["occlusion"] if row.occlusion else [])
    stages = {"pretrain": _stage(b.expression_steps, b, networks=["expression"], init_networks=["coarse"],
                                 freeze_batchnorm=False),
              "lip": _stage(b.lip_steps, b), "occlusion": _stage(b.occlusion_steps, b)}
    return {"data": {"shards": str(shards), "val_windows": b.val_windows,
                     "val_occluded_windows": b.val_occluded_windows},
            "model": model, "stage_chain": chain, "stages": {k: stages[k] for k in chain},
            "out": str(Path(cfg.out).resolve() / "train"), "name": f"{row.name}-s{seed}", "init": shared,
            "seed": seed, "progress": cfg.progress, "ray_address": cfg.ray_address, "use_ray": cfg.use_ray,
            "scaling": _scaling(cfg),
            "tracking": {"tracking_uri": uri, "experiment": cfg.experiment, "registered_model": "",
                         "parent_run_id": parent}}


def _scaling(cfg: AblationConfig) -> dict[str, Any]:
    return {"num_workers": cfg.workers_per_row, "use_gpu": cfg.use_gpu, "cpus_per_worker": cfg.cpus_per_worker,
            "mixed_precision": cfg.mixed_precision}


def _result_path(cfg: AblationConfig, row: Row, seed: int) -> Path:
    return Path(cfg.out).resolve() / "rows" / f"{row.name}-s{seed}.json"


def run_row(cfg: AblationConfig, row: Row, seed: int, shards: Path, shared: str, uri: str, parent: str,
            tables: list[int]) -> dict[str, Any]:
    """Train and evaluate one row and seed (resumes); returns (and writes) its result: config, metrics, run id."""
    from mlflow.tracking import MlflowClient

    t0 = time.perf_counter()
    recipe = row_recipe(cfg, row, seed, shards, shared, uri, parent)
    log.info("row %s seed %d: %s", row.name, seed, json.dumps(row.switches()))
    trained = run_training(recipe, start_ray=False)
    run_id = trained["mlflow_run_id"]
    client = MlflowClient(uri)
    for k, v in {"table": ",".join(map(str, tables)), "row": row.name, "seed": str(seed), "label": row.label,
                 "avface.ablation.role": "row", "avface.ablation.switches": json.dumps(row.switches())}.items():
        client.set_tag(run_id, k, v)
    # the FaceSet-style evaluation of the project (avface.evaluate) on the row's held-out windows
    b = cfg.budget
    tm = load_trained(trained["final"])
    outcome = evaluate_faceset(tm.model, FaceSetEvalConfig(shards=str(shards), max_windows=b.eval_windows,
                                                           max_occluded_windows=b.eval_occluded_windows), None)
    ours = next(r for r in outcome.results if r.method == OURS).metrics
    last = trained["stages"][recipe["stage_chain"][-1]]["metrics"]
    metrics = {"nme": ours.get("nme"), "auc": ours.get("auc"), "nme_lips": ours.get("nme_lips"),
               "nme_occ": ours.get("nme_occ"), "v3d_mm": ours.get("vertex_error_mm"),
               "lip_mm": last.get("val/lip_mm"), "expression_mm": last.get("val/expression_mm"),
               "jitter": ours.get("jitter"), "lve_mm2": ours.get("lve_mm2")}
    metrics = {k: float(v) for k, v in metrics.items() if v is not None}
    client.log_batch(run_id, metrics=[_metric(f"ablation/{k}", v) for k, v in metrics.items()])
    result = {"row": row.name, "seed": seed, "tables": tables, "label": row.label, "switches": row.switches(),
              "recipe": recipe, "metrics": metrics, "mlflow_run_id": run_id, "final": trained["final"],
              "seconds": time.perf_counter() - t0}
    path = _result_path(cfg, row, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result, indent=2, default=json_default))
    return result


def _metric(key: str, value: float):
    from mlflow.entities import Metric

    return Metric(key, value, int(time.time() * 1000), 0)


def _shared_recipe(cfg: AblationConfig, shards: Path, uri: str, parent: str) -> dict[str, Any]:
    b = cfg.budget
    return {"data": {"shards": str(shards), "val_windows": b.val_windows, "val_occluded_windows": 0},
            "model": cfg.model.to_dict(), "stage_chain": ["pretrain"],
            "stages": {"pretrain": {"steps": b.shared_steps, "val_every": b.val_every,
                                    "checkpoint_every": b.val_every, "report_every": b.val_every}},
            "out": str(Path(cfg.out).resolve() / "train"), "name": "shared-coarse-encoder", "seed": 0,
            "progress": cfg.progress, "ray_address": cfg.ray_address, "use_ray": cfg.use_ray,
            "scaling": _scaling(cfg),
            "tracking": {"tracking_uri": uri, "experiment": cfg.experiment, "registered_model": "",
                         "parent_run_id": parent}}


def run_ablation(cfg: AblationConfig | dict[str, Any]) -> dict[str, Any]:
    """Run (or resume) the grid; returns the report's paths and every row's result."""
    import ray
    from mlflow.tracking import MlflowClient

    cfg = (cfg if isinstance(cfg, AblationConfig) else AblationConfig.from_dict(cfg)).resolved()
    out = Path(cfg.out).resolve()
    rows = select_rows(cfg.rows, cfg.tables)
    why_not = availability(rows, cfg.audio)
    runnable = [r for r in rows if why_not[r.name] is None]
    trained_rows = [r for r in runnable if r.same_as is None]
    tables_of = {r.name: sorted({x.table for x in rows if x.name == r.name or x.same_as == r.name})
                 for r in trained_rows}
    for r in rows:
        print(f"[ablation] table {r.table} row {r.name} ({r.label}): {json.dumps(r.switches())}"
              + (f" = row {r.same_as}" if r.same_as else "") + (f": NOT RUN ({why_not[r.name]})"
                                                                    if why_not[r.name] else ""), flush=True)

    # 1. tracking, once, before any worker ---------------------------------------------------------------------
    uri = cfg.tracking_uri or default_tracking_uri(out)
    experiment = setup_tracking(uri, cfg.experiment)
    parent, resumed = find_or_create_run(uri, experiment, str(out / cfg.name), cfg.name)
    client = MlflowClient(uri)
    client.set_tag(parent, "avface.ablation.role", "grid")
    log_params(uri, parent, {"profile": cfg.profile, "rows": json.dumps([r.name for r in rows]),
                             "seeds": json.dumps(cfg.seeds), "budget": json.dumps(dataclasses.asdict(cfg.budget)),
                             "model": cfg.model.name})
    log.info("MLflow %s: grid run %s (%s)", uri, parent, "resumed" if resumed else "new")

    # 2. Ray, once ---------------------------------------------------------------------------------------------
    if cfg.use_ray:
        init_ray(cfg.ray_address, cfg.num_cpus)

    # 3. shards per audio kind ---------------------------------------------------------------------------------
    kinds = sorted({r.audio for r in trained_rows} | {"mel"})
    shards = make_shards(cfg, kinds, use_ray=cfg.use_ray)

    # 4. the shared E_c ----------------------------------------------------------------------------------------
    shared = run_training(_shared_recipe(cfg, shards["mel"], uri, parent), start_ray=False)
    client.set_tag(shared["mlflow_run_id"], "avface.ablation.role", "shared")

    # 5. the rows ----------------------------------------------------------------------------------------------
    jobs = [(r, s) for r in trained_rows for s in cfg.seeds]
    results: list[dict[str, Any]] = []
    todo = []
    for r, s in jobs:
        path = _result_path(cfg, r, s)
        if path.exists():
            log.info("row %s seed %d already finished (%s): skipping", r.name, s, path)
            results.append(json.loads(path.read_text()))
        else:
            todo.append((r, s))
    args = {r.name: (shards[r.audio], shared["final"], uri, parent, tables_of[r.name]) for r in trained_rows}
    if cfg.rows_in_parallel <= 1 or not cfg.use_ray:
        for r, s in todo:
            results.append(run_row(cfg, r, s, *args[r.name]))
    else:
        # each row a Ray task holding no resources itself: its Ray Train workers reserve them
        task = ray.remote(num_cpus=0)(run_row)
        pending: list = []
        for r, s in todo:
            if len(pending) >= cfg.rows_in_parallel:
                done, pending = ray.wait(pending, num_returns=1)
                results += ray.get(done)
            pending.append(task.remote(cfg, r, s, *args[r.name]))
        results += ray.get(pending)

    # 6. the report --------------------------------------------------------------------------------------------
    report = write_report(out / "report", rows, results, why_not, cfg)
    if cfg.screenshot:
        try:
            with serve_mlflow(uri, log=out / "report" / "mlflow-server.log") as base:
                _, shown = compare_view(base, experiment, {r["mlflow_run_id"]: f"{r['row']}-s{r['seed']}"
                                                           for r in results}, out / "report" / "compare-view.png")
            if not shown:
                log.warning("the MLflow compare view did not show every run within the time; screenshot as it was")
            report = write_report(out / "report", rows, results, why_not, cfg)  # now with the screenshot
            report["screenshot"] = out / "report" / "compare-view.png"
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            log.warning("no screenshot of the MLflow compare view: %s", e)
    for p in report.values():
        client.log_artifact(parent, str(p), "report")
    for k, v in report.items():
        client.set_tag(parent, f"report.{k}", str(v))
    client.set_terminated(parent)
    return {"parent_run_id": parent, "tracking_uri": uri, "experiment_id": experiment, "report": report,
            "results": results, "not_run": {k: v for k, v in why_not.items() if v}}

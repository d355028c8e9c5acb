"""The evaluation job (``pipelines/evaluate.py``): :func:`run_evaluate` resolves the model, runs the FaceSet-style
(Table 4) and Multiface (Table 5) harnesses, writes the tables, pictures and the failures table under ``out``, logs
everything to MLflow (linked to the evaluated model version) and, for a nightly run, compares with the previous
nightly and the champion (:func:`avface.evaluate.nightly.compare_nightly`).

Outputs under ``out``: ``results.md`` / ``results.csv`` (a row per method, the paper's rows beside them),
``ced.png`` (CED of the per-frame NME), ``heatmaps_faceset.png`` (mean aligned per-vertex error on the template),
``heatmaps_multiface.png`` (Fig. 6-style: per-vertex error of the aligned prediction against the tracked mesh),
``failures.csv`` / ``failures.md`` (one row per bad item: table, item, split/camera/method, problem),
``parquet/`` (per-frame and per-vertex rows, hive-partitioned by method and speaker), ``summary.json``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from avface.data.shard_index import ShardIndex, target_statistics
from avface.evaluate.config import EvaluateConfig
from avface.evaluate.faceset import OURS, FaceSetOutcome, evaluate_faceset
from avface.evaluate.multiface_eval import MultifaceOutcome, evaluate_multiface, panels_of
from avface.evaluate.nightly import NightlyConfig, compare_nightly, ensure_tracking_store
from avface.evaluate.plots import ErrorPanel, plot_ced, render_error_heatmaps
from avface.evaluate.results import MethodResult, write_results
from avface.evaluate.tracking import log_evaluation, resolve_model_version
from avface.inference.checkpoint import CheckpointNotFoundError, default_training_out, resolve_registered
from avface.inference.reconstruct import resolve_device
from avface.metrics import Baselines
from avface.trained.checkpoints import find_latest_checkpoint, load_trained
from avface.utils.config import dataclass_from_dict
from avface.utils.files import atomic_path
from avface.utils.jsonable import json_default
from avface.utils.ray_utils import init_ray
from avface.utils.tracking import default_tracking_uri, flatten_params, log_params, setup_tracking

log = logging.getLogger(__name__)

__all__ = ["FAILURE_COLUMNS", "tracking_uri_of", "resolve_checkpoint", "write_failures", "run_evaluate"]

FAILURE_COLUMNS = ("table", "item", "split", "problem")


def tracking_uri_of(cfg: EvaluateConfig) -> str:
    return cfg.tracking.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(cfg.out)


def resolve_checkpoint(model_uri: str | None, tracking_uri: str, dst: Path) -> tuple[Path, str | None]:
    """-> (checkpoint file, the ``models:/NAME/VERSION`` it is, or None for a plain path). ``models:/`` URIs are
    resolved in the registry of ``tracking_uri`` (``latest``, a version or ``@alias``) and downloaded to ``dst``."""
    if model_uri is None:
        found = find_latest_checkpoint(default_training_out())
        if found is None:
            raise CheckpointNotFoundError(f"model_uri not given and no checkpoint under {default_training_out()}/: "
                                          "pass model_uri=PATH or model_uri=models:/NAME@ALIAS")
        return found, None
    if str(model_uri).startswith("models:/"):
        name, version = resolve_model_version(MlflowClient(tracking_uri, registry_uri=tracking_uri), model_uri)
        exact = f"models:/{name}/{version}"
        return resolve_registered(exact, dst, tracking_uri), exact
    path = Path(model_uri)
    if not path.exists():
        raise CheckpointNotFoundError(f"model_uri={model_uri}: no such checkpoint")
    return path, None


def write_failures(rows: list[dict], out: Path) -> tuple[Path, Path]:
    """failures.csv and failures.md (a markdown table), atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(FAILURE_COLUMNS), extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    md = ["# Failures (bad or partial data; the evaluation finished for the rest)", "",
          "| table | item | split / camera / method | problem |", "|---|---|---|---|"]
    md += [f"| {r['table']} | {r['item']} | {r['split']} | {str(r['problem']).replace('|', '/')} |" for r in rows]
    if not rows:
        md.append("| – | – | – | none |")
    paths = out / "failures.csv", out / "failures.md"
    for path, text in zip(paths, (buf.getvalue(), "\n".join(md) + "\n"), strict=True):
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return paths


def _baselines(tm, shards: str | None) -> tuple[Baselines | None, str]:
    stats = (tm.meta.get("extras") or {}).get("statistics")
    if stats:
        return Baselines.from_statistics(stats), "the checkpoint's training-set statistics"
    if shards:
        try:
            return Baselines.from_statistics(target_statistics(ShardIndex.build(shards, ["train"]))), \
                f"{shards} train split"
        except (ValueError, FileNotFoundError) as e:
            return None, f"none ({e})"
    return None, "none"


def _faceset_heatmaps(fs: FaceSetOutcome, face_model, path: Path) -> Path | None:
    if not fs.vertex_errors:
        return None
    v = face_model.v_template.detach().cpu().numpy()
    f = face_model.faces.cpu().numpy()
    panels = [ErrorPanel(m, v, f, e) for m, e in fs.vertex_errors.items()]
    return render_error_heatmaps(panels, path, label="mean aligned vertex error (mm)")


def run_evaluate(cfg: EvaluateConfig | dict[str, Any]) -> dict[str, Any]:
    """Run the evaluation ``cfg`` describes; returns paths, the logged metrics, the MLflow run id, the failures
    and (nightly) the decision with its ``exit_code``."""
    if not isinstance(cfg, EvaluateConfig):
        cfg = dataclass_from_dict(EvaluateConfig, cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri_of(cfg)
    ensure_tracking_store(uri)
    checkpoint, registered = resolve_checkpoint(cfg.model_uri, uri, out / "model")
    device = resolve_device(cfg.device)
    tm = load_trained(checkpoint, device)
    log.info("evaluating %s (%s, stage %s)", checkpoint, registered or "not registered", tm.meta.get("stage"))
    results: list[MethodResult] = []
    failures: list[dict] = []
    notes: dict[str, str] = {"model": f"{registered or checkpoint} (stage {tm.meta.get('stage')}, step "
                                      f"{tm.meta.get('step')})"}
    files: list[Path] = []

    fs: FaceSetOutcome | None = None
    if cfg.faceset.shards:
        baselines, source = _baselines(tm, cfg.faceset.shards)
        notes["constant-expression baseline"] = f"mean expression/jaw from {source}"
        frames_root = out / "parquet" / "faceset_frames"
        if frames_root.exists():  # a re-run replaces the previous run's rows
            shutil.rmtree(frames_root)
        fs = evaluate_faceset(tm.model, cfg.faceset, baselines, frames_root)
        results += fs.results
        failures += fs.failures
        notes.update(fs.notes)
        if fs.nme:
            files.append(plot_ced({m: e for m, e in fs.nme.items()}, out / "ced.png", max_error=0.1))
        hm = _faceset_heatmaps(fs, tm.face_model, out / "heatmaps_faceset.png")
        files += [hm] if hm else []

    mf: MultifaceOutcome | None = None
    if cfg.multiface.root:
        import ray

        started = not ray.is_initialized()
        init_ray(cfg.ray_address, num_cpus=cfg.num_cpus)
        try:
            mf = evaluate_multiface(str(checkpoint), cfg.multiface, out, device=device)
        finally:
            if started:
                ray.shutdown()
        results += mf.results
        failures += mf.failures
        notes.update(mf.notes)
        panels = panels_of(mf.segments)
        if panels:
            files.append(render_error_heatmaps([ErrorPanel(**p) for p in panels], out / "heatmaps_multiface.png"))

    if not any(r.method == OURS for r in results):
        raise RuntimeError(f"nothing was evaluated (faceset.shards={cfg.faceset.shards}, "
                           f"multiface.root={cfg.multiface.root}); failures: {failures[:5]}")
    notes["failures"] = f"{len(failures)} (failures.md)"
    md, csv_path = write_results(out, results, title="avface evaluation", header_notes=notes)
    files += [md, csv_path, *write_failures(failures, out)]

    client = MlflowClient(uri, registry_uri=uri)
    exp_id = setup_tracking(uri, cfg.tracking.experiment)
    run = client.create_run(exp_id, run_name=cfg.tracking.run_name or ("nightly" if cfg.nightly.enabled
                                                                       else "evaluate"),
                            tags={"avface.checkpoint": str(checkpoint)})
    run_id = run.info.run_id
    log_params(uri, run_id, flatten_params(asdict(cfg)))
    metrics = log_evaluation(client, run_id, results, OURS, model_uri=registered, files=files,
                             nightly=cfg.nightly.enabled)
    client.log_metric(run_id, "failures", float(len(failures)))
    client.set_terminated(run_id)
    summary: dict[str, Any] = {"run_id": run_id, "tracking_uri": uri, "checkpoint": str(checkpoint),
                               "model_uri": registered, "results_md": str(md), "results_csv": str(csv_path),
                               "files": [str(f) for f in files], "metrics": metrics, "failures": failures,
                               "exit_code": 0}
    if cfg.nightly.enabled:
        name = cfg.nightly.model_name or (registered.split("/")[1] if registered else "avface")
        decision = compare_nightly(run_id, NightlyConfig(uri, model_name=name, alias=cfg.nightly.alias),
                                   registered.rsplit("/", 1)[1] if registered else None)
        summary["nightly"] = decision.as_dict()
        summary["exit_code"] = decision.exit_code
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=json_default), encoding="utf-8")
    return summary


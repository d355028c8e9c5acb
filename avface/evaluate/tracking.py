"""Logging an evaluation to MLflow, linked to the registered model version it evaluated, in the form the nightly
comparison (:mod:`avface.evaluate.nightly`) reads: metrics ``<table>/<column>`` of the evaluated method (e.g.
``multiface/median``, ``faceset/nme``), ``<table>/<method>/<column>`` for the baselines, tags
``avface.model_version`` / ``avface.model_uri`` (and ``avface.nightly=true`` for nightly runs), the result files
as artifacts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from mlflow.tracking import MlflowClient

from avface.evaluate.nightly import MODEL_VERSION_TAG, NIGHTLY_TAG
from avface.evaluate.results import MethodResult

__all__ = ["resolve_model_version", "evaluation_metrics", "log_evaluation"]

_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/]+)|@(?P<alias>[^/]+))$")


def resolve_model_version(client: MlflowClient, model_uri: str) -> tuple[str, str]:
    """``models:/<name>/<version>``, ``models:/<name>/latest`` or ``models:/<name>@<alias>`` -> (name, version)."""
    m = _MODEL_URI.match(model_uri)
    if not m:
        raise ValueError(f"not a registered-model URI (models:/name/version | models:/name@alias): {model_uri!r}")
    name = m["name"]
    if m["alias"]:
        return name, str(client.get_model_version_by_alias(name, m["alias"]).version)
    if m["version"] == "latest":
        versions = client.search_model_versions(f"name = '{name}'")
        if not versions:
            raise ValueError(f"{model_uri}: registered model {name!r} has no version")
        return name, str(max(int(v.version) for v in versions))
    return name, str(int(m["version"]))


def _key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\- /]", "_", text).strip().replace(" ", "_")


def evaluation_metrics(results: Sequence[MethodResult], evaluated: str) -> dict[str, float]:
    """Flat MLflow metrics: the ``evaluated`` method's numbers as ``<table>/<column>``, every other method of
    ours as ``<table>/<method>/<column>``; the paper's rows are not logged (they are in results.md)."""
    out: dict[str, float] = {}
    for r in results:
        if r.source != "ours":
            continue
        prefix = r.table if r.method == evaluated else f"{r.table}/{_key(r.method)}"
        out.update({f"{prefix}/{_key(k)}": float(v) for k, v in r.metrics.items()})
    if not any(r.method == evaluated for r in results):
        raise ValueError(f"evaluation_metrics: no row for the evaluated method {evaluated!r}")
    return out


def log_evaluation(client: MlflowClient, run_id: str, results: Sequence[MethodResult], evaluated: str,
                   model_uri: str | None = None, files: Sequence[str | Path] = (), nightly: bool = False) -> dict:
    """Log metrics, model link tags and artifacts to ``run_id``; returns the metrics logged."""
    metrics = evaluation_metrics(results, evaluated)
    for k, v in metrics.items():
        client.log_metric(run_id, k, v)
    if model_uri:
        name, version = resolve_model_version(client, model_uri)
        client.set_tag(run_id, "avface.model_uri", model_uri)
        client.set_tag(run_id, "avface.model_name", name)
        client.set_tag(run_id, MODEL_VERSION_TAG, version)
    if nightly:
        client.set_tag(run_id, NIGHTLY_TAG, "true")
    for f in files:
        client.log_artifact(run_id, str(f))
    return metrics

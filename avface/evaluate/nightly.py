"""Nightly comparison: this run's metrics against the previous nightly's and the registered champion's (MLflow).

A nightly run is an MLflow run tagged ``avface.nightly=true`` (and ``avface.model_version=<v>``, the registered
version it evaluated) that logged the evaluation metrics. :func:`compare_nightly`:

- compares every configured metric with the previous nightly run of the same experiment and with the champion
  (``models:/<model>@<alias>``; its numbers are the ``nightly.<metric>`` tags written on the model version when
  it was promoted, else the metrics of the version's own run);
- marks a regression (worse than a reference by more than the metric's tolerance, in the metric's direction):
  tag ``regression=true`` (and ``regression.details``) on the run and exit code 1;
- moves the alias to the evaluated version only when that version is better than the champion: no metric worse
  beyond its tolerance and at least one strictly better (or when there is no champion yet). A champion without
  numbers is never replaced blindly: the first nightly run that evaluates the champion's own version writes them.

The tracking store must exist before concurrent use (a fresh sqlite store created by several processes at once
races on its schema migration: 3 of 4 failed when tried): call :func:`ensure_tracking_store` once on the driver.
Command line (what the nightly job runs after the evaluation): ``python -m avface.evaluate.nightly --tracking-uri
URI --run-id RUN [--model-version V] [--rule NAME:lower|higher:TOL ...]``; exit code 1 on a regression.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

__all__ = ["MetricRule", "NightlyConfig", "Comparison", "NightlyDecision", "DEFAULT_RULES", "NIGHTLY_TAG",
           "MODEL_VERSION_TAG", "ensure_tracking_store", "compare_nightly", "main"]

NIGHTLY_TAG = "avface.nightly"
MODEL_VERSION_TAG = "avface.model_version"


@dataclass(frozen=True)
class MetricRule:
    """A metric to watch. tolerance: how much worse (absolute, in the metric's units) still passes."""

    name: str
    higher_is_better: bool = False
    tolerance: float = 0.0

    def worse_by(self, value: float, reference: float) -> float:
        """> 0: value is worse than reference by that much; < 0: better."""
        return reference - value if self.higher_is_better else value - reference


#: Table 5 scan-to-mesh (mm) and Table 4 landmarks (NME in %, AUC)
DEFAULT_RULES: tuple[MetricRule, ...] = (
    MetricRule("multiface/median", tolerance=0.02), MetricRule("multiface/mean", tolerance=0.02),
    MetricRule("faceset/nme", tolerance=0.02), MetricRule("faceset/auc", higher_is_better=True, tolerance=0.005),
)


@dataclass
class NightlyConfig:
    tracking_uri: str
    rules: list[MetricRule] = field(default_factory=lambda: list(DEFAULT_RULES))
    model_name: str = "avface"
    alias: str = "champion"
    registry_uri: str | None = None  # None: the tracking URI


@dataclass
class Comparison:
    metric: str
    value: float | None
    reference: float | None
    against: str  # "previous" | "champion"
    worse_by: float | None
    regressed: bool


@dataclass
class NightlyDecision:
    run_id: str
    model_version: str | None
    previous_run_id: str | None
    champion_version: str | None
    comparisons: list[Comparison]
    regression: bool
    promoted: bool

    @property
    def exit_code(self) -> int:
        return 1 if self.regression else 0

    def as_dict(self) -> dict:
        return {**asdict(self), "exit_code": self.exit_code}


def ensure_tracking_store(tracking_uri: str) -> None:
    """Create / upgrade the tracking store once (before several processes write to it)."""
    MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)


def _previous_nightly(client, run) -> str | None:
    runs = client.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.`{NIGHTLY_TAG}` = 'true' and attributes.start_time <= {run.info.start_time}",
        order_by=["attributes.start_time DESC"], max_results=20)
    for r in runs:  # the latest other nightly that started before this one
        if r.info.run_id != run.info.run_id and r.info.status == "FINISHED":
            return r.info.run_id
    return None


def _champion(client, cfg: NightlyConfig) -> tuple[str | None, dict[str, float], bool]:
    """(version, metrics, whether the metrics are nightly tags on the version)."""
    try:
        mv = client.get_model_version_by_alias(cfg.model_name, cfg.alias)
    except MlflowException:
        return None, {}, False
    tagged = {k[len("nightly."):]: float(v) for k, v in (mv.tags or {}).items()
              if k.startswith("nightly.") and k != "nightly.run_id"}
    if tagged:
        return str(mv.version), tagged, True
    if mv.run_id:
        return str(mv.version), dict(client.get_run(mv.run_id).data.metrics), False
    return str(mv.version), {}, False


def _tag_version(client, cfg: NightlyConfig, version: str, metrics: dict[str, float], run_id: str) -> None:
    for rule in cfg.rules:
        if rule.name in metrics:
            client.set_model_version_tag(cfg.model_name, version, f"nightly.{rule.name}",
                                         repr(float(metrics[rule.name])))
    client.set_model_version_tag(cfg.model_name, version, "nightly.run_id", run_id)


def _compare(rules: Sequence[MetricRule], metrics: dict[str, float], ref: dict[str, float],
             against: str) -> list[Comparison]:
    out = []
    for rule in rules:
        v, r = metrics.get(rule.name), ref.get(rule.name)
        if r is None:
            continue
        if v is None:  # the evaluation no longer produces a watched metric: that is a regression too
            out.append(Comparison(rule.name, None, r, against, None, True))
            continue
        w = rule.worse_by(v, r)
        out.append(Comparison(rule.name, v, r, against, w, w > rule.tolerance))
    return out


def compare_nightly(run_id: str, cfg: NightlyConfig, model_version: str | None = None) -> NightlyDecision:
    """Compare, tag the run, maybe move the alias (see the module docstring). ``model_version``: the registered
    version this run evaluated (default: the run's ``avface.model_version`` tag; None: nothing to promote)."""
    client = MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.registry_uri or cfg.tracking_uri)
    run = client.get_run(run_id)
    metrics = dict(run.data.metrics)
    model_version = model_version or run.data.tags.get(MODEL_VERSION_TAG)
    if not any(rule.name in metrics for rule in cfg.rules):
        raise ValueError(f"run {run_id} logged none of the watched metrics {[r.name for r in cfg.rules]} "
                         f"(it has {sorted(metrics)})")
    prev_id = _previous_nightly(client, run)
    comparisons = _compare(cfg.rules, metrics, dict(client.get_run(prev_id).data.metrics), "previous") \
        if prev_id else []
    champ_version, champ_metrics, champ_tagged = _champion(client, cfg)
    vs_champion = _compare(cfg.rules, metrics, champ_metrics, "champion") \
        if champ_version is not None and champ_version != model_version else []
    comparisons += vs_champion
    regression = any(c.regressed for c in comparisons)
    better = champ_version is None or (
        bool(vs_champion) and not any(c.regressed for c in vs_champion)
        and any(c.worse_by is not None and c.worse_by < 0 for c in vs_champion))
    promoted = bool(model_version) and model_version != champ_version and better
    if promoted:
        client.set_registered_model_alias(cfg.model_name, cfg.alias, model_version)
        _tag_version(client, cfg, model_version, metrics, run_id)
    elif model_version and model_version == champ_version and not champ_tagged:
        # the champion evaluated for the first time: its numbers are what later candidates must beat
        _tag_version(client, cfg, model_version, metrics, run_id)
    details = "; ".join(f"{c.metric} {c.value} vs {c.against} {c.reference}" for c in comparisons if c.regressed)
    client.set_tag(run_id, "regression", "true" if regression else "false")
    client.set_tag(run_id, "regression.details", details or "none")
    client.set_tag(run_id, "nightly.previous_run_id", prev_id or "")
    client.set_tag(run_id, "nightly.champion_version", champ_version or "")
    client.set_tag(run_id, "nightly.promoted", "true" if promoted else "false")
    return NightlyDecision(run_id, model_version, prev_id, champ_version, comparisons, regression, promoted)


def _parse_rule(text: str) -> MetricRule:
    try:
        name, direction, tol = text.rsplit(":", 2)
        if direction not in ("lower", "higher"):
            raise ValueError
        return MetricRule(name, direction == "higher", float(tol))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--rule must be NAME:lower|higher:TOLERANCE, got {text!r}") from e


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Compare a nightly evaluation run with the previous one and the "
                                            "champion; tag regressions; promote a better model.")
    p.add_argument("--tracking-uri", required=True)
    p.add_argument("--run-id", required=True)
    p.add_argument("--model-version", default=None)
    p.add_argument("--model-name", default="avface")
    p.add_argument("--alias", default="champion")
    p.add_argument("--rule", action="append", type=_parse_rule, default=None,
                   help="NAME:lower|higher:TOLERANCE (repeatable; default: Table 4/5 metrics)")
    a = p.parse_args(argv)
    cfg = NightlyConfig(a.tracking_uri, rules=a.rule or list(DEFAULT_RULES), model_name=a.model_name,
                        alias=a.alias)
    decision = compare_nightly(a.run_id, cfg, a.model_version)
    print(json.dumps(decision.as_dict(), indent=2))
    return decision.exit_code


if __name__ == "__main__":
    sys.exit(main())

"""avface.evaluate.nightly on a real MLflow sqlite store: regressions against the previous nightly and the
champion are tagged and give exit code 1; the champion alias moves only to a better model version."""

from __future__ import annotations

import time

import pytest
import torch
from mlflow.tracking import MlflowClient

from avface.evaluate.nightly import (
    MODEL_VERSION_TAG,
    NIGHTLY_TAG,
    MetricRule,
    NightlyConfig,
    compare_nightly,
    ensure_tracking_store,
    main,
)

RULES = [MetricRule("multiface/median", tolerance=0.05), MetricRule("faceset/auc", higher_is_better=True,
                                                                     tolerance=0.01)]


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_tracking_store(uri)  # once, before anything else writes
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    train_exp = client.create_experiment("avface-train", artifact_location=(tmp_path / "art-train").as_uri())
    nightly_exp = client.create_experiment("avface-nightly", artifact_location=(tmp_path / "art-nightly").as_uri())
    client.create_registered_model("avface")
    return uri, client, train_exp, nightly_exp, tmp_path


def _register(client, exp, tmp_path, k: int) -> str:
    """A training run that logs a tiny state dict and registers it as a new version of 'avface'."""
    run = client.create_run(exp)
    sd = tmp_path / f"model{k}.pt"
    torch.save({"w": torch.full((2, 2), float(k))}, sd)
    client.log_artifact(run.info.run_id, str(sd), artifact_path="model")
    client.set_terminated(run.info.run_id)
    mv = client.create_model_version("avface", source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    assert torch.load(tmp_path / f"model{k}.pt", weights_only=True)["w"][0, 0] == k
    return str(mv.version)


def _champion(client) -> str:
    return str(client.get_model_version_by_alias("avface", "champion").version)


def _nightly(client, exp, version: str, median: float, auc: float) -> str:
    run = client.create_run(exp, tags={NIGHTLY_TAG: "true", MODEL_VERSION_TAG: version})
    client.log_metric(run.info.run_id, "multiface/median", median)
    client.log_metric(run.info.run_id, "faceset/auc", auc)
    client.set_terminated(run.info.run_id)
    time.sleep(0.01)  # distinct start times
    return run.info.run_id


def test_nightly_regression_and_promotion(store):
    uri, client, train_exp, nightly_exp, tmp = store
    cfg = NightlyConfig(uri, rules=RULES)

    v1 = _register(client, train_exp, tmp, 1)
    r1 = _nightly(client, nightly_exp, v1, median=2.00, auc=0.80)
    d1 = compare_nightly(r1, cfg)
    assert d1.previous_run_id is None and d1.champion_version is None
    assert d1.promoted and d1.exit_code == 0  # no champion yet: the first evaluated version becomes it
    assert _champion(client) == v1
    assert client.get_run(r1).data.tags["regression"] == "false"

    v2 = _register(client, train_exp, tmp, 2)
    r2 = _nightly(client, nightly_exp, v2, median=1.90, auc=0.82)  # better on both
    d2 = compare_nightly(r2, cfg)
    assert d2.previous_run_id == r1 and d2.champion_version == v1
    assert d2.promoted and not d2.regression
    assert _champion(client) == v2
    mv2 = client.get_model_version("avface", v2)
    assert float(mv2.tags["nightly.multiface/median"]) == 1.90 and mv2.tags["nightly.run_id"] == r2

    v3 = _register(client, train_exp, tmp, 3)
    r3 = _nightly(client, nightly_exp, v3, median=2.10, auc=0.82)  # 0.2 mm worse: beyond the 0.05 tolerance
    code = main(["--tracking-uri", uri, "--run-id", r3, "--rule", "multiface/median:lower:0.05",
                 "--rule", "faceset/auc:higher:0.01"])
    assert code == 1
    tags = client.get_run(r3).data.tags
    assert tags["regression"] == "true" and "multiface/median" in tags["regression.details"]
    assert tags["nightly.promoted"] == "false"
    assert _champion(client) == v2  # not moved

    # within tolerance of the champion and the previous nightly, but not better: no regression, no promotion
    r4 = _nightly(client, nightly_exp, v3, median=1.93, auc=0.815)
    d4 = compare_nightly(r4, cfg)
    assert d4.previous_run_id == r3 and not d4.regression and not d4.promoted and d4.exit_code == 0
    assert {(c.against, c.metric) for c in d4.comparisons} == {("previous", "multiface/median"),
                                                               ("previous", "faceset/auc"),
                                                               ("champion", "multiface/median"),
                                                               ("champion", "faceset/auc")}
    # higher-is-better direction: AUC dropping beyond its tolerance is a regression
    r5 = _nightly(client, nightly_exp, v3, median=1.90, auc=0.79)
    d5 = compare_nightly(r5, cfg)
    assert d5.regression and {c.metric for c in d5.comparisons if c.regressed} == {"faceset/auc"}
    assert _champion(client) == v2


def test_run_without_watched_metrics_is_an_error(store):
    uri, client, _, nightly_exp, _ = store
    run = client.create_run(nightly_exp, tags={NIGHTLY_TAG: "true"})
    client.set_terminated(run.info.run_id)
    with pytest.raises(ValueError, match="none of the watched metrics"):
        compare_nightly(run.info.run_id, NightlyConfig(uri, rules=RULES))

"""Every cluster manifest parses, has the fields its kind requires, and every entrypoint names a pipeline file
and a config that exist (pipelines/evaluate.py / conf/evaluate.yaml arrive with the evaluation pipeline)."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
CRON = re.compile(r"^(\S+\s+){4}\S+$")
ENTRY = re.compile(r"python\s+(pipelines/(\w+)\.py)")
MODULE = re.compile(r"python\s+-m\s+([\w.]+)")


def _docs() -> list[tuple[Path, dict]]:
    out = []
    for p in sorted([*CLUSTER.rglob("*.yaml"), *CLUSTER.rglob("*.yml")]):
        docs = [d for d in yaml.safe_load_all(p.read_text()) if d is not None]
        assert docs, f"{p}: empty"
        out += [(p, d) for d in docs]
    return out


DOCS = _docs()


def _by_kind(kind: str) -> list[tuple[Path, dict]]:
    return [(p, d) for p, d in DOCS if d.get("kind") == kind]


def _embedded_rayjobs() -> list[tuple[Path, dict]]:
    """RayJob manifests kept as strings in ConfigMaps (the CronJob fallback)."""
    out = []
    for p, cm in _by_kind("ConfigMap"):
        for key, text in cm.get("data", {}).items():
            if key.endswith((".yaml", ".yml")):
                out += [(p, d) for d in yaml.safe_load_all(text) if d and d.get("kind") == "RayJob"]
    return out


def _containers(pod_template: dict) -> list[dict]:
    cs = pod_template["spec"]["containers"]
    assert cs and all(c.get("image") and c.get("name") for c in cs)
    return cs


def _check_cluster_spec(spec: dict, where: str, need_gpu: bool) -> None:
    assert spec.get("rayVersion") == "2.60.0", where  # the pinned Ray
    _containers(spec["headGroupSpec"]["template"])
    kinds = set()
    for g in spec["workerGroupSpecs"]:
        assert g["groupName"] and g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], (where, g["groupName"])
        assert "rayStartParams" in g
        gpu = any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {}) for c in _containers(g["template"]))
        kinds.add("gpu" if gpu else "cpu")
        if g["replicas"] < g["maxReplicas"] and g["replicas"] == 0:  # only the autoscaler can add its workers
            assert spec.get("enableInTreeAutoscaling") is True, f"{where}: group {g['groupName']} never scales up"
    assert "cpu" in kinds, where
    if need_gpu:
        assert kinds == {"cpu", "gpu"}, f"{where}: needs a CPU and a GPU worker group, has {kinds}"


def _check_rayjob_spec(spec: dict, where: str) -> str:
    assert isinstance(spec["entrypoint"], str) and spec["entrypoint"].strip(), where
    assert ("rayClusterSpec" in spec) != ("clusterSelector" in spec), f"{where}: rayClusterSpec xor clusterSelector"
    if "runtimeEnvYAML" in spec:
        env = yaml.safe_load(spec["runtimeEnvYAML"])
        assert isinstance(env, dict), f"{where}: runtimeEnvYAML is not a YAML mapping"
        assert env.get("working_dir") == "/opt/avface", where  # the Dockerfile's WORKDIR
    for key in ("shutdownAfterJobFinishes",):
        assert isinstance(spec.get(key, False), bool), where
    for key in ("ttlSecondsAfterFinished", "activeDeadlineSeconds", "backoffLimit"):
        assert isinstance(spec.get(key, 0), int) and spec.get(key, 0) >= 0, (where, key)
    assert spec.get("submissionMode", "K8sJobMode") in ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")
    if "rayClusterSpec" in spec:
        name = ENTRY.search(spec["entrypoint"])
        _check_cluster_spec(spec["rayClusterSpec"], where,
                            need_gpu=bool(name) and name.group(2) in ("train", "evaluate", "preprocess"))
    return spec["entrypoint"]


def _entrypoints() -> list[tuple[str, str]]:
    out = [(f"{p.name}:{d['metadata'].get('name')}", d["spec"]["entrypoint"]) for p, d in _by_kind("RayJob")]
    out += [(f"{p.name}:{d['metadata']['name']}", d["spec"]["jobTemplate"]["entrypoint"])
            for p, d in _by_kind("RayCronJob")]
    out += [(f"{p.name}:configmap", d["spec"]["entrypoint"]) for p, d in _embedded_rayjobs()]
    for svc in sorted((CLUSTER / "systemd").glob("*.service")):
        out.append((svc.name, _unit(svc)["Service"]["ExecStart"]))
    return out


def _unit(path: Path) -> configparser.ConfigParser:
    c = configparser.ConfigParser(strict=False, interpolation=None)
    c.optionxform = str
    c.read_string(path.read_text())
    return c


def test_every_manifest_parses_and_has_a_known_kind():
    assert len(DOCS) >= 10
    kinds = {d.get("kind", "cluster-launcher" if "cluster_name" in d else None) for _, d in DOCS}
    assert kinds <= {"RayCluster", "RayJob", "RayCronJob", "CronJob", "ServiceAccount", "Role", "RoleBinding",
                     "ConfigMap", "cluster-launcher"}, kinds
    for p, d in DOCS:
        if "kind" in d:
            assert d.get("apiVersion") and d.get("metadata", {}).get("name"), p


def test_raycluster():
    (p, rc), = _by_kind("RayCluster")
    assert rc["apiVersion"] == "ray.io/v1"
    _check_cluster_spec(rc["spec"], str(p), need_gpu=True)


def test_rayjobs_for_preprocess_train_evaluate():
    pipelines = set()
    for p, d in _by_kind("RayJob"):
        assert d["apiVersion"] == "ray.io/v1"
        pipelines.add(ENTRY.search(_check_rayjob_spec(d["spec"], str(p))).group(2))
    assert {"preprocess", "train", "evaluate", "synthesize"} <= pipelines


def test_raycronjob_is_marked_alpha_behind_its_feature_gate():
    (p, cj), = _by_kind("RayCronJob")
    assert cj["apiVersion"] == "ray.io/v1"
    assert CRON.match(cj["spec"]["schedule"]) and cj["spec"].get("suspend") in (None, False, True)
    assert "timeZone" not in cj["spec"]  # a KubeRay 1.7 field: keep the manifest valid on 1.6
    entry = _check_rayjob_spec(cj["spec"]["jobTemplate"], str(p))
    assert "pipelines/evaluate.py" in entry and "nightly.enabled=true" in entry
    text = p.read_text()
    assert "1.6" in text and "ALPHA" in text and "feature gate" in text and "RayCronJob" in text
    readme = (CLUSTER / "README.md").read_text()
    assert "RayCronJob" in readme and "feature gate" in readme and "alpha" in readme.lower()


def test_cronjob_fallback_creates_a_rayjob_with_least_privilege():
    (p, cron), = _by_kind("CronJob")
    assert cron["apiVersion"] == "batch/v1" and CRON.match(cron["spec"]["schedule"])
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]
    assert pod["spec"]["restartPolicy"] in ("Never", "OnFailure")
    (container,) = _containers(pod)
    assert container["command"][:3] == ["kubectl", "create", "-f"]  # create: apply refuses generateName
    sa = pod["spec"]["serviceAccountName"]
    assert any(d["metadata"]["name"] == sa for q, d in _by_kind("ServiceAccount") if q == p)
    roles = {d["metadata"]["name"]: d for q, d in _by_kind("Role") if q == p}
    bindings = [d for q, d in _by_kind("RoleBinding") if q == p]
    (b,) = [b for b in bindings if any(s["kind"] == "ServiceAccount" and s["name"] == sa for s in b["subjects"])]
    assert b["roleRef"]["kind"] == "Role"
    rules = roles[b["roleRef"]["name"]]["rules"]
    assert any("ray.io" in r["apiGroups"] and "rayjobs" in r["resources"] and "create" in r["verbs"] for r in rules)
    assert all(set(r["verbs"]) <= {"create", "get"} for r in rules)  # nothing else
    cm_name = next(v["configMap"]["name"] for v in pod["spec"]["volumes"] if "configMap" in v)
    mount = container["volumeMounts"][0]["mountPath"]
    (cm,) = [d for q, d in _by_kind("ConfigMap") if q == p and d["metadata"]["name"] == cm_name]
    assert container["command"][3].startswith(mount + "/") and container["command"][3].split("/")[-1] in cm["data"]
    (rj,) = [d for q, d in _embedded_rayjobs() if q == p]
    assert rj["metadata"].get("generateName", "").endswith("-") and "name" not in rj["metadata"]
    entry = _check_rayjob_spec(rj["spec"], f"{p}:configmap")
    assert "nightly.enabled=true" in entry
    # the fallback runs the same job as the RayCronJob
    (_, rcj), = _by_kind("RayCronJob")
    assert rj["spec"]["entrypoint"] == rcj["spec"]["jobTemplate"]["entrypoint"]
    assert rj["spec"]["rayClusterSpec"] == rcj["spec"]["jobTemplate"]["rayClusterSpec"]


def test_cluster_launcher():
    (p, cfg), = [(p, d) for p, d in DOCS if "cluster_name" in d]
    assert cfg["provider"]["type"] and cfg["max_workers"] >= 1
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    for name, t in types.items():
        assert "node_config" in t and "resources" in t and t["min_workers"] <= t["max_workers"], name
    assert any(t["resources"].get("GPU") for t in types.values()) and any(
        not t["resources"].get("GPU") and t["resources"].get("CPU") for t in types.values())
    assert sum(t["max_workers"] for n, t in types.items() if n != cfg["head_node_type"]) <= cfg["max_workers"]
    assert any("--head" in c for c in cfg["head_start_ray_commands"]) and cfg["worker_start_ray_commands"]
    assert all("0.0.0.0" not in c for c in cfg["head_start_ray_commands"])  # dashboard on loopback


def test_local_schedule_systemd_and_cron():
    timer = _unit(CLUSTER / "systemd" / "avface-nightly.timer")
    assert timer["Timer"]["OnCalendar"] and timer["Timer"]["Unit"] == "avface-nightly.service"
    assert timer["Install"]["WantedBy"] == "timers.target"
    svc = _unit(CLUSTER / "systemd" / "avface-nightly.service")
    assert svc["Service"]["Type"] == "oneshot" and svc["Service"]["WorkingDirectory"]
    readme = (CLUSTER / "README.md").read_text()
    cron_lines = [ln.strip() for ln in readme.splitlines() if re.match(r"^\s*(\S+\s+){5}cd ", ln)]
    assert cron_lines and all("pipelines/evaluate.py" in ln for ln in cron_lines)
    assert "avface-nightly.timer" in readme


@pytest.mark.parametrize("where,entry", _entrypoints(), ids=[w for w, _ in _entrypoints()])
def test_entrypoint_names_a_pipeline_and_config_that_exist(where, entry):
    m = ENTRY.search(entry)
    if m is None:
        mod = MODULE.search(entry)
        assert mod, f"{where}: entrypoint names no pipeline: {entry!r}"
        assert (ROOT / (mod.group(1).replace(".", "/") + ".py")).is_file(), f"{where}: no module {mod.group(1)}"
        return
    assert (ROOT / m.group(1)).is_file(), f"{where}: {m.group(1)} does not exist"
    assert (ROOT / "conf" / f"{m.group(2)}.yaml").is_file(), f"{where}: conf/{m.group(2)}.yaml does not exist"

"""The README's cluster commands, run as they are in a fresh shell: a local Ray head started from the venv, the
synthesize, preprocess and train pipelines submitted as Ray jobs, the head stopped."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.ray]


def _cluster_block() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- cluster-commands -->\n```bash\n(.*?)```\n<!-- /cluster-commands -->", text, re.S)
    assert m, "README.md has no cluster-commands block"
    return m.group(1)


def test_readme_cluster_commands_run_verbatim_in_a_fresh_shell(tmp_path):
    import ray

    ray.shutdown()  # `ray stop` ends every Ray process on the machine, this test process's local one too
    block = _cluster_block()
    assert "ray start --head" in block and "pipelines/train.py" in block and block.rstrip().endswith("ray stop")
    # a fresh shell: no venv on PATH, no Ray or Python variables of this test process
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(Path.home()), "OUT": str(tmp_path / "cluster"),
           "OMP_NUM_THREADS": "1", "LANG": "C.UTF-8"}
    script = "set -euo pipefail\ntrap 'ray stop --force >/dev/null 2>&1 || true' EXIT\n" + block
    r = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, (r.stdout[-3000:] + r.stderr[-3000:])
    assert (r.stdout + r.stderr).lower().count("succeeded") >= 3
    out = tmp_path / "cluster"
    assert (out / "shards" / "index.parquet").exists()
    assert (out / "train" / "avface" / "pretrain" / "final.pt").exists()

"""Every benchmark runs, at its smallest configuration, as a script: it imports, runs and prints its table and its
ratio. The numbers are not checked (they are measurements of the machine); `make bench` runs the full sizes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"

# script -> (smallest arguments, starts Ray, patterns its output must contain: a table row and the ratio line).
# "{tmp}" is replaced by a fresh temporary directory, "{shards}" by the session's training shards (conftest).
SMALLEST = {
    "bench_models.py": ([], False, [r"\| total +\|", r"params ratio"]),
    "bench_occlusion.py": (["--sequences", "2"], False,
                           [r"occlude_sequence \(ours\) +[\d.]+", r"ratio occlusion / decode time: [\d.]+x",
                            r"Lab statistics, skin \| detected +[\d.]+", r"today's / baseline: [\d.]+x"]),
    "bench_pseudo_gt.py": (["--smoke", "--out", "{tmp}"], False,
                           [r"^\| pretrain \(fitted pseudo-ground truth\) \| [\d.]+ \|",
                            r"^ratio fitted / exact: v3d_mm [\d.]+"]),
    "bench_rasterizer.py": (["--quick", "--image-size", "64"], False, [r"speed-up", r"^ +9800 +16 .* \d+x"]),
    "bench_reconstruct.py": (["--quick", "--skip-paper", "--skip-memory"], False,
                             [r"^tiny +[\d.]+ +[\d.]+ +[\d.]+x", r"^tiny +none +none +\d+",
                              r"^tiny +landmarks +landmarks +\d+",
                              r"ratio tiny with the landmark fit / without: [\d.]+"]),
    "bench_refine.py": (["--shards", "{shards}", "--untrained", "--quick"], False,
                        [r"^\| \+ fit, exact landmarks \| [\d.]+ \|", r"ratio fit / network alone: NME [\d.]+"]),
    "bench_scan_to_mesh.py": (["--quick"], False, [r"query x", r"^ +80000 .* \d+x"]),
    "bench_synthesize.py": (["--clips", "2"], True, [r"^ray +2 +2 ", r"ratio Ray / one process: [\d.]+x",
                                                     r"ratio real / studio style \(one process\): [\d.]+x"]),
    "bench_preprocess.py": (["--clips", "2", "--seconds", "1", "--size", "64"], True,
                            [r"pipeline wall, 2 worker\(s\) +\d+", r"ratio pipeline/decode-only .*: [\d.]+"]),
    "bench_train_throughput.py": (["--smoke", "--out", "{tmp}", "--shards", "{shards}"], True,
                                  [r"\| Ray Train pretrain, 2 worker\(s\) \| [\d.]+ \|",
                                   r"loader \(1 worker\) / step \(pretrain\): [\d.]+x",
                                   r"Ray Train 2 workers / 1 worker: [\d.]+x"]),
    # in-process: the benchmark's own numbers, not Ray Train's start-up per stage (tests/test_train_pipeline.py)
    "bench_train_learning.py": (["--smoke", "--in-process", "--out", "{tmp}"], False,
                                [r"\| \+ occlusion fine-tune \| [\d.]+ \|",
                                 r"final model / constant baseline: lip vs constant [\d.]+",
                                 r"\| baseline: constant \| real \(unseen\) \| [\d.]+ \|",
                                 r"unseen style \(real\), final \(occlusion\): 3D / constant baseline [\d.]+"]),
}


def test_every_benchmark_has_a_smallest_configuration():
    assert sorted(p.name for p in BENCHMARKS.glob("bench_*.py")) == sorted(SMALLEST)


@pytest.fixture
def no_ray_in_this_process():
    """A benchmark that starts Ray starts its own local instance: none may be running in the test process."""
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("script", [pytest.param(s, marks=[pytest.mark.ray] if SMALLEST[s][1] else [])
                                    for s in sorted(SMALLEST)])
def test_benchmark_runs_at_its_smallest_and_prints_its_table_and_ratio(script, tmp_path, no_ray_in_this_process,
                                                                      request):
    args, _, patterns = SMALLEST[script]
    shards = str(request.getfixturevalue("train_shards")) if "{shards}" in args else ""
    args = [a.replace("{tmp}", str(tmp_path / "out")).replace("{shards}", shards) for a in args]
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, f"{script} {' '.join(args)} failed:\n{tail}"
    for pattern in patterns:
        assert re.search(pattern, proc.stdout, re.MULTILINE), f"{script}: no line matches {pattern!r}:\n{tail}"

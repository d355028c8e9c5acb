"""Node loss mid-job on a multi-node ray.cluster_utils.Cluster: the result equals a clean run's, sample for sample."""

import threading
import time

import pyarrow.parquet as pq
import pytest

from avface.data.testing import BAD_CLIPS, make_tiny_voxceleb2

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def _state(out):
    index = pq.read_table(out / "index.parquet").to_pandas()
    return ({p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))},
            sorted(zip(index.key, index.sha256, strict=True)))


def test_kill_worker_node_mid_job(tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    from avface.data.preprocess import run_preprocess
    from tests.test_preprocess import tiny_cfg

    if ray.is_initialized():
        ray.shutdown()
    root = make_tiny_voxceleb2(tmp_path / "vox", size=48, seconds=1.6, bad=True, n_good=8)

    def cfg(out):
        c = tiny_cfg(root, out, **{"video.image_size": 48, "shards.max_samples": 2})
        c.ray.num_cpus = None
        return c

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        cluster.add_node(num_cpus=1)
        victim = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)

        clean = run_preprocess(cfg(tmp_path / "clean"), init_ray=False)
        assert clean["shards_failed"] == [] and clean["samples"] == 16 + 2  # + 2 occluded copies

        out = tmp_path / "killed"
        result: dict = {}
        job = threading.Thread(target=lambda: result.update(run_preprocess(cfg(out), init_ray=False)))
        job.start()
        deadline = time.time() + 120
        while time.time() < deadline and not list((out / "_fragments").glob("*.done.json")):
            time.sleep(0.05)
        done_at_kill = len(list((out / "_fragments").glob("*.done.json")))
        cluster.remove_node(victim, allow_graceful=False)
        job.join(timeout=300)
        assert not job.is_alive()
        assert 0 < done_at_kill < clean["shards_planned"], "the node was not killed mid-job"
        if result.get("shards_failed"):  # retries exhausted: a re-run resumes
            result = run_preprocess(cfg(out), init_ray=False)
        rerun = run_preprocess(cfg(out), init_ray=False)
        assert rerun["shards_run"] == 0

        tars_clean, keys_clean = _state(tmp_path / "clean")
        tars_killed, keys_killed = _state(out)
        assert len({k for k, _ in keys_killed}) == len(keys_killed)  # no duplicates
        assert keys_killed == keys_clean  # no losses, same content
        assert tars_killed == tars_clean  # byte-identical shards
        fail = pq.read_table(out / "failures.parquet").to_pandas()
        assert len(fail) == len(BAD_CLIPS) and set(fail.stage) == {"validate"}
    finally:
        ray.shutdown()
        cluster.shutdown()

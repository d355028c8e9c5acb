"""The preprocessing job on a tiny VoxCeleb2 tree with real mp4s, local Ray, real tars read back two ways."""

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from avface.data.config import PreprocessConfig
from avface.data.sample import decode_sample
from avface.data.testing import BAD_CLIPS, GOOD_CLIPS, make_tiny_voxceleb2

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tiny_voxceleb2(tmp_path_factory.mktemp("vox"), size=64, seconds=1.6)


def tiny_cfg(root, out, **kw) -> PreprocessConfig:
    cfg = PreprocessConfig()
    cfg.data.root, cfg.out = str(root), str(out)
    cfg.video.image_size = 64
    cfg.ray.num_cpus, cfg.ray.task_memory_mb = 1, 200
    cfg.occlusion.windows = {"train": 2}
    cfg.shards.max_samples = 4
    cfg.progress = False
    for k, v in kw.items():
        obj = cfg
        *path, last = k.split(".")
        for p in path:
            obj = getattr(obj, p)
        setattr(obj, last, v)
    return cfg


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from avface.utils.ray_utils import init_ray

    init_ray(num_cpus=1)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def run1(tree, tmp_path_factory, ray_local):
    from avface.data.preprocess import run_preprocess

    out = tmp_path_factory.mktemp("shards")
    summary = run_preprocess(tiny_cfg(tree, out), init_ray=False)
    return out, summary


def test_manifest(run1):
    out, _ = run1
    m = pq.read_table(out / "manifest.parquet").to_pandas().set_index("clip_id")
    assert len(m) == len(GOOD_CLIPS) + len(BAD_CLIPS)
    for c in ("video", "utterance", "split", "duration", "fps", "audio_rate"):
        assert any(col.startswith(c) for col in m.columns), c
    good = m.loc[f"dev/{GOOD_CLIPS[0]}"]
    assert good.fps == 25.0 and good.num_frames == 40 and good.audio_rate == 16000 and good.vggface2_id
    assert good.txt_num_frames == 40 and good.txt_conf == 12.5
    assert m.loc[f"dev/{GOOD_CLIPS[1]}"].fps == 30.0
    assert m.loc[f"dev/{GOOD_CLIPS[2]}"].audio_path.endswith(".m4a")
    assert m.loc[f"dev/{GOOD_CLIPS[3]}"].gt_path.endswith(".npz")


def test_failures_recorded_job_succeeds(run1):
    out, summary = run1
    assert summary["shards_failed"] == []
    f = pq.read_table(out / "failures.parquet").to_pandas().set_index("clip_id")
    assert sorted(f.index) == sorted(f"dev/{c}" for c in BAD_CLIPS)
    err = {c.rsplit("/", 1)[1]: f.loc[f"dev/{c}"].error for c in BAD_CLIPS}
    assert "unreadable" in err["00001"] and "unreadable" in err["00002"]
    assert "no audio" in err["00003"] and "too short" in err["00004"]
    assert "zero-length" in err["00005"] and "huge resolution 4000x4000" in err["00006"]
    assert "frame rate 240" in err["00007"]
    assert set(f.stage) == {"validate"}


def _keys(paths):
    import webdataset as wds

    return [s for s in wds.WebDataset([str(p) for p in paths], shardshuffle=False)]


def test_samples_readable_by_webdataset(run1):
    out, summary = run1
    clean = sorted(out.glob("train-*.tar"))
    samples = _keys(clean)
    keys = [s["__key__"] for s in samples]
    assert len(keys) == len(set(keys)) == 2 * len(GOOD_CLIPS)  # 1.6 s -> 40 frames at 25 fps -> 2 windows each
    index = pq.read_table(out / "index.parquet").to_pandas()
    assert sorted(index[~index.occluded].key) == sorted(keys)
    assert all("." not in k for k in keys)
    by_key = {s["__key__"]: decode_sample(s) for s in samples}
    for k, d in by_key.items():
        assert d["frames"].shape == (16, 64, 64, 3) and d["frames"].dtype == np.uint8
        assert d["audio_features"].shape == (16, 16, 80) and d["audio_features"].dtype == np.float32
        assert d["landmarks"].shape == (16, 68, 2) and d["landmarks_valid"].shape == (16,)
        assert d["meta"]["key"] == k
    # ground-truth landmarks for the clip with a sidecar, resampled indices for the 30 fps clip
    gt = by_key["train_id00002_bbbbbbb-b_b_00002_000016"]
    assert gt["meta"]["landmark_source"] == "gt" and gt["landmarks_valid"].all()
    assert 10 < gt["landmarks"][..., 0].mean() < 54
    r30 = by_key["train_id00001_aaaaaaaaaaa_00002_000016"]["meta"]
    assert r30["source_fps"] == 30.0 and r30["source_indices"] == np.round(np.arange(16, 32) * 1.2).astype(int).tolist()
    real = by_key["train_id00001_aaaaaaaaaaa_00001_000000"]
    assert real["meta"]["landmark_source"] in ("none", "mediapipe")
    # the frame content survives: the bright synthetic "face" is in the centre
    assert real["frames"][:, 28:36, 28:36].mean() > real["frames"][:, :4, :4].mean()


def test_occluded_windows_with_masks(run1):
    out, summary = run1
    occ = sorted(out.glob("train_occ-*.tar"))
    samples = [decode_sample(s) for s in _keys(occ)]
    assert len(samples) == 2
    for d in samples:
        assert d["key"].endswith("_occ") and d["meta"]["occluded"]
        assert d["occlusion_mask"].shape == (16, 64, 64) and d["occlusion_mask"].max() > 0
        assert "seed" in json.dumps(d["meta"]["occlusion"])


def test_readable_by_ray_data(run1, ray_local):
    out, _ = run1
    paths = sorted(glob.glob(str(out / "*.tar")))
    rows = ray_local.data.read_webdataset(paths).take_all()
    index = pq.read_table(out / "index.parquet").to_pandas()
    assert sorted(r["__key__"] for r in rows) == sorted(index.key)
    d = decode_sample(rows[0])
    assert d["frames"].shape == (16, 64, 64, 3) and d["audio_features"].shape == (16, 16, 80)


def test_rerun_skips_and_resume_is_exact(run1, tree, ray_local):
    from avface.data.preprocess import run_preprocess

    out, first = run1
    tars = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    again = run_preprocess(tiny_cfg(tree, out), init_ray=False)
    assert again["shards_run"] == 0 and again["samples"] == first["samples"]
    # simulate a run killed mid-shard: one shard lost its done marker, its tar is half-written, a temp file remains
    victim = sorted(out.glob("train-*.tar"))[0]
    (out / "_fragments" / victim.name.replace(".tar", ".done.json")).unlink()
    victim.write_bytes(tars[victim.name][:1000])
    (out / f".{victim.name}.abc.tar.tmp").write_bytes(b"partial")
    resumed = run_preprocess(tiny_cfg(tree, out), init_ray=False)
    assert resumed["shards_run"] == 1
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == tars
    assert not list(out.glob(".*.tmp"))
    assert resumed["samples"] == first["samples"] and resumed["failures"] == first["failures"]


def test_failed_shard_not_listed_as_finished(run1, tree, tmp_path, ray_local):
    """A shard whose task fails on this run (here: its index fragment path is a directory, so the task's write
    raises IsADirectoryError) must appear only in shards_failed, not in summary["shards"], although an earlier run
    left its tar (and done.json) on disk; its clips are shard-level failure rows, none of its samples is indexed;
    the next run redoes it."""
    from avface.data.preprocess import run_preprocess

    src, first = run1
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    victim = sorted(out.glob("train-*.tar"))[-1]
    stem = victim.name[: -len(".tar")]
    assert victim.name in first["shards"]["train"]
    victim.write_bytes(b"stale tar of an earlier run")
    idx = out / "_fragments" / f"{stem}.index.parquet"
    idx.unlink()
    idx.mkdir()  # the shard is no longer finished, and its task cannot write this fragment
    summary = run_preprocess(tiny_cfg(tree, out, **{"ray.max_retries": 0}), init_ray=False)
    assert summary["shards_failed"] == [victim.name]
    assert victim.name not in summary["shards"]["train"]
    assert sorted(summary["shards"]["train"]) == sorted(n for n in first["shards"]["train"] if n != victim.name)
    index = pq.read_table(out / "index.parquet").to_pandas()
    assert victim.name not in set(index.shard)
    f = pq.read_table(out / "failures.parquet").to_pandas()
    rows = f[f.stage == "shard"]
    assert set(rows.shard) == {victim.name} and len(rows) > 0 and rows.error.str.contains("IsADirectory").all()
    assert json.loads((out / "summary.json").read_text())["shards"] == summary["shards"]
    idx.rmdir()
    again = run_preprocess(tiny_cfg(tree, out), init_ray=False)
    assert again["shards_failed"] == [] and again["shards_run"] == 1
    assert again["shards"] == first["shards"] and again["samples"] == first["samples"]


def test_in_process_run_writes_the_same_shards(run1, tree, tmp_path):
    """``use_ray=False`` (tests, a laptop without Ray) runs the same shard bodies one after another: the same tars,
    index and failures, byte for byte; a missing model file is the same clear error."""
    from avface.data.preprocess import run_preprocess

    ray_out, ray_summary = run1
    out = tmp_path / "here"
    summary = run_preprocess(tiny_cfg(tree, out), use_ray=False)
    tars = sorted(p.name for p in ray_out.glob("*.tar"))
    assert sorted(p.name for p in out.glob("*.tar")) == tars
    assert all((out / n).read_bytes() == (ray_out / n).read_bytes() for n in tars)
    assert {k: v for k, v in summary.items() if k != "seconds"} == \
        {k: v for k, v in ray_summary.items() if k != "seconds"}
    for name in ("index.parquet", "failures.parquet"):
        here, there = pq.read_table(out / name).to_pandas(), pq.read_table(ray_out / name).to_pandas()
        key = list(here.columns)
        assert here.sort_values(key).reset_index(drop=True).equals(there.sort_values(key).reset_index(drop=True))
    graph = tmp_path / "models" / "output_graph.pb"
    with pytest.raises(FileNotFoundError, match="output_graph.pb"):
        run_preprocess(tiny_cfg(tree, tmp_path / "o", **{"audio.kind": "deepspeech",
                                                           "audio.deepspeech_graph": str(graph)}), use_ray=False)


def test_changed_config_refused(run1, tree, ray_local):
    from avface.data.preprocess import run_preprocess

    out, _ = run1
    with pytest.raises(RuntimeError, match="different config"):
        run_preprocess(tiny_cfg(tree, out, **{"video.jpeg_quality": 50}), init_ray=False)


def test_missing_model_is_a_clear_error(tree, tmp_path, ray_local):
    from avface.data.preprocess import run_preprocess

    graph = tmp_path / "models" / "output_graph.pb"
    with pytest.raises(FileNotFoundError, match="output_graph.pb") as e:
        run_preprocess(tiny_cfg(tree, tmp_path / "o", **{"audio.kind": "deepspeech",
                                                           "audio.deepspeech_graph": str(graph)}), init_ray=False)
    assert str(graph) in str(e.value)


@pytest.mark.slow
def test_cli_hydra_phones(tree, tmp_path):
    """`python pipelines/preprocess.py data.root=... out=...` in its own process (its own local Ray)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    out = tmp_path / "cli"
    env = {**os.environ, "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    cmd = [sys.executable, str(ROOT / "pipelines" / "preprocess.py"), f"data.root={tree}", f"out={out}",
           "video.image_size=32", "audio.kind=phones", "ray.num_cpus=1", "ray.task_memory_mb=200",
           "occlusion.windows.train=0", "progress=false", "data.max_clips_per_split=3"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == 6 and summary["failures"] == 0
    d = decode_sample(_keys(sorted(out.glob("train-*.tar")))[0])
    assert d["audio_features"].shape == (16, 16, 42) and d["frames"].shape == (16, 32, 32, 3)
    shutil.rmtree(out)

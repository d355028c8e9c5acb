"""Sample encoding/decoding, keys, deterministic tars read back by webdataset, shard planning."""

import io
import json

import numpy as np
import pyarrow as pa
import pytest

from avface.data.clip import window_starts
from avface.data.config import PreprocessConfig
from avface.data.discovery import MANIFEST_SCHEMA
from avface.data.sample import decode_sample, encode_sample, sample_key, sanitize
from avface.data.shards import DeterministicTarWriter, plan_shards
from avface.data.testing import synthetic_frames
from avface.io.video import model_timeline


def _sample(rng, fmt="jpg", t=4, size=32, extras=True):
    frames = synthetic_frames(t, size, seed=int(rng.integers(100)))  # smooth content (JPEG-friendly)
    feats = rng.standard_normal((t, 16, 8)).astype(np.float32)
    lm = rng.uniform(0, size, (t, 68, 2)).astype(np.float32)
    valid = np.array([True, False] * (t // 2))
    normals = rng.standard_normal((t, size, size, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    normals[:, :4] = 0
    mask = rng.uniform(0, 1, (t, size, size)).astype(np.float32)
    key = sample_key("train", "id00001", "a.b/c", "00001", 16)
    s = encode_sample(key, frames, feats, lm, valid, {"start": 16}, normals=normals if extras else None,
                      occlusion_mask=mask if extras else None, frames_format=fmt)
    return s, frames, feats, lm, valid, normals, mask


def test_key_has_no_dots():
    k = sample_key("train", "id00001", "a.b/c d", "00001", 5, occluded=True)
    assert k == "train_id00001_a-b-c-d_00001_000005_occ"
    assert sanitize("x.y") == "x-y"
    with pytest.raises(ValueError):
        encode_sample("a.b", np.zeros((1, 16, 16, 3), np.uint8), np.zeros((1, 16, 1)), np.zeros((1, 68, 2)),
                      np.ones(1, bool), {})


@pytest.mark.parametrize("fmt", ["jpg", "npy"])
def test_roundtrip(rng, fmt):
    s, frames, feats, lm, valid, normals, mask = _sample(rng, fmt)
    d = decode_sample(s)
    assert d["frames"].shape == frames.shape and d["frames"].dtype == np.uint8
    if fmt == "npy":
        np.testing.assert_array_equal(d["frames"], frames)
    else:
        assert np.abs(d["frames"].astype(int) - frames).mean() < 8  # q90, 4:2:0 chroma, sharp edges
    np.testing.assert_array_equal(d["audio_features"], feats)
    np.testing.assert_array_equal(d["landmarks"], lm)
    np.testing.assert_array_equal(d["landmarks_valid"], valid)
    assert d["normals"].dtype == np.float32 and d["normals"].shape == normals.shape
    np.testing.assert_allclose(d["normals"], normals, atol=0.02)
    assert np.all(d["normals"][:, :4] == 0)
    assert d["occlusion_mask"].dtype == np.uint8
    np.testing.assert_allclose(d["occlusion_mask"] / 255.0, mask, atol=1 / 255)
    assert d["meta"]["start"] == 16 and d["meta"]["num_frames"] == 4


def test_tar_is_deterministic_and_readable_by_webdataset(tmp_path, rng):
    import webdataset as wds

    samples = []
    for i in range(3):
        s = _sample(np.random.default_rng(i))[0]
        s["__key__"] = f"k{i}"
        samples.append(s)
    paths = []
    for name in ("a.tar", "b.tar"):
        with open(tmp_path / name, "wb") as f:
            w = DeterministicTarWriter(f)
            for s in samples:
                w.write(s)
            w.close()
        paths.append(tmp_path / name)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    got = list(wds.WebDataset(str(paths[0]), shardshuffle=False))
    assert [g["__key__"] for g in got] == ["k0", "k1", "k2"]
    d = decode_sample(got[1])
    np.testing.assert_array_equal(d["audio_features"], np.load(io.BytesIO(samples[1]["audio_features.npy"])))
    assert json.loads(got[1]["meta.json"])["start"] == 16


def test_resample_and_windows():
    # preprocessing's timeline is the reader's (avface.io.video.model_timeline): nearest source frame in time
    np.testing.assert_array_equal(model_timeline(np.arange(30) / 30.0, 25.0)[1],
                                  np.round(np.arange(25) * 1.2).astype(int))
    assert len(model_timeline(np.arange(48) / 30.0, 25.0)[1]) == 40
    np.testing.assert_array_equal(model_timeline(np.arange(10) / 25.0, 25.0)[1], np.arange(10))
    assert window_starts(40, 16, 16) == [0, 16]
    assert window_starts(15, 16, 16) == []
    assert window_starts(20, 16, 2) == [0, 2, 4]


def _manifest(n):
    rows = []
    for i in range(n):
        rows.append({"clip_id": f"dev/id{i % 3:05d}/yt/{i:05d}", "split": "dev" if i % 4 else "test",
                     "identity": f"id{i % 3:05d}", "ytid": "yt", "utterance": f"{i:05d}", "video_path": f"/x/{i}.mp4",
                     "file_bytes": 1, "num_frames": 40 + 16 * (i % 5), "fps": 25.0, "has_audio": True,
                     "width": 224, "height": 224})
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)


def test_plan_is_deterministic_and_bounded():
    cfg = PreprocessConfig()
    cfg.shards.max_samples = 7
    cfg.occlusion.windows = {"train": 10, "test": 100}
    m = _manifest(40)
    a, b = plan_shards(m, cfg), plan_shards(m, cfg)
    assert [(p.name, [r["clip_id"] for r in p.clips], p.occluded) for p in a] == \
           [(p.name, [r["clip_id"] for r in p.clips], p.occluded) for p in b]
    names = [p.name for p in a]
    assert names[0] == "test-000000.tar" and "train-000000.tar" in names
    for p in a:
        n = sum(len(window_starts(int(r["num_frames"]), 16, 16)) for r in p.clips)
        assert n <= 7 or len(p.clips) == 1
    occ = {s: sum(len(v) for p in a if p.split == s for v in p.occluded.values()) for s in ("train", "test")}
    total_test = sum(len(window_starts(int(r["num_frames"]), 16, 16)) for p in a if p.split == "test" for r in p.clips)
    assert occ == {"train": 10, "test": min(100, total_test)}


def test_read_fragments_skips_unfinished_shards(tmp_path):
    """A shard killed after its fragments but before done.json (or failing on the re-run) is not finished: its
    stale index rows must not reach index.parquet next to the shard-level failure rows the driver adds."""
    import pyarrow.parquet as pq

    from avface.data.shards import FAILURES_SCHEMA, FRAGMENTS, INDEX_SCHEMA, ShardPlan, read_fragments

    frag = tmp_path / FRAGMENTS
    frag.mkdir()
    plans = [ShardPlan("train", i, [{"clip_id": f"c{i}", "video_path": f"/v{i}.mp4"}]) for i in range(2)]
    for p in plans:
        (tmp_path / p.name).write_bytes(b"x" * 10)
        row = {"key": f"k{p.index}", "shard": p.name, "split": "train", "clip_id": f"c{p.index}", "start": 0,
               "num_frames": 16, "occluded": False, "bytes": 1, "landmarks_valid": 0, "sha256": ""}
        pq.write_table(pa.Table.from_pylist([row], schema=INDEX_SCHEMA), frag / f"{p.stem}.index.parquet")
        pq.write_table(FAILURES_SCHEMA.empty_table(), frag / f"{p.stem}.failures.parquet")
    (frag / f"{plans[0].stem}.done.json").write_text(json.dumps({"tars": {plans[0].name: 10}}))
    index, failures = read_fragments(tmp_path, plans)
    assert index.column("key").to_pylist() == ["k0"]
    assert failures.num_rows == 0


def test_overwrite_with_a_new_plan_removes_the_old_shards(tmp_path):
    """overwrite=true with a plan of fewer shards: tars of the old plan that the new one does not rebuild must not
    stay next to the new ones (a ``train-*.tar`` glob would read old and new samples); an unchanged plan with
    overwrite=true keeps finished shards (resume)."""
    from avface.data.preprocess import _write_plan
    from avface.data.shards import FRAGMENTS

    cfg = PreprocessConfig()
    cfg.shards.max_samples = 2
    m = _manifest(6)
    old = plan_shards(m, cfg)
    assert len([p for p in old if p.split == "train"]) > 1
    _write_plan(tmp_path, cfg, old)
    frag = tmp_path / FRAGMENTS
    frag.mkdir()
    for p in old:
        for name in (p.name, p.occ_name):
            (tmp_path / name).write_bytes(b"x")
        for k in ("index.parquet", "failures.parquet", "done.json"):
            (frag / f"{p.stem}.{k}").write_text("{}")
    cfg.overwrite = True
    _write_plan(tmp_path, cfg, old)  # same plan: nothing is forgotten
    assert all((frag / f"{p.stem}.done.json").is_file() for p in old)
    cfg.shards.max_samples = 1000
    new = plan_shards(m, cfg)
    _write_plan(tmp_path, cfg, new)
    left = sorted(p.name for p in tmp_path.glob("*.tar"))
    assert set(left) <= {n for p in new for n in (p.name, p.occ_name)}
    assert not list(frag.glob("*.done.json"))
    assert {f.name.split(".")[0] for f in frag.iterdir()} <= {p.stem for p in new}

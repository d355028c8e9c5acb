"""avface.evaluate: result tables beside the paper's numbers, CED / heat-map pictures, partitioned per-frame
parquet aggregated with dask (on a local Ray through ray.util.dask, and on dask.distributed)."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest
import trimesh
from PIL import Image

from avface.evaluate import (
    ErrorPanel,
    MethodResult,
    aggregate_frame_results,
    faceset_summary,
    plot_ced,
    read_frame_results,
    render_error_heatmaps,
    write_frame_results,
    write_results,
)


def test_results_tables_with_the_papers_numbers(tmp_path, rng):
    nme = rng.uniform(0.005, 0.03, 200)
    ours = faceset_summary(nme, nme_lips=nme * 0.6, nme_occ=nme[:50] * 1.5, vertex_error_mm=1.2)
    assert ours["nme"] == pytest.approx(100 * nme.mean())
    assert ours["auc"] == pytest.approx(1 - np.minimum(nme, 0.1).mean() / 0.1, abs=2e-3)
    rows = [MethodResult("avface (ours)", "faceset", ours, count=200),
            MethodResult("mean face", "faceset", faceset_summary(nme * 2), count=200),
            MethodResult("avface (ours)", "multiface", {"median": 1.7, "mean": 2.1, "std": 1.5}, count=30)]
    md, cs = write_results(tmp_path, rows, header_notes={"model": "models:/avface/3"})
    text = md.read_text()
    assert "## Table 4" in text and "## Table 5" in text and "models:/avface/3" in text
    assert "| *AVFace* | *paper (AVFace, CVPR 2023), Table 4* | – | 1.63 | 0.84 | 0.91 | 2.39 |" in text
    assert "| *DECA* | *paper (AVFace, CVPR 2023), Table 5* | – | 1.68 | 2.01 | 1.60 |" in text
    assert f"| avface (ours) | ours | 200 | {ours['nme']:.2f} |" in text
    with open(cs) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 3 + 4  # ours + the paper's AVFace / DECA in both tables
    paper = [r for r in table if r["source"].startswith("paper") and r["method"] == "AVFace"]
    assert {r["table"] for r in paper} == {"faceset", "multiface"}
    p4 = next(r for r in paper if r["table"] == "faceset")
    assert float(p4["nme"]) == 1.63 and float(p4["auc"]) == 0.84 and p4["median"] == ""
    assert float(next(r for r in table if r["method"] == "avface (ours)" and r["table"] == "faceset")
                 ["vertex_error_mm"]) == 1.2
    with pytest.raises(ValueError, match="table"):
        write_results(tmp_path, [MethodResult("x", "nope", {})])


def test_ced_plot_and_heatmap_pictures(tmp_path, rng):
    p = plot_ced({"ours": rng.uniform(0, 0.05, 100), "mean face": rng.uniform(0, 0.1, 100)}, tmp_path / "ced.png")
    img = np.asarray(Image.open(p))
    assert img.ndim == 3 and img.shape[0] > 100 and img.std() > 10
    m = trimesh.creation.icosphere(3, radius=100.0)
    v, f = np.asarray(m.vertices), np.asarray(m.faces)
    err = np.clip(v[:, 0] / 100 * 3 + 3, 0, None)  # 0 mm on the left (x = -100), 6 mm on the right
    out = render_error_heatmaps([ErrorPanel("ours", v, f, err), ErrorPanel("DECA", v, f, err * 2)],
                                tmp_path / "heat.png", vmax=6.0)
    rgb = np.asarray(Image.open(out).convert("RGB")).astype(float)
    assert rgb.shape[1] > rgb.shape[0]  # two panels side by side + colour bar
    # the left panel's sphere: blue (low error) on its left, red (high) on its right ("jet")
    h, w = rgb.shape[:2]
    row = rgb[h // 2, : int(w * 0.45)]
    coloured = np.nonzero(np.abs(row - 255).sum(1) > 60)[0]
    left, right = row[coloured[2]], row[coloured[-3]]
    assert left[2] > left[0] + 50 and right[0] > right[2] + 50, (left, right)
    with pytest.raises(ValueError, match="errors"):
        render_error_heatmaps([ErrorPanel("x", v, f, err[:10])], tmp_path / "bad.png")


def _frames(rng, n=60) -> pd.DataFrame:
    return pd.DataFrame({"method": np.repeat(["ours", "mean face"], n // 2),
                         "speaker": np.tile(["id00017", "id00018", "id 19/x"], n // 3),
                         "frame": np.arange(n), "nme": rng.uniform(0, 0.05, n), "occluded": rng.random(n) > 0.5})


@pytest.mark.ray
def test_partitioned_parquet_aggregated_with_dask_on_ray(tmp_path, rng):
    from avface.utils.ray_utils import init_ray

    df = _frames(rng)
    root = tmp_path / "frames"
    # two writers (as two Ray tasks would), each its own fragments; a retry of writer a replaces its files
    write_frame_results(df.iloc[:30], root, name="a")
    write_frame_results(df.iloc[30:], root, name="b")
    files = write_frame_results(df.iloc[:30], root, name="a")
    assert all(p.name == "part-a.parquet" for p in files)
    assert (root / "method=ours" / "speaker=id%2019%2Fx").is_dir()  # URI-encoded partition values
    back = read_frame_results(root)
    assert len(back) == len(df) and set(back["method"]) == {"ours", "mean face"}
    assert set(back["speaker"]) == {"id00017", "id00018", "id 19/x"}
    only = read_frame_results(root, filters=[("method", "=", "ours")])
    assert len(only) == 30

    want = df.groupby("method")["nme"].agg(["mean", "median", "std", "count"])
    import ray

    init_ray(num_cpus=1)
    try:
        agg = aggregate_frame_results(root, by=["method"], metrics=["nme"], scheduler="ray")
    finally:
        ray.shutdown()
    agg = agg.set_index("method")
    for s in ("mean", "median", "std", "count"):
        assert np.allclose(agg[f"nme_{s}"].sort_index(), want[s].sort_index()), s
    # by an ordinary column and a partition column, on dask.distributed (no Ray running)
    agg2 = aggregate_frame_results(root, by=["method", "occluded"], metrics=["nme"], scheduler="distributed")
    want2 = df.groupby(["method", "occluded"])["nme"].mean()
    assert np.allclose(agg2.set_index(["method", "occluded"])["nme_mean"].sort_index(), want2.sort_index())
    with pytest.raises(ValueError, match="not in"):
        aggregate_frame_results(root, by=["phoneme"], scheduler="sync")
    with pytest.raises(ValueError, match="partition columns"):
        write_frame_results(df.drop(columns="speaker"), root)

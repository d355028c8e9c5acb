"""Per-frame / per-vertex results as a partitioned parquet data set, and its aggregation with dask.dataframe.

At VoxCeleb2 / Multiface scale the rows do not fit one process: every Ray task writes its own fragments with
:func:`write_frame_results` (hive layout ``<root>/method=<m>/speaker=<s>/part-<name>.parquet``, each file written
atomically), and :func:`aggregate_frame_results` reduces them with ``dask.dataframe``, scheduled on the Ray
cluster through ``ray.util.dask`` when Ray is running (tested with dask 2026.8.0 and Ray 2.60), else on a
``dask.distributed`` local cluster, or in this process (``scheduler="sync"``). The same data set is what a user
loads (``pandas.read_parquet(root)`` / :func:`read_frame_results`) to slice results by speaker, occlusion or
phoneme.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from avface.utils.files import atomic_path

__all__ = ["write_frame_results", "read_frame_results", "aggregate_frame_results"]

Scheduler = Literal["auto", "ray", "distributed", "sync"]


def _part_value(v) -> str:
    """A partition value as a path segment: URI-encoded, which pyarrow's and dask's hive readers decode."""
    s = quote(str(v), safe="")
    if not s or s.startswith("."):
        raise ValueError(f"partition value {v!r} cannot be a directory name")
    return s


def write_frame_results(rows: pd.DataFrame | Sequence[dict], root: str | Path,
                        partition_cols: Sequence[str] = ("method", "speaker"), name: str | None = None) -> list[Path]:
    """Write rows (one per frame, or per vertex) under ``root`` partitioned by ``partition_cols``; one file per
    partition named ``part-<name>.parquet`` (``name``: unique per writer, e.g. the Ray task's clip id; default a
    uuid). Re-writing with the same name replaces that writer's files (idempotent retries). Returns the files."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    missing = [c for c in partition_cols if c not in df.columns]
    if missing:
        raise ValueError(f"write_frame_results: partition columns {missing} not in the rows ({list(df.columns)})")
    name = _part_value(name or uuid.uuid4().hex)
    if "%" in name:
        raise ValueError(f"write_frame_results: name {name!r} must be a plain file-name part")
    root = Path(root)
    paths = []
    groups = df.groupby(list(partition_cols), sort=True, dropna=False) if partition_cols else [((), df)]
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        d = root.joinpath(*(f"{c}={_part_value(v)}" for c, v in zip(partition_cols, key, strict=True)))
        path = d / f"part-{name}.parquet"
        table = pa.Table.from_pandas(part.drop(columns=list(partition_cols)), preserve_index=False)
        with atomic_path(path, suffix=".parquet") as tmp:
            pq.write_table(table, tmp)
        paths.append(path)
    return paths


def read_frame_results(root: str | Path, filters=None) -> pd.DataFrame:
    """The whole data set (or the rows matching pyarrow ``filters``) as one pandas frame, partition columns
    included (as strings)."""
    import pyarrow.dataset as ds

    dataset = ds.dataset(str(root), format="parquet", partitioning="hive", exclude_invalid_files=True,
                         ignore_prefixes=[".", "_"])
    table = dataset.to_table(filter=pq.filters_to_expression(filters) if filters else None)
    return table.to_pandas()


def _scheduler(kind: Scheduler):
    """-> (dask scheduler for compute(), closer)."""
    if kind in ("auto", "ray"):
        import ray

        if ray.is_initialized():
            from ray.util.dask import ray_dask_get

            return ray_dask_get, lambda: None
        if kind == "ray":
            raise RuntimeError("scheduler='ray' needs a running Ray (avface.utils.ray_utils.init_ray())")
        kind = "distributed"
    if kind == "distributed":
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)
        client = Client(cluster)

        def close() -> None:
            client.close()
            cluster.close()

        return client.get, close
    if kind == "sync":
        return "sync", lambda: None
    raise ValueError(f"scheduler must be auto | ray | distributed | sync, got {kind!r}")


def aggregate_frame_results(root: str | Path, by: Sequence[str] = ("method",), metrics: Sequence[str] | None = None,
                            stats: Sequence[str] = ("mean", "std", "median", "count"),
                            scheduler: Scheduler = "auto", filters=None) -> pd.DataFrame:
    """Group the partitioned parquet under ``root`` by ``by`` (partition or ordinary columns) and reduce the
    ``metrics`` columns (default: every numeric column not in ``by``) with ``stats`` -> pandas frame with columns
    ``<metric>_<stat>``, one row per group, sorted by the group keys. The medians are exact (dask shuffles the
    groups). ``scheduler``: auto = Ray if running, else a dask.distributed local cluster."""
    import dask.dataframe as dd

    ddf = dd.read_parquet(str(root), filters=filters)
    by = list(by)
    missing = [c for c in by if c not in ddf.columns]
    if missing:
        raise ValueError(f"aggregate_frame_results: columns {missing} not in {root} (has {list(ddf.columns)})")
    for c in by:  # hive partitions come back as categoricals; group on plain strings
        if isinstance(ddf[c].dtype, pd.CategoricalDtype):
            ddf[c] = ddf[c].astype(str)
    if metrics is None:
        metrics = [c for c, t in ddf.dtypes.items() if c not in by and pd.api.types.is_numeric_dtype(t)
                   and not pd.api.types.is_bool_dtype(t)]
    if not metrics:
        raise ValueError(f"aggregate_frame_results: no numeric metric columns in {root}")
    get, close = _scheduler(scheduler)
    try:
        agg = ddf.groupby(by)[list(metrics)].agg(list(stats), shuffle_method="tasks").compute(scheduler=get)
    finally:
        close()
    agg.columns = [f"{m}_{s}" for m, s in agg.columns]
    return agg.reset_index().sort_values(by).reset_index(drop=True)

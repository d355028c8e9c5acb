"""Result tables in the paper's form: ``results.md`` and ``results.csv``, a row per method, the paper's reported
numbers beside ours and labelled as the paper's (Tables 4 and 5 of AVFace, CVPR 2023).

Table 4 (FaceSet, 2D landmarks): NME in percent of the inter-ocular distance, AUC, NME of the lips, NME on the
occluded test set. The paper does not state the AUC's threshold; with AUC_a = 1 - E[min(e, a)] / a its numbers fit
a = 0.1 (AVFace: 1 - 0.0163 / 0.1 = 0.84, DECA: 1 - 0.0185 / 0.1 = 0.82; a = 0.07 would give 0.77 / 0.74), so
``auc`` is AUC_0.1 and ``auc_0.07`` is reported beside it. Table 5 (Multiface): scan-to-mesh median / mean / std in
mm. Columns the paper does not have (3D vertex error, LVE, jitter) are ours only.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avface.metrics import auc, failure_rate
from avface.utils.files import atomic_path

__all__ = ["PAPER_SOURCE", "PAPER_TABLE4", "PAPER_TABLE5", "FACESET_COLUMNS", "MULTIFACE_COLUMNS", "MethodResult",
           "faceset_summary", "paper_rows", "write_results"]

PAPER_SOURCE = "paper (AVFace, CVPR 2023)"
PAPER_TABLE4: dict[str, dict[str, float]] = {
    "AVFace": {"nme": 1.63, "auc": 0.84, "nme_lips": 0.91, "nme_occ": 2.39},
    "DECA": {"nme": 1.85, "auc": 0.82, "nme_lips": 1.25, "nme_occ": 3.89},
}
PAPER_TABLE5: dict[str, dict[str, float]] = {
    "AVFace": {"median": 1.61, "mean": 1.98, "std": 1.59},
    "DECA": {"median": 1.68, "mean": 2.01, "std": 1.60},
}
#: (key, header) in table order; arrows say which direction is better
FACESET_COLUMNS: tuple[tuple[str, str], ...] = (
    ("nme", "NME (%) ↓"), ("auc", "AUC@0.1 ↑"), ("nme_lips", "NME lips (%) ↓"), ("nme_occ", "NME occ (%) ↓"),
    ("auc_0.07", "AUC@0.07 ↑"), ("failure_rate", "failure@0.1 ↓"), ("vertex_error_mm", "3D error (mm) ↓"),
    ("lve_mm2", "LVE (mm²) ↓"), ("jitter", "jitter (mm/frame²) ↓"))
MULTIFACE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("median", "Median (mm) ↓"), ("mean", "Mean (mm) ↓"), ("std", "Std (mm) ↓"), ("jitter", "jitter (mm/frame²) ↓"))
_TABLES = {"faceset": ("Table 4: FaceSet-style landmarks", FACESET_COLUMNS, PAPER_TABLE4, "Table 4"),
           "multiface": ("Table 5: Multiface scan-to-mesh", MULTIFACE_COLUMNS, PAPER_TABLE5, "Table 5")}


@dataclass
class MethodResult:
    """One row: ``table`` 'faceset' or 'multiface'; ``source`` 'ours' or the paper's label; ``metrics`` by column
    key; ``count``: samples / frames it is computed from (0 for the paper's)."""

    method: str
    table: str
    metrics: dict[str, float]
    source: str = "ours"
    count: int = 0
    notes: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def faceset_summary(nme: np.ndarray, nme_lips: np.ndarray | None = None, nme_occ: np.ndarray | None = None,
                    **extra: float) -> dict[str, float]:
    """Table 4 numbers from per-sample NMEs (fractions): nme, nme_lips: (N,), nme_occ: (M,) -> NMEs in percent,
    AUC at 0.1 and 0.07, failure rate at 0.1; ``extra`` (e.g. vertex_error_mm) is passed through."""
    nme = np.asarray(nme, dtype=np.float64)
    out = {"nme": 100 * float(np.nanmean(nme)), "auc": auc(nme, 0.1), "auc_0.07": auc(nme, 0.07),
           "failure_rate": failure_rate(nme, 0.1)}
    if nme_lips is not None:
        out["nme_lips"] = 100 * float(np.nanmean(nme_lips))
    if nme_occ is not None and len(nme_occ):
        out["nme_occ"] = 100 * float(np.nanmean(nme_occ))
    out.update({k: float(v) for k, v in extra.items()})
    return out


def paper_rows() -> list[MethodResult]:
    rows = []
    for table, (_, _, paper, label) in _TABLES.items():
        rows += [MethodResult(m, table, dict(v), source=f"{PAPER_SOURCE}, {label}") for m, v in paper.items()]
    return rows


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.2f}" if abs(x) >= 0.01 or x == 0 else f"{x:.2e}"


def write_results(out_dir: str | Path, results: Sequence[MethodResult], include_paper: bool = True,
                  title: str = "avface evaluation", header_notes: Mapping[str, str] | None = None) -> tuple[Path, Path]:
    """Write ``results.md`` (one markdown table per paper table, ours first, then the paper's rows in italics) and
    ``results.csv`` (table, method, source, count, every metric column) atomically. Returns (md, csv) paths."""
    out = Path(out_dir)
    rows = list(results) + (paper_rows() if include_paper else [])
    for r in rows:
        if r.table not in _TABLES:
            raise ValueError(f"MethodResult {r.method!r}: table must be one of {sorted(_TABLES)}, got {r.table!r}")
    md = [f"# {title}", ""]
    for k, v in (header_notes or {}).items():
        md.append(f"- {k}: {v}")
    if header_notes:
        md.append("")
    for table, (name, columns, _, label) in _TABLES.items():
        trows = [r for r in rows if r.table == table]
        if not any(r.source == "ours" for r in trows):
            continue
        used = [(k, h) for k, h in columns if any(k in r.metrics for r in trows)]
        md += [f"## {name}", "", "| Method | Source | N | " + " | ".join(h for _, h in used) + " |",
               "|---|---|---|" + "---|" * len(used)]
        for r in trows:
            ours = r.source == "ours"
            cells = [r.method if ours else f"*{r.method}*", r.source if ours else f"*{r.source}*",
                     str(r.count) if ours else "–"] + [_fmt(r.metrics.get(k)) for k, _ in used]
            md.append("| " + " | ".join(cells) + " |")
        md += ["", f"Rows in italics are the numbers reported in the paper ({label}), not measured here; they come "
                   "from different data (VoxCeleb2 test / real Multiface captures)." if include_paper else "", ""]
    keys = list(dict.fromkeys(k for t in _TABLES.values() for k, _ in t[1]))
    keys += sorted({k for r in rows for k in r.metrics} - set(keys))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["table", "method", "source", "count", *keys, "notes"])
    for r in rows:
        w.writerow([r.table, r.method, r.source, r.count,
                    *("" if r.metrics.get(k) is None else repr(float(r.metrics[k])) for k in keys), r.notes])
    md_path, csv_path = out / "results.md", out / "results.csv"
    with atomic_path(md_path) as tmp:
        tmp.write_text("\n".join(md).rstrip() + "\n", encoding="utf-8")
    with atomic_path(csv_path) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
    return md_path, csv_path

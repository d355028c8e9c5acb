"""The ablation report: ``ablation.md``, ``ablation.csv`` and one bar chart per table (mean +- std over seeds),
the paper's numbers beside each table (labelled as the paper's) and one line per claim of the paper.

How a difference is decided (:func:`compare`): two rows differ on a metric only when their means are further apart
than the sum of their seeds' standard deviations (sample std, ``ddof=1``), i.e. the spreads do not overlap; with
fewer than two seeds in either row there is no spread and nothing is decided (the direction is still printed).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from avface.ablation.grid import CLAIMS, PAPER, PAPER_COLUMNS, TABLES, Claim, Row
from avface.utils.files import atomic_path

__all__ = ["METRICS", "HIGHER_IS_BETTER", "RowStats", "aggregate", "compare", "claim_verdict", "write_report",
           "LIP_NOTES"]

#: the report's columns: the paper's (NME, AUC, lip NME in %; NME on occluded windows) and the 3D ones the
#: synthetic corpus allows (mm; jitter mm / frame^2)
METRICS: dict[str, str] = {"nme": "NME %", "auc": "AUC", "nme_lips": "lip NME %", "nme_occ": "NME occ %",
                           "v3d_mm": "3D vertex mm", "lip_mm": "lip vertex mm", "expression_mm": "expression mm",
                           "jitter": "jitter mm/f²"}
HIGHER_IS_BETTER = {"auc"}
#: the research notes with the lip stage's measurements (linked where the lip claim does not hold), repository paths
REPO = Path(__file__).resolve().parents[2]
LIP_NOTES = ("docs/research/2026-12-02-lip-stage-optimum-and-oracle.md",
             "docs/research/2026-12-02-lip-frame-and-lowpass-normals.md",
             "docs/research/2026-12-02-what-limits-the-tiny-model.md")


class RowStats:
    """One row's metrics over its seeds: ``mean[m]``, ``std[m]`` (nan with one seed), ``n``."""

    def __init__(self, values: list[dict[str, float]]):
        self.n = len(values)
        self.mean: dict[str, float] = {}
        self.std: dict[str, float] = {}
        for m in METRICS:
            v = np.array([x[m] for x in values if m in x and x[m] is not None and math.isfinite(x[m])], float)
            self.mean[m] = float(v.mean()) if len(v) else math.nan
            self.std[m] = float(v.std(ddof=1)) if len(v) > 1 else math.nan


def aggregate(rows: list[Row], results: list[dict[str, Any]]) -> dict[str, RowStats]:
    """Row name -> its stats; a ``same_as`` row gets the stats of the row trained for it."""
    by: dict[str, list[dict[str, float]]] = {}
    for r in results:
        by.setdefault(r["row"], []).append(r["metrics"])
    out = {}
    for row in rows:
        values = by.get(row.same_as or row.name)
        if values:
            out[row.name] = RowStats(values)
    return out


def compare(a: RowStats, b: RowStats, metric: str) -> str:
    """"better" / "worse" (a against b, beyond the seeds' spread), "same" (within it), "undecided" (no spread:
    fewer than two seeds) or "missing"."""
    ma, mb = a.mean[metric], b.mean[metric]
    if not (math.isfinite(ma) and math.isfinite(mb)):
        return "missing"
    spread = a.std[metric] + b.std[metric]
    if not math.isfinite(spread):
        return "undecided"
    diff = (mb - ma) if metric not in HIGHER_IS_BETTER else (ma - mb)  # > 0: a is better
    if abs(diff) <= spread:
        return "same"
    return "better" if diff > 0 else "worse"


def _fmt(stats: RowStats, m: str) -> str:
    mean, std = stats.mean[m], stats.std[m]
    if not math.isfinite(mean):
        return "–"
    digits = 3 if m in ("auc", "jitter") else 2
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if math.isfinite(std) else f"{mean:.{digits}f}"


def claim_verdict(claim: Claim, stats: dict[str, RowStats], why_not: dict[str, str | None]) -> str:
    """One line: whether ``claim`` holds here, with the numbers."""
    names = (claim.better, *claim.than)
    missing = [n for n in names if n not in stats]
    if missing:
        reasons = sorted({why_not.get(n) or "not in this grid" for n in missing})
        return f"**not tested**: row(s) {', '.join(missing)} not run ({'; '.join(reasons)})"
    a = stats[claim.better]
    verdicts, parts = [], []
    for other in claim.than:
        b = stats[other]
        for m in claim.metrics:
            v = compare(a, b, m)
            verdicts.append(v)
            parts.append(f"{m} {claim.better} {_fmt(a, m)} vs {other} {_fmt(b, m)}: {v}")
    if all(v == "better" for v in verdicts):
        head = "**holds**"
    elif any(v == "worse" for v in verdicts):
        head = "**does not hold**"
    elif any(v == "undecided" for v in verdicts):
        head = "**not decided** (one seed: no spread to judge by)"
    else:
        head = "**not shown** (differences within the seeds' spread)"
    line = f"{head}; " + "; ".join(parts)
    if head.startswith("**does not hold") and "lip" in claim.text:
        # the report lives in the grid's out dir and in MLflow: link the notes where this checkout has them
        line += ". The lip stage's measurements (in the repository): " + ", ".join(
            f"[{p}]({(REPO / p).as_uri()})" if (REPO / p).is_file() else p for p in LIP_NOTES)
    return line


def _chart(path: Path, title: str, rows: list[Row], stats: dict[str, RowStats]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.name in stats]
    fig, axes = plt.subplots(2, 4, figsize=(16, 7.5))
    x = np.arange(len(shown))
    for ax, (m, label) in zip(axes.ravel(), METRICS.items(), strict=True):
        mean = [stats[r.name].mean[m] for r in shown]
        std = [stats[r.name].std[m] if math.isfinite(stats[r.name].std[m]) else 0.0 for r in shown]
        ax.bar(x, mean, yerr=std, capsize=3, color="#4c72b0", label="here (mean ± std over seeds)")
        paper = [PAPER.get(r.name, {}).get(m, math.nan) for r in shown]
        if any(math.isfinite(p) for p in paper):
            ax.plot(x, paper, "kx", markersize=8, label="the paper's")
        ax.set_title(label, fontsize=10)
        ax.set_xticks(x, [r.name for r in shown], rotation=60, ha="right", fontsize=7)
    axes.ravel()[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def write_report(out: Path, rows: list[Row], results: list[dict[str, Any]], why_not: dict[str, str | None],
                 cfg) -> dict[str, Path]:
    """Write the report under ``out``; returns {"md", "csv", "table<N>"} paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stats = aggregate(rows, results)
    paths: dict[str, Path] = {"md": out / "ablation.md", "csv": out / "ablation.csv"}
    with atomic_path(paths["csv"]) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["table", "row", "label", "seeds", "status"] + [f"{m}_{s}" for m in METRICS
                                                                    for s in ("mean", "std")]
                   + [f"paper_{m}" for m in ("nme", "auc", "nme_lips", "nme_occ")])
        for r in rows:
            s = stats.get(r.name)
            status = "ok" if s else (f"not run ({why_not[r.name]})" if why_not.get(r.name) else "missing")
            w.writerow([r.table, r.name, r.label, s.n if s else 0, status]
                       + [(s.mean[m] if s else "", s.std[m] if s else "")[k] for m in METRICS for k in (0, 1)]
                       + [PAPER.get(r.name, {}).get(m, "") for m in ("nme", "auc", "nme_lips", "nme_occ")])
    lines = [f"# Ablation grid: the paper's Tables 1-3 here (profile `{cfg.profile}`, model `{cfg.model.name}`)", "",
             f"Seeds: {list(cfg.seeds)}. Each cell: mean ± std over the seeds (sample std). A difference between two "
             "rows is called only when their means are further apart than the sum of their standard deviations "
             "(the spreads do not overlap); with one seed nothing is decided.", "",
             "## Recipe (the same for every row)", "",
             f"- Shared (no row varies it): the coarse encoder E_c, pretrained once with the project's pretraining "
             f"stage (synthetic ground truth) for {cfg.budget.shared_steps} steps on the `mel` shards; frozen in "
             "every row.",
             f"- Each row and seed: its own expression-jaw branch (the row's `modalities` / `temporal` / "
             f"`modality_dropout`), fresh weights, trained with the pretraining objective for "
             f"{cfg.budget.expression_steps} steps on the row's audio features; then, where the row has them, its "
             f"own lip refiner (the lip stage, {cfg.budget.lip_steps} steps) and the synthetic-occlusion "
             f"fine-tune (the occlusion stage, {cfg.budget.occlusion_steps} steps).",
             f"- Selection inside the grid: validation every {cfg.budget.val_every} steps on held-out speakers, "
             "the lowest monitor among the row's own validated weights (the starting weights are not a candidate, "
             "no regression guard, no early stopping): a row reports what its recipe gives.",
             f"- Evaluation: the project's FaceSet-style evaluation (`avface.evaluate.faceset`) on the held-out "
             f"speakers ({cfg.budget.eval_windows or 'all'} windows, {cfg.budget.eval_occluded_windows or 'all'} "
             "occluded); lip / expression vertex errors from the final validation.", ""]
    for t, title in TABLES.items():
        trows = [r for r in rows if r.table == t]
        if not trows:
            continue
        pcols = PAPER_COLUMNS[t]
        lines += [f"## {title}", "", f"![{title}](table{t}.png)", "",
                  "| row | the paper's label | seeds | " + " | ".join(METRICS.values()) + " | "
                  + " | ".join(f"paper's {METRICS[c]}" for c in pcols) + " |",
                  "|---|---|---|" + "---|" * (len(METRICS) + len(pcols))]
        for r in trows:
            s = stats.get(r.name)
            paper = " | ".join(f"{PAPER[r.name][c]:.2f}" if r.name in PAPER else "–" for c in pcols)
            if s is None:
                why = f"not run ({why_not[r.name]})" if why_not.get(r.name) else "not in this grid"
                lines.append(f"| {r.name} | {r.label} | 0 | {why} |" + " |" * (len(METRICS) - 1) + f" {paper} |")
                continue
            same = f" (= {r.same_as})" if r.same_as else ""
            lines.append(f"| {r.name}{same} | {r.label} | {s.n} | "
                         + " | ".join(_fmt(s, m) for m in METRICS) + f" | {paper} |")
        lines.append("")
        if any(r.name in stats for r in trows):
            paths[f"table{t}"] = out / f"table{t}.png"
            _chart(paths[f"table{t}"], title, trows, stats)
    lines += ["The paper's numbers are from AVFace (CVPR 2023), Tables 1-3, on FaceSet (real talking faces; Table 3 "
              "and the NME occ column on its synthetic occlusion test set); ours are on the synthetic corpus's "
              "held-out speakers: compare orderings, not values.", "", "## The paper's claims here", ""]
    lines += [f"- {c.text}: {claim_verdict(c, stats, why_not)}" for c in CLAIMS]
    shot = out / "compare-view.png"
    lines += ["", "## In the MLflow UI", "",
              f"Experiment `{cfg.experiment}`; the grid's parent run `{cfg.name}` has one child run per row and seed "
              "(tags `table`, `row`, `seed`) with the metrics `ablation/*`. Select the children and press Compare."]
    if shot.exists():
        lines += ["", "![the compare view of the grid's child runs](compare-view.png)"]
    with atomic_path(paths["md"]) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return paths

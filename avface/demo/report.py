"""The main job's report: one self-contained HTML page (every picture a data URI) and its markdown twin (pictures
beside it in ``report_files/``), built from the same sections: the model, timings, evaluation tables (the paper's
rows beside ours), learning curves, CED curve, error heat map, the reconstructed clip's overlay strip and the
occluded-window comparison.
"""

from __future__ import annotations

import base64
import html
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from avface.data.shard_index import ShardIndex
from avface.io.video import read_video
from avface.metrics.ground_truth import ground_truth_vertices
from avface.metrics.vertices import vertex_errors
from avface.render.cameras import ndc_to_pixels
from avface.trained.checkpoints import load_trained
from avface.utils.files import atomic_path
from avface.viz import make_grid, save_png
from avface.viz.overlay import draw_landmarks

__all__ = ["Section", "markdown_table_rows", "occlusion_comparison", "overlay_strip", "plot_learning_curves",
           "render_html", "render_markdown", "write_report"]

OCC_SUFFIX = "_occ"  # the occluded copies of a split (avface.data's naming)


@dataclass
class Section:
    """One part of the report: a heading, paragraphs, tables (header + rows) and pictures (caption, file)."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    images: list[tuple[str, Path]] = field(default_factory=list)
    code: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ pictures
def plot_learning_curves(tracking_uri: str, parent_run_id: str, path: Path) -> Path:
    """Held-out 3D and lip error and the training loss against cumulative steps, one colour per stage, from the
    training's MLflow child runs of ``parent_run_id``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")
    children = sorted(children, key=lambda r: r.info.start_time)
    fig = Figure(figsize=(11, 3.4))
    axes = fig.subplots(1, 3)
    keys = (("val/v3d_mm", "held-out 3D error (mm)"), ("val/lip_mm", "held-out lip error (mm)"),
            ("train/total", "training loss"))
    offset = 0
    for run in children:
        stage = run.data.tags.get("avface.stage", run.info.run_name)
        last = offset
        for ax, (key, _) in zip(axes, keys, strict=True):
            hist = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
            if hist:
                xs = [offset + m.step for m in hist]
                ax.plot(xs, [m.value for m in hist], marker="o", ms=3, label=stage)
                last = max(last, xs[-1])
        offset = last
    for ax, (_, label) in zip(axes, keys, strict=True):
        ax.set_xlabel("training steps (all stages)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[2].set_yscale("log")  # pretraining's parameter loss and the self-supervised stages' differ by 100x
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return path


def overlay_strip(overlay_mp4: Path, path: Path, frames: int = 8) -> Path:
    """``frames`` evenly spaced frames of the reconstruction's overlay video side by side."""
    video, _ = read_video(overlay_mp4)
    idx = np.unique(np.linspace(0, len(video) - 1, num=min(frames, len(video))).astype(int))
    save_png(path, make_grid(video[idx], ncols=len(idx)))
    return path


@torch.no_grad()
def occlusion_comparison(checkpoint: str, shards: str, path: Path, split: str = "test",
                         frames: int = 4) -> dict[str, Any] | None:
    """One held-out occluded window and its clean twin through the model: frames with the predicted landmarks
    (top: occluded, bottom: clean) and both windows' 3D and lip errors (mm). None without occluded windows."""
    try:
        index = ShardIndex.build(shards, [split, split + OCC_SUFFIX])
    except ValueError:
        return None
    occ_rows = np.flatnonzero(index.table["occluded"].to_numpy())
    if len(occ_rows) == 0:
        return None
    row = int(occ_rows[0])
    twin = int(index.clean_twins()[row])
    trained = load_trained(checkpoint)
    model, fm = trained.model, trained.face_model
    size = trained.config.image_size
    batch = index.batches([row, twin], size)[0]
    out = model(batch)
    lip_ids = torch.as_tensor(fm.region("lips")).long()
    errors: dict[str, tuple[float, float]] = {}
    t = batch.images.shape[1]
    v = out.vertices  # (2, T, V, 3)
    gt = ground_truth_vertices(fm, batch.targets).reshape(2, t, -1, 3) if batch.targets is not None else None
    tiles = []
    for i, name in enumerate(("occluded", "clean twin")):
        if gt is not None:
            v3d, lip = vertex_errors(v[i], gt[i], lip_ids)
            errors[name] = (float(v3d.mean()), float(lip.mean()))
        lm = ndc_to_pixels(out.landmarks2d.reshape(2, t, 68, 2)[i], size).cpu().numpy()
        imgs = (batch.images[i].permute(0, 2, 3, 1).cpu().numpy() * 255).clip(0, 255).astype(np.uint8)
        for k in np.linspace(0, t - 1, num=min(frames, t)).astype(int):
            tiles.append(draw_landmarks(imgs[k].copy(), lm[k]))
    up = max(1, 128 // size)
    grid = make_grid(np.stack(tiles), ncols=len(tiles) // 2)
    save_png(path, np.kron(grid, np.ones((up, up, 1), dtype=np.uint8)) if up > 1 else grid)
    return {"image": path, "window": str(index.table["key"].iat[row]), "errors": errors}


# ------------------------------------------------------------------------------------------------ text
def markdown_table_rows(text: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """The tables of a markdown text: (the heading above each, header, rows)."""
    tables: list[tuple[str, list[str], list[list[str]]]] = []
    heading, block = "", []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if block:
            tables.append((heading, block[0], [r for r in block[2:]]))
            block = []
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
    return tables


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _inline(text: str) -> str:
    """Markdown's *italics* and `code` as HTML (the evaluation tables mark the paper's rows in italics)."""
    out = html.escape(text)
    parts = out.split("`")
    out = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    if out.startswith("*") and out.endswith("*") and len(out) > 2:
        out = f"<em>{out[1:-1]}</em>"
    return out


def render_html(title: str, sections: list[Section]) -> str:
    """One self-contained page: styles inline, every picture a data URI."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        body += [f"<p>{_inline(p)}</p>" for p in s.paragraphs]
        body += [f"<pre>{html.escape(c)}</pre>" for c in s.code]
        for header, rows in s.tables:
            body.append("<table><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in header) + "</tr>")
            body += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows]
            body.append("</table>")
        for caption, path in s.images:
            body.append(f'<figure><img src="{_data_uri(path)}" alt="{html.escape(caption)}">'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:90%}td,th{border:1px solid #ccc;padding:3px 8px}"
             "th{background:#f3f3f3}img{max-width:100%;image-rendering:pixelated}pre{background:#f6f6f6;padding:8px;"
             "overflow-x:auto}figcaption{color:#555;font-size:90%}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def render_markdown(title: str, sections: list[Section], image_dir: Path, md_dir: Path) -> str:
    """The markdown twin; pictures are copied into ``image_dir`` and linked relative to ``md_dir``."""
    lines = [f"# {title}", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        for p in s.paragraphs:
            lines += [p, ""]
        for c in s.code:
            lines += ["```", c, "```", ""]
        for header, rows in s.tables:
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(r) + " |" for r in rows]
            lines.append("")
        for caption, path in s.images:
            dest = image_dir / path.name
            if path.resolve() != dest.resolve():
                shutil.copyfile(path, dest)
            lines += [f"![{caption}]({os.path.relpath(dest, md_dir)})", "", f"*{caption}*", ""]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def build_sections(config: Any, records: list, outputs: dict[str, dict[str, Any]], images: dict[str, Path | None],
                   occ: dict[str, Any] | None, commands: dict[str, str]) -> list[Section]:
    """The report's sections from the job's outputs (steps not run are left out)."""
    img = {k: Path(v) for k, v in images.items() if v and Path(v).is_file()}
    sections = [Section("What this is", [
        f"AVFace (CVPR 2023) reconstructs a 4D face from a talking-face video and its speech. This run (size "
        f"`{config.size}`) made a synthetic talking-face corpus with exact 3D ground truth, trained every stage of "
        "the tiny model on it, evaluated it on held-out speakers and reconstructed one held-out clip. All faces are "
        "synthetic (the open starter face model unless a FLAME file was given): the numbers say whether the "
        "pipeline learns, not how it does on real video."])]
    rows = [[r.name, f"{r.seconds:.1f}", "skipped (done by an earlier run)" if r.skipped else "ran",
             str(r.outputs.get("summary", ""))] for r in records]
    total = sum(r.seconds for r in records)
    sections.append(Section("How long each step took", [f"Total {total:.0f} s (steps of earlier runs: their time "
                                                        "then)."], [(["step", "seconds", "this run", "result"],
                                                                     rows)]))
    if "turntable" in img:
        sections.append(Section("Face model", [f"`{outputs['turntable']['face_model']}`"],
                                images=[("turntable contact sheet of the face model", img["turntable"])]))
    if "shards" in img:
        sections.append(Section("Training data", [outputs["shards"].get("summary", "")],
                                images=[("shard preview: frames with ground-truth landmarks and occlusion masks",
                                         img["shards"])]))
    tr = outputs.get("training")
    if tr:
        stage_rows = []
        for stage, m in tr["stages"].items():
            stage_rows.append([stage, _fmt(m.get("val/v3d_mm")), _fmt(m.get("val/lip_mm")),
                               _fmt(m.get("val/expression_mm")), _fmt(m.get("val/nme")),
                               _fmt(m.get("val/constant/v3d_mm")), _fmt(m.get("val/constant/lip_mm"))])
        sec = Section("Training", [f"Stages {' -> '.join(tr['chain'])} (Ray Train), tracked in MLflow "
                                   f"(`{tr['tracking_uri']}`), final model `{tr['final']}`, registered as "
                                   f"`{tr['registered']}`. Held-out validation after each stage (mm after a "
                                   "similarity alignment; NME as a fraction of the inter-ocular distance):"],
                      [(["stage", "3D mm", "lip mm", "expression mm", "NME", "constant 3D mm", "constant lip mm"],
                        stage_rows)])
        if "learning" in img:
            sec.images.append(("learning curves: held-out errors and training loss per stage", img["learning"]))
        sections.append(sec)
    ev = outputs.get("evaluation")
    if ev:
        text = Path(ev["results_md"]).read_text()
        sec = Section("Evaluation", ["Our rows are measured here on the synthetic held-out speakers; rows in "
                                     "italics are the numbers the paper reports on its real data (not comparable "
                                     f"one to one). From `{ev['results_md']}`."])
        sections.append(sec)
        for heading, header, rows in markdown_table_rows(text):
            sections.append(Section(heading or "Evaluation table", tables=[(header, rows)]))
        pics = Section("Evaluation pictures")
        if "ced" in img:
            pics.images.append(("CED curve of the per-frame landmark NME (held-out windows)", img["ced"]))
        if "heatmap" in img:
            pics.images.append(("per-vertex error heat map (mm)", img["heatmap"]))
        if pics.images:
            sections.append(pics)
    if occ and "occlusion" in img:
        rows = [[k, _fmt(v[0]), _fmt(v[1])] for k, v in occ["errors"].items()]
        sections.append(Section("Occluded window against its clean twin",
                                [f"Held-out window `{occ['window']}` with a synthetic occluder (top) and without it "
                                 "(bottom), with the model's landmarks."], [(["window", "3D mm", "lip mm"], rows)],
                                [("occluded (top) and clean (bottom) frames with predicted landmarks",
                                  img["occlusion"])]))
    rc = outputs.get("reconstruction")
    if rc:
        files = [[k, v] for k, v in rc["files"].items()]
        sec = Section("Reconstruction of a held-out clip",
                      [f"`{rc['clip']}` through `avface.inference`: {rc.get('summary', '')}. Open the GLB in "
                       "Blender (File > Import > glTF 2.0), the OBJ files in any mesh viewer, the npz with "
                       "`avface.inference.load_reconstruction`."], [(["output", "path"], files)])
        if "strip" in img:
            sec.images.append(("frames of the overlay video (reconstructed mesh over the input)", img["strip"]))
        sections.append(sec)
    if commands:
        sections.append(Section("Next", ["MLflow's UI of these runs, and the trained model on a video of yours "
                                         "(`avface reconstruct` uses it by default now):"],
                                code=[commands["mlflow"], commands["reconstruct"]]))
    return sections


def write_report(out: Path, config: Any, records: list, outputs: dict[str, dict[str, Any]],
                 images: dict[str, Path | None], occ: dict[str, Any] | None,
                 commands: dict[str, str]) -> tuple[Path, Path]:
    """``out/report.html`` (self-contained) and ``out/report.md`` (pictures in ``out/report_files/``)."""
    sections = build_sections(config, records, outputs, images, occ, commands)
    title = "avface main job report"
    files = out / "report_files"
    files.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out / "report.html", out / "report.md"
    with atomic_path(html_path, suffix=".html") as tmp:
        tmp.write_text(render_html(title, sections), encoding="utf-8")
    with atomic_path(md_path, suffix=".md") as tmp:
        tmp.write_text(render_markdown(title, sections, files, out), encoding="utf-8")
    return html_path, md_path

"""The main job (``make demo``): from nothing to a trained model, its evaluation, a reconstructed talking face and
a report page.

1. face model (the user's FLAME file, or the open starter model) and its turntable (mp4 + PNG contact sheet);
2. synthetic talking-head corpus (VoxCeleb2 + Multiface layouts, exact 3D ground truth; Ray tasks): ``size``'s
   training and held-out speakers;
3. preprocessing into WebDataset shards (Ray) with normals and occluded copies, and a preview sheet;
4. every training stage of the tiny model (Ray Train), tracked in MLflow, the final model registered: through the
   ``train`` function the caller passes (``avface.train.trainer.run_training``; this package never imports the
   training package, see docs/ARCHITECTURE.md);
5. the evaluation (``avface.evaluate``: Table 4 on the held-out shards, Table 5 on the Multiface stand-in, the
   paper's rows beside ours);
6. one held-out clip reconstructed with ``avface.inference`` and exported (overlay mp4 with its audio, npz, OBJ,
   GLB);
7. the report (``report.html``, self-contained, and ``report.md``): :mod:`avface.demo.report`.

Re-running resumes: each finished step is skipped (:mod:`avface.demo.steps`).
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from avface.data.config import PreprocessConfig
from avface.data.preprocess import run_preprocess
from avface.data.preview import shard_preview
from avface.demo.config import MainConfig
from avface.demo.report import occlusion_comparison, overlay_strip, plot_learning_curves, write_report
from avface.demo.steps import StepRunner, quiet_console_logging
from avface.evaluate.job import run_evaluate
from avface.face_model import load_face_model
from avface.inference.export import export_all
from avface.inference.reconstruct import ReconstructConfig, Reconstructor
from avface.io.media import write_mp4
from avface.synth.corpus import synthesize_corpus
from avface.trained.checkpoints import DEFAULT_REGISTERED_MODEL, DEFAULT_TRAINING_OUT
from avface.utils.files import atomic_path
from avface.utils.ray_utils import init_ray
from avface.viz import make_grid, save_png
from avface.viz.turntable import render_turntable

__all__ = ["TrainFn", "run_corpus", "run_main_job", "run_shards", "run_turntable"]

log = logging.getLogger("avface.main")

#: the training entry the caller passes: a TrainConfig dict -> run_training's summary
TrainFn = Callable[[dict[str, Any]], dict[str, Any]]


def start_ray(config: MainConfig) -> None:
    """One Ray for every step that needs it (started by the first); the workers' output stays in Ray's logs."""
    init_ray(num_cpus=config.num_cpus, log_to_driver=False, logging_level=logging.WARNING)


def run_turntable(config: MainConfig, out: Path) -> dict[str, Any]:
    """Step 1: face model (saved as .npz) and its turntable."""
    kwargs = {"landmark_embedding": config.landmark_embedding} if config.landmark_embedding else {}
    data = load_face_model(config.face_model, **kwargs)
    # Model names may hold ':' (e.g. "flame:generic_model.pkl"): keep file names portable.
    model_path = out / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', data.name)}.npz"
    data.save_npz(model_path)
    log.info("face model %s: %d vertices, %d faces -> %s", data.name, len(data.v_template), len(data.faces),
             model_path)
    frames = render_turntable(data, config.turntable)  # (T, H, W, 3) u8
    video_path = out / "turntable.mp4"
    write_mp4(video_path, frames, fps=25)
    sheet_path = out / "turntable_contact_sheet.png"
    step = max(1, len(frames) // 12)
    save_png(sheet_path, make_grid(frames[::step][:12], ncols=6))
    return {"face_model": str(model_path), "turntable": str(video_path), "contact_sheet": str(sheet_path),
            "summary": f"{data.name}, {len(data.v_template)} vertices"}


def run_corpus(config: MainConfig, out: Path) -> dict[str, Any]:
    """Step 2: the synthetic corpus under ``out/corpus``."""
    start_ray(config)
    corpus = out / "corpus"
    p = config.preset
    train = config.corpus.train_speakers or p.train_speakers
    test = config.corpus.test_speakers or p.test_speakers
    mf = {"enabled": config.corpus.multiface}
    if config.size == "tiny":
        mf |= {"identities": 1, "cameras": 1, "sentences": 1, "image_height": 128, "image_width": 84}
    summary = synthesize_corpus({
        "out": str(corpus), "size": config.corpus.size, "seed": config.seed, "progress": False,
        "occlusion_share": config.corpus.occlusion_share,
        "vox": {"dev_identities": train, "test_identities": test, "videos_per_identity": 1, "clips_per_video": 1,
                "sentences_per_clip": [1, 1], "image_size": p.image_size},
        "multiface": mf,
        "face": {"face_model": config.face_model, "landmark_embedding": config.landmark_embedding},
        **({"num_cpus": config.num_cpus} if config.num_cpus else {}),
    })
    return {"corpus": str(corpus), "voxceleb2": str(corpus / "voxceleb2"),
            "multiface": str(corpus / "multiface") if config.corpus.multiface else None,
            "summary": f"{summary['vox_clips']} clips of {train} training + {test} held-out speakers, "
                       f"{summary['multiface_segments']} Multiface segments"}


def run_shards(config: MainConfig, voxceleb2: str | Path, out: Path) -> dict[str, Any]:
    """Step 3: WebDataset shards of the corpus under ``out/shards`` (normals, occluded copies) and a preview."""
    start_ray(config)
    shards = out / "shards"
    k = config.preset.occluded_windows
    summary = run_preprocess(PreprocessConfig.from_dict({
        "data": {"root": str(voxceleb2)}, "out": str(shards), "seed": config.seed, "progress": False,
        "audio": {"kind": config.shards.audio_kind}, "video": {"image_size": config.preset.image_size},
        "normals": {"source": "auto"},
        "occlusion": {"windows": {"train": k, "test": max(k // 2, 1)}},
        "ray": {"num_cpus": config.num_cpus, "task_memory_mb": 400},
    }))
    if summary["shards_failed"]:
        raise RuntimeError(f"{len(summary['shards_failed'])} shard(s) failed; re-run to resume (see {shards})")
    preview = shards / "preview.png"
    save_png(preview, shard_preview(sorted(shards.glob("*.tar")), config.shards.preview_samples))
    return {"shards": str(shards), "shards_preview": str(preview),
            "summary": f"{summary['samples']} windows in {len(summary['shards'])} shards, "
                       f"{summary['failures']} failed clips"}


def training_out(config: MainConfig) -> Path:
    return Path(config.training.out or DEFAULT_TRAINING_OUT).resolve()


def run_training_step(config: MainConfig, shards: str, train: TrainFn) -> dict[str, Any]:
    """Step 4: every stage, tracked in ``<training out>/mlflow.db``, the final model registered."""
    start_ray(config)
    p = config.preset
    steps = config.training.steps or p.steps
    stages = {}
    for stage, n in steps.items():
        every = 0 if config.size == "tiny" else max(n // 4, 5)
        stages[stage] = {"steps": int(n), "val_every": every, "checkpoint_every": every, "report_every": 5}
    log.warning("the identity and ID-MRF loss terms are off (no face-recognition or VGG19 weights: "
                "model.identity_weights, model.vgg19_weights); on the synthetic corpus they are not needed")
    result = train({"data": {"shards": shards, "val_windows": p.val_windows,
                             "val_occluded_windows": max(p.val_windows // 2, 2)},
                    "out": str(training_out(config)), "name": config.training.name, "stage": "all",
                    "stages": stages, "num_cpus": config.num_cpus, "progress": False, "seed": config.seed,
                    "face_model": config.face_model, "landmark_embedding": config.landmark_embedding,
                    "tracking": {"registered_model": DEFAULT_REGISTERED_MODEL}})
    last = result["stages"][str(result["chain"][-1])]["metrics"]
    return {"final": str(result["final"]), "registered": result.get("registered"),
            "tracking_uri": result["tracking_uri"], "mlflow_run_id": result["mlflow_run_id"],
            "chain": [str(s) for s in result["chain"]],
            "stages": {str(k): v.get("metrics", {}) for k, v in result["stages"].items()},
            "summary": f"{' -> '.join(str(s) for s in result['chain'])}; held-out 3D "
                       f"{last.get('val/v3d_mm', float('nan')):.2f} mm (constant "
                       f"{last.get('val/constant/v3d_mm', float('nan')):.2f}), registered "
                       f"{result.get('registered')}"}


def run_evaluation_step(config: MainConfig, model_uri: str, shards: str, multiface: str | None,
                        tracking_uri: str, out: Path) -> dict[str, Any]:
    """Step 5: Table 4 / Table 5 beside the paper's numbers, logged to the training's MLflow store."""
    start_ray(config)
    windows = config.evaluation.windows if config.evaluation.windows is not None else config.preset.eval_windows
    summary = run_evaluate({
        "model_uri": model_uri, "out": str(out / "evaluate"),
        "faceset": {"shards": shards, "max_windows": windows, "max_occluded_windows": max(windows // 2, 0)},
        "multiface": {"root": multiface, "max_frames": 4 if config.size == "tiny" else 16},
        "tracking": {"tracking_uri": tracking_uri}, "num_cpus": config.num_cpus, "progress": False,
        "device": "cpu"})
    files = {Path(f).name: f for f in summary["files"]}
    return {"results_md": summary["results_md"], "results_csv": summary["results_csv"],
            "ced": files.get("ced.png"), "heatmap_faceset": files.get("heatmaps_faceset.png"),
            "heatmap_multiface": files.get("heatmaps_multiface.png"), "run_id": summary["run_id"],
            "summary": f"{len(summary['failures'])} failures, MLflow run {summary['run_id'][:8]}"}


def held_out_clip(voxceleb2: str | Path) -> Path:
    """The first held-out (test split) clip of the corpus."""
    clips = sorted((Path(voxceleb2) / "test").rglob("*.mp4"))
    if not clips:
        raise FileNotFoundError(f"{voxceleb2}/test: no held-out clip to reconstruct")
    return clips[0]


def run_reconstruction_step(config: MainConfig, checkpoint: str, clip: Path, out: Path) -> dict[str, Any]:
    """Step 6: the held-out clip through ``avface.inference`` (whole frames: the corpus's clips are face crops, as
    the model's training windows were) and its exports."""
    dest = out / "reconstruction"
    with Reconstructor(checkpoint, "cpu", ReconstructConfig(crop="none", progress=False)) as r:
        rec = r.run(clip)
        written = export_all(rec, r.face_model, dest, clip.stem, tuple(config.reconstruction.exports), video=clip)
    paths = {p.name: str(p) for p in written}
    obj_dir = dest / f"{clip.stem}_obj"
    objs = sorted(obj_dir.glob("*.obj")) if obj_dir.exists() else []
    return {"clip": str(clip), "files": paths, "npz": str(dest / f"{clip.stem}.npz"),
            "overlay": str(dest / f"{clip.stem}_overlay.mp4"), "glb": str(dest / f"{clip.stem}.glb"),
            "obj_first": str(objs[0]) if objs else None,
            "summary": f"{rec.num_frames} frames, {rec.meta.get('seconds', float('nan')):.1f} s -> {dest}"}


def run_report_step(config: MainConfig, out: Path, runner: StepRunner, outputs: dict[str, dict[str, Any]],
                    commands: dict[str, str]) -> dict[str, Any]:
    """Step 7: the pictures the report needs and the report itself."""
    pics = out / "report_files"
    pics.mkdir(parents=True, exist_ok=True)
    images: dict[str, Path | None] = {"turntable": Path(outputs["turntable"]["contact_sheet"])}
    if "shards" in outputs:
        images["shards"] = Path(outputs["shards"]["shards_preview"])
    tr = outputs.get("training")
    if tr:
        images["learning"] = plot_learning_curves(tr["tracking_uri"], tr["mlflow_run_id"], pics / "learning.png")
    ev = outputs.get("evaluation")
    if ev:
        images["ced"] = Path(ev["ced"]) if ev.get("ced") else None
        images["heatmap"] = Path(ev["heatmap_multiface"] or ev["heatmap_faceset"] or "") or None
    rc = outputs.get("reconstruction")
    if rc:
        images["strip"] = overlay_strip(Path(rc["overlay"]), pics / "overlay_strip.png")
    occ = None
    if tr and "shards" in outputs:
        occ = occlusion_comparison(tr["final"], outputs["shards"]["shards"], pics / "occlusion.png")
        images["occlusion"] = occ["image"] if occ else None
    html, md = write_report(out, config, runner.records, outputs, images, occ, commands)
    return {"html": str(html), "markdown": str(md), "summary": str(html)}


def _commands(config: MainConfig, outputs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The commands the job prints at its end: MLflow's UI of its runs, `avface reconstruct` with its model."""
    cmds: dict[str, str] = {}
    tr = outputs.get("training")
    if tr:
        store = tr["tracking_uri"]
        cmds["mlflow"] = f"mlflow ui --backend-store-uri {shlex.quote(store)} --host 127.0.0.1 --port 5000"
        default = training_out(config) == Path(DEFAULT_TRAINING_OUT).resolve()
        ck = "" if default else f" --checkpoint {shlex.quote(tr['final'])}"
        clip = outputs.get("reconstruction", {}).get("clip") or "my_talk.mp4"
        cmds["reconstruct"] = (f"avface reconstruct {shlex.quote(str(clip))} -o runs/my_reconstruction{ck} "
                               "--crop none --export npz,obj,mp4,glb")
    return cmds


def run_main_job(config: MainConfig, train: TrainFn | None = None,
                 echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the main job; returns every step's outputs (also in ``out/outputs.json``).

    ``train``: the training entry (``avface.train.trainer.run_training``); None skips training and what needs a
    model (evaluation, reconstruction)."""
    out = Path(config.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log_file = quiet_console_logging(out / "main.log")
    has_corpus = config.corpus.enabled
    has_shards = has_corpus and config.shards.enabled
    has_model = has_shards and config.training.enabled and train is not None
    plan = ["turntable"] + (["corpus"] if has_corpus else []) + (["shards"] if has_shards else []) + \
           (["training"] if has_model else []) + \
           (["evaluation"] if has_model and config.evaluation.enabled else []) + \
           (["reconstruction"] if has_model and config.reconstruction.enabled else []) + ["report"]
    runner = StepRunner(out, len(plan), echo)
    echo(f"avface main job ({config.size}) -> {out}  (full log: {log_file})")
    outputs: dict[str, dict[str, Any]] = {}
    outputs["turntable"] = runner.run("turntable", "face model and turntable", lambda: run_turntable(config, out))
    if has_corpus:
        outputs["corpus"] = runner.run("corpus", "synthetic corpus", lambda: run_corpus(config, out))
    if has_shards:
        outputs["shards"] = runner.run("shards", "preprocessing into shards (Ray)",
                                       lambda: run_shards(config, outputs["corpus"]["voxceleb2"], out))
    if has_model:
        assert train is not None
        outputs["training"] = runner.run("training", "training every stage (Ray Train, MLflow)",
                                         lambda: run_training_step(config, outputs["shards"]["shards"], train))
        tr = outputs["training"]
        if "evaluation" in plan:
            outputs["evaluation"] = runner.run(
                "evaluation", "evaluation (Table 4, Table 5)",
                lambda: run_evaluation_step(config, tr["registered"] or tr["final"], outputs["shards"]["shards"],
                                            outputs["corpus"]["multiface"], tr["tracking_uri"], out))
        if "reconstruction" in plan:
            clip = held_out_clip(outputs["corpus"]["voxceleb2"])
            outputs["reconstruction"] = runner.run("reconstruction", "reconstruction of a held-out clip",
                                                   lambda: run_reconstruction_step(config, tr["final"], clip, out))
    commands = _commands(config, outputs)
    # the report is rewritten on every run (its timing table shows which steps this run skipped)
    runner.marker("report").unlink(missing_ok=True)
    outputs["report"] = runner.run("report", "report", lambda: run_report_step(config, out, runner, outputs,
                                                                                 commands))
    with atomic_path(out / "outputs.json") as tmp:
        tmp.write_text(json.dumps({**outputs, "commands": commands}, indent=1, default=str))
    echo(f"\nreport:      {outputs['report']['html']}\n             {outputs['report']['markdown']} (markdown)")
    if commands:
        echo(f"MLflow runs: {commands['mlflow']}")
        echo(f"your video:  {commands['reconstruct']}")
    return {**outputs, "commands": commands, "log": str(log_file)}

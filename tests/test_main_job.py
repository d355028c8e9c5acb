"""The main job (`make demo`): face model + turntable mp4 + contact sheet, on the embedded default; end to end at
``size=tiny`` (corpus, shards, training, evaluation, reconstruction, the report page opened in headless Chromium,
the resume); the report's pieces."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import decord
import numpy as np
import pytest

from avface.demo.config import CorpusStage, MainConfig
from avface.demo.job import run_main_job as run
from avface.face_model import load_face_model
from avface.face_model.testing import random_face_model_data
from avface.utils.browser import evaluate_page
from avface.viz.turntable import TurntableConfig, render_turntable


def test_turntable_shows_a_turning_talking_face():
    frames = render_turntable(load_face_model(None), TurntableConfig(num_frames=8, image_size=96))
    assert frames.shape == (8, 96, 96, 3) and frames.dtype == np.uint8
    # Background is a dark grey gradient; the face is bright skin. It covers a plausible share of the frame ...
    skin = (frames[..., 0].astype(int) > 120) & (frames[..., 0] >= frames[..., 2])
    coverage = skin.mean(axis=(1, 2))
    assert np.all(coverage > 0.15) and np.all(coverage < 0.8), coverage
    # ... stays centred while it turns ...
    ys, xs = np.nonzero(skin[0])
    assert abs(xs.mean() - 48) < 10 and abs(ys.mean() - 48) < 12
    # ... is exposed, not clipped (the shading shows the shape) ...
    assert (frames[..., 0][skin] >= 254).mean() < 0.05
    # ... and the frames differ (the head turns and the jaw moves).
    assert np.abs(frames[0].astype(int) - frames[2].astype(int)).mean() > 5


def test_turntable_of_a_model_with_fewer_components_than_avface_uses():
    """Any valid FaceModelData renders (a saved .npz may have fewer than 100 shape / 50 expression components)."""
    data = random_face_model_data(seed=0)
    assert data.n_shape < 100 and data.n_expression < 50
    frames = render_turntable(data, TurntableConfig(num_frames=3, image_size=32))
    assert frames.shape == (3, 32, 32, 3) and frames.dtype == np.uint8


def test_main_job_writes_model_video_and_contact_sheet(tmp_path: Path):
    out = tmp_path / "demo"
    outputs = run(MainConfig(out=str(out), turntable=TurntableConfig(num_frames=6, image_size=64),
                             corpus=CorpusStage(enabled=False)))
    paths = outputs["turntable"]
    reloaded = type(load_face_model(None)).load_npz(paths["face_model"])
    assert reloaded.v_template.shape == load_face_model(None).v_template.shape
    video = decord.VideoReader(str(paths["turntable"]))
    assert len(video) == 6 and video[0].shape == (64, 64, 3)
    assert abs(video.get_avg_fps() - 25) < 1e-3
    assert Path(paths["contact_sheet"]).stat().st_size > 1000
    # the report covers what ran: the face model, no training sections
    page = Path(outputs["report"]["html"]).read_text()
    assert "Face model" in page and "Training" not in page and 'src="data:image/png;base64,' in page
    assert Path(outputs["report"]["markdown"]).is_file()


def test_markdown_tables_of_the_evaluation_are_read_with_their_headings():
    from avface.demo.report import markdown_table_rows

    text = "# t\n\n## Table 4\n\n| Method | NME |\n|---|---|\n| ours | 1.0 |\n| *paper* | 2.0 |\n\ntext\n"
    assert markdown_table_rows(text) == [("Table 4", ["Method", "NME"], [["ours", "1.0"], ["*paper*", "2.0"]])]


def test_a_finished_step_is_skipped_and_its_outputs_reused(tmp_path: Path):
    from avface.demo.steps import StepRunner

    lines: list[str] = []
    calls = []
    r = StepRunner(tmp_path, 1, lines.append)
    assert r.run("a", "step a", lambda: calls.append(1) or {"x": "1", "summary": "did a"}) == {"x": "1",
                                                                                               "summary": "did a"}
    r2 = StepRunner(tmp_path, 1, lines.append)
    assert r2.run("a", "step a", lambda: calls.append(2) or {"x": "2"}) == {"x": "1", "summary": "did a"}
    assert calls == [1] and r2.records[0].skipped and "skipped" in lines[-1] and "did a" in lines[0]
    # a step that fails leaves no marker: the next run runs it again
    with pytest.raises(ZeroDivisionError):
        StepRunner(tmp_path, 1, lines.append).run("b", "step b", lambda: {"x": 1 / 0})
    assert not (tmp_path / "steps" / "b.json").exists()


def images_loaded_in_chromium(page: Path) -> list[int]:
    """Each image's naturalWidth once ``page`` has loaded in headless Chromium (0: an image that did not load)."""
    return evaluate_page(page.as_uri(), "Array.from(document.images).map(i => i.naturalWidth)")


@pytest.mark.slow
@pytest.mark.ray
def test_main_job_tiny_end_to_end_report_and_resume(tmp_path: Path):
    """`python pipelines/main.py size=tiny`: every step, the report page (every picture loads in Chromium), the
    markdown twin, the exports, the trained model registered, the commands printed; a re-run skips every step."""
    root = Path(__file__).resolve().parents[1]
    out, train = tmp_path / "demo", tmp_path / "train"
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, str(root / "pipelines" / "main.py"), "size=tiny", f"out={out}", f"training.out={train}"]
    first = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    text = first.stdout + first.stderr
    steps = [line for line in first.stdout.splitlines() if re.match(r"\[\d/7\]", line)]
    assert len(steps) == 7, first.stdout
    # a tool's output: no Ray / Hydra chatter, the per-worker loss warnings at most once
    assert "PlacementGroupCleaner" not in text and "State API" not in text and "[INFO]" not in text
    assert text.count("loss terms are off") == 1  # said once by the job, not per worker and run
    assert "identity loss disabled" not in text and "ID-MRF loss disabled" not in text
    assert f"mlflow ui --backend-store-uri sqlite:///{train}/mlflow.db --host 127.0.0.1" in text
    assert "avface reconstruct " in text and f"--checkpoint {train}/demo/" in text
    outputs = json.loads((out / "outputs.json").read_text())
    rec = outputs["reconstruction"]
    for key in ("npz", "overlay", "glb", "obj_first"):
        assert Path(rec[key]).is_file() and Path(rec[key]).stat().st_size > 0, key
    from avface.inference.result import load_reconstruction

    assert load_reconstruction(rec["npz"]).num_frames > 0
    assert outputs["training"]["registered"].startswith("models:/avface/")
    assert (out / "main.log").stat().st_size > 0
    # the report: every picture embedded and loading, every section there, the markdown twin's pictures beside it
    page = out / "report.html"
    html = page.read_text()
    for section in ("How long each step took", "Training", "Evaluation", "Occluded window", "Reconstruction",
                    "Table 4", "Table 5", "<em>"):
        assert section in html, section
    assert "src=\"data:" in html and not re.search(r'src="(?!data:)', html), "a picture is not embedded"
    widths = images_loaded_in_chromium(page)
    assert len(widths) >= 7 and all(w > 0 for w in widths), widths
    md = (out / "report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(linked) == len(widths) and all((out / p).is_file() for p in linked)
    # the re-run resumes: every step but the report is skipped
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    skipped = [line for line in again.stdout.splitlines() if "skipped" in line]
    assert len(skipped) == 6, again.stdout

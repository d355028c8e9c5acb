"""The `pipelines/occlude.py` command: demo input, mp4 + boxes input, frame folder input, outputs replayable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from occlusion_synth import OcclusionConfig, replay
from occlusion_synth.config import OccludeConfig
from occlusion_synth.demo import astronaut_sequence
from occlusion_synth.job import run_occlude as run

ROOT = Path(__file__).resolve().parents[1]


def test_command_demo_writes_outputs(tmp_path: Path):
    """Run the Hydra app as a user would (subprocess), with a config override."""
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "pipelines/occlude.py", f"out={out}", "num_frames=8", "write=png",
                           "seed=3", "occlusion.motion.max_speed=0.02"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    masks = np.load(out / "masks.npy")
    assert masks.shape == (8, 224, 224) and masks.dtype == np.float32
    params = json.loads((out / "params.json").read_text())
    assert params["config"]["motion"]["max_speed"] == 0.02 and params["seed"] == 3
    strip = cv2.imread(str(out / "strip.png"))
    assert strip.shape == (2 * 224, 8 * 224, 3)
    frames = np.stack([cv2.imread(str(p))[..., ::-1] for p in sorted((out / "frames").glob("*.png"))])
    # The written frames are exactly what replaying params.json on the demo input gives.
    demo, _ = astronaut_sequence(8, 224, seed=3)
    again = replay(params, demo)
    assert np.array_equal(again.frames, frames) and np.array_equal(again.masks, masks)


def test_command_mp4_input_with_boxes(tmp_path: Path):
    from avface.io.media import write_mp4
    from avface.io.video import read_video

    frames, boxes = astronaut_sequence(6, 128, seed=0)
    write_mp4(tmp_path / "in.mp4", frames, fps=25)
    (tmp_path / "boxes.json").write_text(json.dumps({"boxes": boxes.tolist()}))
    paths = run(OccludeConfig(input=str(tmp_path / "in.mp4"), boxes=str(tmp_path / "boxes.json"),
                              out=str(tmp_path / "o"), num_frames=0, occlusion=OcclusionConfig()))
    out, fps = read_video(paths["frames"])
    assert out.shape == (6, 128, 128, 3) and abs(fps - 25) < 1e-6
    masks = np.load(paths["masks"])
    # Encoding is lossy: compare the hand region with the unoccluded input, it must differ there.
    m = masks > 0.9
    assert m.sum() > 50
    assert np.abs(out[m].astype(float) - frames[m].astype(float)).mean() > 5


def test_command_frame_folder_and_errors(tmp_path: Path):
    frames, boxes = astronaut_sequence(4, 96, seed=1)
    d = tmp_path / "frames"
    d.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(d / f"{i:03d}.png"), f[..., ::-1])
    np.save(tmp_path / "boxes.npy", boxes)
    paths = run(OccludeConfig(input=str(d), boxes=str(tmp_path / "boxes.npy"), out=str(tmp_path / "o"),
                              write="png", num_frames=0))
    assert len(list(paths["frames"].glob("*.png"))) == 4
    with pytest.raises(ValueError, match="no face box"):
        run(OccludeConfig(input=str(d), out=str(tmp_path / "o2")))
    cv2.imwrite(str(d / "zzz.png"), frames[0][..., 0])
    with pytest.raises(ValueError, match="grayscale"):
        run(OccludeConfig(input=str(d), boxes=str(tmp_path / "boxes.npy"), out=str(tmp_path / "o3"), num_frames=0))


def test_command_outputs_are_written_atomically(tmp_path: Path, monkeypatch):
    """A run killed while writing masks.npy / params.json leaves no half-written file under its final name."""
    import occlusion_synth.job as occlude

    real_save = np.save

    def dying_save(file, arr, *args, **kwargs):
        real_save(file, arr[:1], *args, **kwargs)  # some bytes reach the target, then the job dies
        raise KeyboardInterrupt

    monkeypatch.setattr(occlude.np, "save", dying_save)
    out = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt):
        run(OccludeConfig(out=str(out), num_frames=4, size=64, write="png"))
    assert not (out / "masks.npy").exists()
    assert not list(out.glob(".*"))  # no temporary file left behind either
    monkeypatch.setattr(occlude.np, "save", real_save)
    paths = run(OccludeConfig(out=str(out), num_frames=4, size=64, write="png"))
    assert np.load(paths["masks"]).shape == (4, 64, 64)
    assert np.load(paths["boxes"]).shape == (4, 4)
    assert "seed" in json.loads(paths["params"].read_text())

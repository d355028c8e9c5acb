"""Pretraining on fitted pseudo-ground truth: what a user with real talking-face video and no DECA weights gets.

    python benchmarks/bench_pseudo_gt.py [--out runs/bench_pseudo_gt] [--identities 24] [--test-identities 6]
        [--clips 1] [--steps 300] [--landmarks detector|exact] [--quick | --smoke]

1. corpus: the synthetic talking-head corpus (``avface.train.testing.make_training_shards``, 64 px), preprocessed
   *as a real corpus would be*: the landmarks are the detector's (MediaPipe on the renders,
   ``landmarks.use_ground_truth=false``; ``--landmarks exact``: the corpus's exact points, the fit's best case)
   and ``fit.enabled=true`` fits the mean face to them, window by window. The exact parameters stay in the shards
   only to evaluate (and for the exact row);
2. the same pretraining budget (steps, batch, seed; no selection on the held-out windows: ``val_every=0``) on
   ``target=exact`` (the synthetic ground truth) and on ``target=fitted`` (the pseudo-ground truth); neither reads
   anything else of the exact truth (the camera scale comes from the fitted parameters in the fitted run);
3. on the held-out speakers' windows: all-vertex and lip error (mm, after the per-frame similarity alignment),
   expression error (mm: predicted expression and jaw on the true shape and pose) and landmark NME against the
   corpus's exact 68 points (inter-ocular fraction), for both, for "none" (the untrained network, and the constant
   baseline: the template with the training set's mean expression and jaw) and for the fit itself (its parameters
   against the truth: how good the pseudo-ground truth is);
4. prints the table, the ratios fitted / exact and fitted / untrained, and writes ``pseudo_gt.json``.

Goal: pretraining on the pseudo-ground truth lands far closer to pretraining on the exact truth than to no
pretraining (a real corpus gets an initialisation from its own video).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

#: (argument overrides) of --smoke (a test of the benchmark, not a measurement) and --quick (~20 min, 2 cores)
PROFILES: dict[str, dict] = {
    "smoke": {"identities": 2, "test_identities": 1, "clips": 1, "steps": 2, "val_windows": 8},
    "quick": {"identities": 16, "test_identities": 4, "clips": 1, "steps": 150, "val_windows": 64},
}
COLUMNS = [("v3d_mm", "3D mm"), ("lip_mm", "lip mm"), ("expression_mm", "expr mm"), ("nme", "NME")]


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def exact_landmarks(face_model, targets, size: int):
    """The corpus's exact 68 points ``(B, T, 68, 2)`` in pixels of ``size``: the true mesh's (with its lips'
    detail) dynamic landmarks through the true camera."""
    import torch

    from avface.metrics.ground_truth import flat_frames
    from avface.render.cameras import ndc_to_pixels, orthographic_project

    b, t = targets.cam.shape[:2]
    detail = flat_frames(targets.lip_detail) if targets.lip_detail is not None else None
    with torch.no_grad():
        out = face_model(shape=flat_frames(targets.shape), expression=flat_frames(targets.expression),
                         global_pose=flat_frames(targets.global_pose), neck_pose=flat_frames(targets.neck_pose),
                         jaw_pose=flat_frames(targets.jaw), eye_pose=flat_frames(targets.eye_pose), lip_detail=detail)
        ndc = orthographic_project(out.landmarks68_dynamic, flat_frames(targets.cam))[..., :2]
    return ndc_to_pixels(ndc, size).reshape(b, t, 68, 2)


def heldout_batches(shards: str, windows: int, image_size: int, face_model) -> list:
    """Held-out windows (an evenly spaced subset) as batches, their landmarks the exact points (what NME is
    measured against), every frame valid."""
    import dataclasses

    import torch

    from avface.data.shard_index import ShardIndex

    index = ShardIndex.build(shards, ["test"])
    out = []
    for b in index.batches(index.spread(windows), image_size):
        out.append(dataclasses.replace(b, landmarks=exact_landmarks(face_model, b.targets, image_size),
                                       landmarks_valid=torch.ones_like(b.landmarks_valid)))
    return out


def fit_accuracy(shards: str, split: str, face_model, max_residual: float) -> dict[str, float]:
    """The fitted pseudo-ground truth of ``split``'s clean windows against the exact truth: 3D, lip and expression
    mm (the validation's definitions), NME of the fitted 68 points against the exact ones, and the share of frames
    fitted with a residual <= ``max_residual`` (what pretraining keeps)."""
    import numpy as np
    import torch

    from avface.data.batch import fitted_targets, samples_to_batch
    from avface.data.shard_index import ShardIndex
    from avface.metrics.ground_truth import flat_frames, ground_truth_vertices
    from avface.metrics.landmarks import landmark_nme
    from avface.metrics.vertices import vertex_errors
    from avface.render.cameras import ndc_to_pixels, orthographic_project

    index = ShardIndex.build(shards, [split])
    lip_ids = torch.as_tensor(face_model.region("lips")).long()
    acc: dict[str, list] = {"v3d_mm": [], "lip_mm": [], "expression_mm": [], "nme": [], "kept": []}
    rows = np.flatnonzero(~index.table["occluded"].to_numpy())
    for i in range(0, len(rows), 8):
        samples = [index.read(int(r)) for r in rows[i:i + 8]]
        size = samples[0]["frames"].shape[1]
        gt = samples_to_batch(samples).targets
        fit = fitted_targets(samples)
        ok = flat_frames(fit.valid).numpy()
        acc["kept"].append(flat_frames(fitted_targets(samples, max_residual).valid).numpy())
        with torch.no_grad():
            gt_v = ground_truth_vertices(face_model, gt)
            fit_v = ground_truth_vertices(face_model, fit)
            v3d, lip = vertex_errors(fit_v, gt_v, lip_ids)
            expr_v = ground_truth_vertices(face_model, gt, expression=flat_frames(fit.expression),
                                           jaw=flat_frames(fit.jaw))
            expr = (expr_v - gt_v).norm(dim=-1).mean(1) * 1000.0
            lm = face_model(shape=flat_frames(fit.shape), expression=flat_frames(fit.expression),
                            global_pose=flat_frames(fit.global_pose), jaw_pose=flat_frames(fit.jaw)).landmarks68_dynamic
            pred = ndc_to_pixels(orthographic_project(lm, flat_frames(fit.cam))[..., :2], size)
        exact = flat_frames(exact_landmarks(face_model, gt, size))
        acc["v3d_mm"].append(v3d.numpy()[ok])
        acc["lip_mm"].append(lip.numpy()[ok])
        acc["expression_mm"].append(expr.numpy()[ok])
        acc["nme"].append(landmark_nme(pred.numpy()[ok], exact.numpy()[ok]))
    return {k: float(np.mean(np.concatenate(v))) for k, v in acc.items()}


def evaluate(model, batches: list, baselines) -> dict[str, float]:
    from avface.train.validation import validate

    return validate(model, batches, baselines, prefix="")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench_pseudo_gt")
    ap.add_argument("--identities", type=int, default=24, help="training speakers")
    ap.add_argument("--test-identities", type=int, default=6, help="held-out speakers")
    ap.add_argument("--clips", type=int, default=1, help="clips per speaker")
    ap.add_argument("--steps", type=int, default=300, help="pretraining steps of each run (the same budget)")
    ap.add_argument("--val-windows", type=int, default=64, help="held-out windows evaluated")
    ap.add_argument("--max-residual", type=float, default=0.05,
                    help="stages.pretrain.fit_max_residual: frames fitted worse are not supervised")
    ap.add_argument("--landmarks", default="detector", choices=["detector", "exact"],
                    help="what preprocessing stores and fits: the detector's points on the renders (a real corpus) "
                         "or the corpus's exact points (the fit's best case)")
    ap.add_argument("--quick", action="store_true", help="16 + 4 speakers, 150 steps each (~20 min on 2 cores)")
    ap.add_argument("--smoke", action="store_true", help="2 + 1 speakers, 2 steps: a test of the benchmark")
    args = ap.parse_args()
    profile = "smoke" if args.smoke else "quick" if args.quick else None
    for key, value in (PROFILES[profile] if profile else {}).items():
        setattr(args, key, value)

    import torch

    from avface.landmarks import mediapipe_available
    from avface.metrics.ground_truth import Baselines
    from avface.models.avface import AVFace
    from avface.train.config import PRETRAIN_LABELS
    from avface.train.testing import make_training_shards
    from avface.train.trainer import run_training
    from avface.trained.checkpoints import load_trained

    out = Path(args.out).resolve()
    landmarks = args.landmarks
    if landmarks == "detector" and not mediapipe_available():
        print("MediaPipe is not available: the landmarks are the corpus's exact points (--landmarks exact)")
        landmarks = "exact"
    t0 = time.perf_counter()
    data = make_training_shards(out / f"data-{landmarks}", dev_identities=args.identities,
                                test_identities=args.test_identities, clips_per_identity=args.clips,
                                occluded_windows=0, use_ray=False,
                                preprocess={"fit": {"enabled": True},
                                            "landmarks": {"use_ground_truth": landmarks == "exact"}})
    shards = str(data["shards"])
    t_data = time.perf_counter() - t0

    runs, timings = {}, {}
    for target in ("exact", "fitted"):
        t0 = time.perf_counter()
        res = run_training({
            "data": {"shards": shards, "val_windows": min(args.val_windows, 16), "val_occluded_windows": 0},
            "out": str(out / "runs"), "name": f"pretrain-{target}-{landmarks}", "stage": "pretrain",
            "use_ray": False, "progress": False, "tracking": {"registered_model": ""},
            "stages": {"pretrain": {"steps": args.steps, "val_every": 0, "checkpoint_every": 0, "report_every": 10,
                                    "target": target, "fit_max_residual": args.max_residual}}})
        runs[target] = res
        timings[target] = time.perf_counter() - t0

    trained = {t: load_trained(r["final"]) for t, r in runs.items()}
    face_model = trained["exact"].face_model
    size = trained["exact"].config.image_size
    batches = heldout_batches(shards, args.val_windows, size, face_model)
    stats = json.loads(json.dumps(trained["exact"].meta.get("extras", {}).get("statistics") or {}))
    baselines = Baselines.from_statistics(stats) if stats else None
    torch.manual_seed(0)
    untrained = AVFace(trained["exact"].config, face_model).eval()  # the same network, its initial weights
    rows = []
    base = evaluate(untrained, batches, baselines)
    rows.append({"model": "none: untrained network", **{k: base.get(k) for k, _ in COLUMNS}})
    rows.append({"model": "none: constant (template + training mean expression/jaw)",
                 **{k: base.get(f"constant/{k}") for k, _ in COLUMNS}})
    for target, tm in trained.items():
        m = evaluate(tm.model.eval(), batches, baselines)
        rows.append({"model": PRETRAIN_LABELS[target], **{k: m.get(k) for k, _ in COLUMNS}})
    fit_test = fit_accuracy(shards, "test", face_model, args.max_residual)
    fit_train = fit_accuracy(shards, "train", face_model, args.max_residual)
    rows.append({"model": "the fit itself (held-out windows)", **{k: fit_test.get(k) for k, _ in COLUMNS}})
    rows.append({"model": "the fit itself (training windows: the targets)",
                 **{k: fit_train.get(k) for k, _ in COLUMNS}})

    print(f"\ncorpus: {args.identities} training / {args.test_identities} held-out speakers, "
          f"{runs['exact']['data']['windows']} training windows, landmarks: {landmarks}; data {t_data:.0f} s, "
          "pretraining " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) +
          f" ({args.steps} steps each); {len(batches)} held-out batches")
    print(f"training frames kept (fitted, residual <= {args.max_residual}): {fit_train['kept']:.3f}")
    print("| model | " + " | ".join(c for _, c in COLUMNS) + " |")
    print("|" + "---|" * (len(COLUMNS) + 1))
    for r in rows:
        print("| " + " | ".join([r["model"], *[_fmt(r.get(k)) for k, _ in COLUMNS]]) + " |")
    none, exact, fitted = rows[0], rows[2], rows[3]
    ratios = {f"fitted / {name}": {k: fitted[k] / ref[k] for k, _ in COLUMNS if fitted.get(k) and ref.get(k)}
              for name, ref in (("exact", exact), ("untrained", none))}
    for name, r in ratios.items():
        print(f"ratio {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()))
    out.mkdir(parents=True, exist_ok=True)
    (out / "pseudo_gt.json").write_text(json.dumps({"rows": rows, "ratios": ratios, "timings": timings,
                                                    "t_data": t_data, "landmarks": landmarks, "args": vars(args)},
                                                   indent=2))
    print(f"wrote {out / 'pseudo_gt.json'}")


if __name__ == "__main__":
    main()

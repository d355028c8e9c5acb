"""Does the test-time landmark fit (``avface reconstruct --refine landmarks``) help? Held-out synthetic speakers.

    python benchmarks/bench_refine.py --shards DIR (--checkpoint PATH | --untrained) [--windows 96] [--noise 0.03]
        [--quick]

Every held-out window (the shards' ``test`` split, 16 frames, exact ground truth) goes through the model (eval
mode); its prediction is then fitted to the window's landmarks (:func:`avface.evaluate.faceset.refined_output`:
the reconstruction's fit, one window a sequence). Rows:

- network alone (the paper's method, ``--refine none``);
- + fit to the exact landmarks (the shards' points of the synthetic corpus: the fit's best case, and the points the
  NME is measured against);
- + fit to noisy landmarks: Gaussian noise of ``--noise`` x the inter-ocular distance on every point, independent
  per frame (a detector's error; MediaPipe on real faces is around 0.03-0.05);
- + fit to the detector's points, when the shards hold them (MediaPipe's points on the renders, mapped to the 68
  as ``avface reconstruct`` maps a video's: the points a real clip's fit gets; frames without a detection keep the
  network's values);
- mean face at the true pose and camera (zero shape and expression; no model).

``--shards`` of another appearance style than the model's training corpus (``vox.style=real``) measures the fit on
the unseen style (issue 33: NME with the fit <= 0.07, 3D error below the constant baseline).

Columns: landmark NME (mean point distance / outer-eye-corner distance, against the exact points), all-vertex 3D
error and lip error (mm, after the similarity alignment onto the true mesh, :func:`avface.metrics.vertex_errors`),
jitter (mean vertex acceleration of the window's posed meshes, mm/frame^2) beside the ground truth's own, and the
fit's time per frame. Goals (issue 33): NME with the fit <= 0.05; 3D and lip error with the fit no worse than the
network alone; jitter with the fit no higher than the ground truth's motion.

``--untrained``: a fresh tiny model (a smoke run of the script, not a measurement).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", required=True, help="preprocessed shards with a test split (synthetic ground truth)")
    ap.add_argument("--checkpoint", help="trained checkpoint (final.pt)")
    ap.add_argument("--untrained", action="store_true", help="a fresh tiny model (smoke run)")
    ap.add_argument("--windows", type=int, default=96, help="held-out windows (evenly spaced)")
    ap.add_argument("--noise", type=float, default=0.03, help="landmark noise, fraction of the inter-ocular distance")
    ap.add_argument("--smooth", type=float, default=None, help="the fit's smoothness weight (default: RefineConfig's)")
    ap.add_argument("--fit", action="append", default=[], metavar="KEY=VALUE",
                    help="another RefineConfig field, e.g. --fit w_shape=0.1 --fit contour_weight=0.25 (repeatable)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="16 windows")
    args = ap.parse_args()
    if not args.checkpoint and not args.untrained:
        ap.error("give --checkpoint PATH or --untrained")
    torch.set_num_threads(args.threads)
    windows = 16 if args.quick else args.windows

    from avface.data.shard_index import ShardIndex
    from avface.evaluate.faceset import _baseline, refined_output
    from avface.face_model import FaceModel, load_face_model
    from avface.fitting.landmarks import RefineConfig
    from avface.landmarks import mediapipe_to_ibug68
    from avface.metrics import Baselines, ground_truth_vertices, jitter, landmark_nme, vertex_errors
    from avface.models import AVFaceConfig
    from avface.models.avface import AVFace
    from avface.render.cameras import ndc_to_pixels
    from avface.trained.checkpoints import load_trained

    if args.checkpoint:
        trained = load_trained(args.checkpoint)
        model, what = trained.model, f"{args.checkpoint} (stage {trained.meta.get('stage')}, step " \
                                      f"{trained.meta.get('step')})"
    else:
        torch.manual_seed(0)
        model = AVFace(dataclasses.replace(AVFaceConfig.tiny(), audio_dim=80, stages=("coarse",)),
                       FaceModel(load_face_model(None)), renderer=False)
        model.set_stage("coarse")
        what = "untrained tiny model (smoke run: not a measurement)"
    model.eval()
    fm = model.face_model
    lips = torch.as_tensor(fm.region("lips")).long()
    index = ShardIndex.build(args.shards, ["test"])
    rows = index.spread(windows)
    size = int(model.config.image_size)
    mean_face = Baselines(torch.zeros(fm.n_expression), torch.zeros(3))
    stats = trained.meta["extras"].get("statistics") if args.checkpoint else None
    constant = Baselines.from_statistics(stats) if stats else None  # the training set's mean expression and jaw
    rng = np.random.default_rng(0)
    fields = {f.name: f.type for f in dataclasses.fields(RefineConfig)}
    overrides = {} if args.smooth is None else {"w_smooth": args.smooth}
    for item in args.fit:
        key, _, value = item.partition("=")
        if key not in fields:
            ap.error(f"--fit {item}: RefineConfig has no field {key!r} (fields: {', '.join(fields)})")
        overrides[key] = int(value) if fields[key] in (int, "int") else float(value)
    fit_cfg = RefineConfig(**overrides)
    names = ("network alone (--refine none)", "+ fit, exact landmarks", f"+ fit, landmarks + {args.noise:g} IOD noise",
             "mean face, true pose and camera", "+ fit, the detector's points (MediaPipe on the renders)",
             "constant expression (training mean), true pose and camera")
    acc: dict[str, dict[str, list[float]]] = {n: {"nme": [], "v3d": [], "lip": [], "jitter": []} for n in names}
    gt_jitter: list[float] = []
    fit_seconds, fit_frames = 0.0, 0
    for batch in index.batches(rows, size):
        b, t = batch.images.shape[:2]
        exact = batch.landmarks.numpy().reshape(b * t, 68, 2)
        valid = batch.landmarks_valid.reshape(-1).numpy().astype(bool)
        iod = np.linalg.norm(exact[:, 36] - exact[:, 45], axis=-1)
        noisy = exact + rng.normal(size=exact.shape) * args.noise * iod[:, None, None]
        noisy_batch = dataclasses.replace(batch, landmarks=torch.as_tensor(noisy, dtype=torch.float32).reshape(
            batch.landmarks.shape))
        with torch.no_grad():
            gt = ground_truth_vertices(fm, batch.targets)
            gt_jitter += [jitter(w) for w in gt.reshape(b, t, -1, 3).double()]
            out = model(batch)
            t0 = time.perf_counter()
            fit_exact = refined_output(model, batch, out, fit_cfg)[:2]
            fit_seconds += time.perf_counter() - t0
            fit_frames += b * t
            preds = {names[0]: (out.vertices, out.landmarks2d), names[1]: fit_exact,
                     names[2]: refined_output(model, noisy_batch, out, fit_cfg)[:2],
                     names[3]: _baseline(model, batch, "mean face", mean_face)}
            if constant is not None:
                preds[names[5]] = _baseline(model, batch, "constant expression", constant)
            if batch.points is not None and batch.points.shape[2] in (468, 478):
                detected = mediapipe_to_ibug68(batch.points[..., :2].numpy())
                preds[names[4]] = refined_output(model, dataclasses.replace(
                    batch, landmarks=torch.as_tensor(detected), landmarks_valid=batch.points_valid), out, fit_cfg)[:2]
        for name, (verts, lmk2) in preds.items():
            px = ndc_to_pixels(lmk2.reshape(b * t, 68, 2), size).numpy()
            acc[name]["nme"] += list(landmark_nme(px[valid], exact[valid]))
            v3d, lip = vertex_errors(verts.reshape(b * t, -1, 3), gt, lips)
            acc[name]["v3d"] += v3d.tolist()
            acc[name]["lip"] += lip.tolist()
            acc[name]["jitter"] += [jitter(w) for w in verts.double()]

    print(f"# bench_refine: {len(rows)} held-out windows of {args.shards}, model {what}, torch threads "
          f"{torch.get_num_threads()}; fit {fit_cfg}")
    print("| method | NME | 3D mm | lip mm | jitter mm/frame^2 |\n|---|---|---|---|---|")
    res = {n: {k: float(np.mean(v)) for k, v in d.items()} for n, d in acc.items() if d["nme"]}
    for n, r in res.items():
        print(f"| {n} | {r['nme']:.4f} | {r['v3d']:.3f} | {r['lip']:.3f} | {r['jitter']:.3f} |")
    gj = float(np.mean(gt_jitter))
    print(f"| ground truth's own motion | - | - | - | {gj:.3f} |")
    net, fit, noisy = res[names[0]], res[names[1]], res[names[2]]
    print(f"\nfit time: {1000 * fit_seconds / max(fit_frames, 1):.2f} ms/frame (windows of 16, one thread)")
    print(f"ratio fit / network alone: NME {fit['nme'] / net['nme']:.3f} (noisy {noisy['nme'] / net['nme']:.3f}), "
          f"3D {fit['v3d'] / net['v3d']:.3f} (noisy {noisy['v3d'] / net['v3d']:.3f}), "
          f"lip {fit['lip'] / net['lip']:.3f} (noisy {noisy['lip'] / net['lip']:.3f}); "
          f"jitter fit / ground truth {fit['jitter'] / gj:.3f} "
          f"(noisy {noisy['jitter'] / gj:.3f})")
    print(f"goals: NME with the fit <= 0.05: {fit['nme']:.4f} exact, {noisy['nme']:.4f} noisy; 3D and lip no worse "
          f"than the network alone; jitter <= the ground truth's {gj:.3f}")
    if names[4] in res:
        det = res[names[4]]
        const = res.get(names[5], res[names[3]])
        print(f"the detector's points: NME {det['nme']:.4f}, 3D {det['v3d']:.3f} mm (network alone "
              f"{net['v3d']:.3f}, constant baseline {const['v3d']:.3f}: ratio {det['v3d'] / const['v3d']:.3f}), lip "
              f"{det['lip']:.3f}, jitter {det['jitter']:.3f}; goal on a style the model did not train on: NME <= "
              f"0.07 and 3D below the constant baseline")


if __name__ == "__main__":
    main()

"""Does the tiny model learn? The staged recipe on a synthetic corpus with exact ground truth, on held-out
speakers, beside the mean face and the constant-expression baseline, and the paper's recipe from scratch.

    python benchmarks/bench_train_learning.py [--out runs/bench_learning] [--data DIR] [--identities 1200]
        [--test-identities 80] [--pretrain-steps 2000] [--stage-steps 150] [--lip-steps 400] [--scratch-steps 600]
        [--smoke] [--landmark-input] [--landmark-ablation]
        [--style studio] [--test-style other] [--quick | --smoke]

1. corpus: ``--identities`` training speakers and ``--test-identities`` held-out ones, ``--clips`` short clips each,
   64 px
   (``avface.train.testing.make_training_shards``: synthesize + preprocess with normals and occluded copies);
2. recipe: ``pipelines/train.py stage=all`` (pretrain on the synthetic ground truth -> coarse -> lip -> detail ->
   occlusion, each stage early-stopped and selected on the held-out validation);
3. the paper's recipe from scratch: stage ``coarse`` with no pretraining for ``--scratch-steps`` (the stage the
   initialisation is for; ``--scratch-all-stages`` continues with the same lip/detail/occlusion stages);
4. prints the table (mm; NME as a fraction of the inter-ocular distance) and writes ``learning.png`` (held-out
   3D and lip error against training steps, per stage) and ``learning.json``;
5. diagnostics: where the lip error comes from (true parameters swapped in), whether the 2D landmark geometry
   tells the face shape (a ridge regression, beside the model's shape), whether the lip refiner could lower the
   lip error at all (trained on the true lip vertices: an oracle no paper loss is), what the occluder costs.

6. the domain shift (``--test-style``, default the style not trained on): the held-out speakers of a second small
   corpus (``HELDOUT_SEED``, so none is a training speaker), made by the same ``make_training_shards`` path in
   the training style and in the unseen one (the same speakers, windows and ground truth: only the look differs),
   the pretrained and the final models and the baselines on each.

``--landmark-input``: the recipe's model reads the landmark detector's points too (``model.landmark_input``, the
geometry channel). ``--landmark-ablation``: instead of the recipe, pretraining alone twice on the same corpus, the
paper's image-only network and the network with the landmark input, and their held-out 3D error, lip error and
landmark NME side by side (goals: 3D error >= 10 % lower with landmarks, NME <= 0.07).

Re-running resumes (finished stages are skipped). Goals: on held-out speakers, lip error >= 25 % and
expression error >= 30 % below the constant baseline, all-vertex error below it; the self-supervised stages do
not raise the 3D error above the pretraining's; lip < coarse lip error; detail normals closer than coarse ones;
the occlusion fine-tune lowers the error on occluded windows.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

COLUMNS = [("v3d_mm", "3D mm"), ("lip_mm", "lip mm"), ("expression_mm", "expr mm"), ("nme", "NME"),
           ("lip_nme", "lip NME"), ("normal_deg_coarse", "normals coarse deg"),
           ("normal_deg_detail", "normals detail deg")]


#: seed of the domain-shift corpora: other speakers than the training corpus's (seed 0), the same in each style
HELDOUT_SEED = 1


#: --smoke / --quick: (argument overrides, sizes of the held-out sets and diagnostics). Smoke validates (and
#: checkpoints) at each stage's end only.
PROFILES: dict[str, tuple[dict[str, int], dict[str, int]]] = {
    "smoke": ({"identities": 3, "test_identities": 1, "clips": 1, "pretrain_steps": 4, "stage_steps": 2,
               "lip_steps": 2, "scratch_steps": 2, "val_every": 0, "pretrain_val_every": 0},
              {"val": 8, "occluded": 4, "val_occluded": 4, "oracle_steps": 2, "oracle_every": 1, "shape_windows": 16}),
    "quick": ({"identities": 32, "test_identities": 8, "clips": 1, "pretrain_steps": 300, "stage_steps": 30,
               "lip_steps": 30, "scratch_steps": 100, "val_every": 0, "pretrain_val_every": 100},
              {"val": 64, "occluded": 40, "val_occluded": 20, "oracle_steps": 40, "oracle_every": 20,
               "shape_windows": 300}),
}


def _stage_config(steps: dict[str, int], val_every: int) -> dict:
    return {s: {"steps": n, "val_every": val_every, "checkpoint_every": val_every, "report_every": 10}
            for s, n in steps.items()}


def _row(name: str, metrics: dict, prefix: str = "val/") -> dict:
    r = {"recipe": name}
    for key, _ in COLUMNS:
        r[key] = metrics.get(prefix + key)
    r["occ_v3d_mm"] = metrics.get("val_occ/v3d_mm")
    r["occ_lip_mm"] = metrics.get("val_occ/lip_mm")
    return r


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench_learning")
    ap.add_argument("--data", default=None,
                    help="corpus and shards dir (default OUT/data); an earlier run's, to train on the same corpus "
                         "(about 13 minutes saved; its --identities/--test-identities/--clips must match)")
    ap.add_argument("--identities", type=int, default=1200)
    # 80, not 20: the lip error's floor is the face shape, so 20 held-out speakers moved the lip ratio by several
    # hundredths between draws (0.78 vs 0.71); validation scores a fixed, evenly spaced subset, so it costs no more
    ap.add_argument("--test-identities", type=int, default=80)
    # one clip each: the same number of windows from twice the speakers (a clip still gives a batch several windows
    # of one speaker); the shape and the jaw gain are drawn per speaker, so speakers are what they generalise from
    ap.add_argument("--clips", type=int, default=1, help="clips per speaker")
    ap.add_argument("--pretrain-steps", type=int, default=2000)
    ap.add_argument("--stage-steps", type=int, default=150)
    # the lip stage's signal (the lips' normals and landmarks in the re-fitted frame) is small: it learns slowly
    ap.add_argument("--lip-steps", type=int, default=400)
    ap.add_argument("--scratch-steps", type=int, default=600)
    ap.add_argument("--val-every", type=int, default=50, help="steps between validations of the later stages")
    ap.add_argument("--pretrain-val-every", type=int, default=100,
                    help="steps between validations of pretraining (each costs about as much as 50 steps)")
    ap.add_argument("--scratch-all-stages", action="store_true",
                    help="also run lip/detail/occlusion after the from-scratch coarse stage")
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--source-size", type=int, default=None,
                    help="render the corpus at this side and preprocess it to the model's 64 px (the landmark "
                         "detector runs on the rendered frames; default: render at 64)")
    ap.add_argument("--style", default="studio", choices=["studio", "real"],
                    help="appearance of the training corpus (vox.style, avface/synth/style.py)")
    ap.add_argument("--test-style", default="other", choices=["other", "studio", "real", "none"],
                    help="also evaluate on held-out speakers in this style ('other': the style not trained on; "
                         "'none': skip)")
    ap.add_argument("--quick", action="store_true",
                    help="a quick profile (32 + 8 speakers, 300 pretraining steps, short later stages, small "
                         "diagnostics; 45 minutes on 2 cores shared with other jobs): coarse numbers, the domain "
                         "shift's table above all")
    ap.add_argument("--smoke", action="store_true",
                    help="the smallest run that prints every table (3 + 1 speakers, a few steps per stage, small "
                         "diagnostics; a few minutes, most of it Ray Train starting each stage): a test of the "
                         "benchmark, not a measurement")
    ap.add_argument("--landmark-input", action="store_true",
                    help="the recipe's model also reads the landmark detector's points (model.landmark_input)")
    ap.add_argument("--landmark-ablation", action="store_true",
                    help="pretraining only, image-only vs with the landmark input, on the same corpus (the table "
                         "of the geometry channel); skips the recipe and the diagnostics")
    ap.add_argument("--variants", default="image,landmarks",
                    help="--landmark-ablation: which networks to pretrain (image, landmarks; comma-separated)")
    ap.add_argument("--landmark-probe", action="store_true",
                    help="no training: how well a ridge regression tells held-out speakers' face shape from the "
                         "exact 68 points and from the detector's points on the renders (the shards' "
                         "detector_points), beside the template; seconds")
    ap.add_argument("--in-process", action="store_true",
                    help="no Ray: the corpora made and every stage trained in this process (the training's "
                         "use_ray=false), for a machine too loaded for Ray Train to start its workers, and the "
                         "smallest run of the tests")
    args = ap.parse_args()
    # held-out windows validated, occluded windows made and validated, diagnostic sizes
    sizes = {"val": 128, "occluded": 300, "val_occluded": 150, "oracle_steps": 1000, "oracle_every": 100,
             "shape_windows": 1500}
    profile = "smoke" if args.smoke else "quick" if args.quick else None
    if profile is not None:
        overrides, sizes = PROFILES[profile]
        for key, value in overrides.items():
            setattr(args, key, value)
    test_style = {"other": "real" if args.style == "studio" else "studio", "none": None}.get(args.test_style,
                                                                                          args.test_style)

    from avface.train.testing import make_training_shards
    from avface.train.trainer import run_training

    out = Path(args.out).resolve()
    t0 = time.perf_counter()
    data_dir = Path(args.data).resolve() if args.data else out / "data"
    data = make_training_shards(data_dir, dev_identities=args.identities, test_identities=args.test_identities,
                                clips_per_identity=args.clips, occluded_windows=sizes["occluded"],
                                use_ray_for_synthesis=not args.in_process, num_cpus=args.num_cpus,
                                use_ray=not args.in_process, style=args.style, source_size=args.source_size)
    heldout = {}
    if test_style is not None and not args.landmark_probe:
        for style in dict.fromkeys([args.style, test_style]):
            heldout[style] = make_training_shards(
                data_dir / f"heldout-{style}", dev_identities=0, test_identities=args.test_identities,
                clips_per_identity=args.clips, occluded_windows=0, seed=HELDOUT_SEED,
                use_ray_for_synthesis=not args.in_process, num_cpus=args.num_cpus, use_ray=not args.in_process,
                style=style, source_size=args.source_size)["shards"]
    t_data = time.perf_counter() - t0
    common = {"data": {"shards": str(data["shards"]), "val_windows": sizes["val"],
                       "val_occluded_windows": sizes["val_occluded"]},
              "out": str(out / "runs"), "num_cpus": args.num_cpus, "progress": False,
              "use_ray": not args.in_process}
    if args.landmark_probe:
        _landmark_probe(str(data["shards"]), sizes["shape_windows"])
        return
    if args.landmark_ablation:
        _landmark_ablation(common, args, out, data, t_data, sizes, heldout)
        return
    if args.landmark_input:
        common["model"] = _tiny_model(landmark_input=True)
    later = {"lip": args.lip_steps, "detail": args.stage_steps, "occlusion": args.stage_steps}
    timings = {}
    t0 = time.perf_counter()
    stages = _stage_config({"coarse": args.stage_steps, **later}, args.val_every)
    stages.update(_stage_config({"pretrain": args.pretrain_steps}, args.pretrain_val_every))
    recipe = run_training({**common, "name": "recipe", "stage": "all", "stages": stages})
    timings["recipe"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scratch = {}
    prev = None
    scratch_stages = [("coarse", args.scratch_steps), *(later.items() if args.scratch_all_stages else [])]
    for stage, steps in scratch_stages:
        stage_cfg = _stage_config({stage: steps}, args.val_every)
        stage_cfg[stage]["patience"] = 0  # the whole budget: does the paper's recipe get there without pretraining?
        res = run_training({**common, "name": "scratch", "stage": stage, "init": prev, "stages": stage_cfg})
        scratch[stage] = res["stages"][stage]
        prev = res["final"]
    timings["scratch"] = time.perf_counter() - t0

    rows = []
    first = recipe["stages"]["pretrain"]["metrics"]
    rows.append({"recipe": "mean face (zero shape/expression, true pose)",
                 **{k: first.get(f"val/mean_face/{k}") for k, _ in COLUMNS}})
    rows.append({"recipe": "constant (template + training mean expression/jaw)",
                 **{k: first.get(f"val/constant/{k}") for k, _ in COLUMNS}})
    labels = {"pretrain": "pretrain (synthetic ground truth)", "coarse": "+ coarse (paper, self-supervised)",
              "lip": "+ lip refinement", "detail": "+ detail", "occlusion": "+ occlusion fine-tune"}
    for stage, res in recipe["stages"].items():
        rows.append(_row(labels[stage], res["metrics"]))
    for stage, res in scratch.items():
        rows.append(_row(f"from scratch: {stage} ({'paper coarse' if stage == 'coarse' else stage})",
                         res["metrics"]))

    header = ["recipe"] + [c for _, c in COLUMNS] + ["occluded 3D mm", "occluded lip mm"]
    print(f"\ncorpus: {args.identities} training / {args.test_identities} held-out speakers, "
          f"{recipe['data']['windows']} training windows; data {t_data:.0f} s, recipe {timings['recipe']:.0f} s, "
          f"from scratch {timings['scratch']:.0f} s")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join([r["recipe"], *[_fmt(r.get(k)) for k, _ in COLUMNS], _fmt(r.get("occ_v3d_mm")),
                                 _fmt(r.get("occ_lip_mm"))]) + " |")
    const = rows[1]
    best = recipe["stages"][recipe["chain"][-1]]["metrics"]
    ratios = {
        "lip vs constant": best["val/lip_mm"] / const["lip_mm"],
        "expression vs constant": best["val/expression_mm"] / const["expression_mm"],
        "3D vs constant": best["val/v3d_mm"] / const["v3d_mm"],
    }
    print("\nfinal model / constant baseline: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    budget = _lip_error_budget(recipe["final"], data["shards"], sizes["val"])
    print("\nwhere the held-out lip error comes from (lip mm after the similarity alignment; 'true' = the corpus's "
          "exact parameters):")
    print("| face | lip mm |\n|---|---|")
    for k, v in budget.items():
        print(f"| {k} | {v:.3f} |")
    shape_probe = _shape_from_landmarks(recipe["final"], data["shards"], train_windows=sizes["shape_windows"])
    print("\nis the speaker's face shape in the 2D geometry? (neutral face, held-out speakers, mm after the "
          "similarity alignment)")
    print("| shape | 3D mm | lip mm |\n|---|---|---|")
    for k, (v3d, lip) in shape_probe.items():
        print(f"| {k} | {v3d:.3f} | {lip:.3f} |")
    oracle = {}
    if "lip" in recipe["chain"]:
        before = recipe["chain"][recipe["chain"].index("lip") - 1]
        oracle = _oracle_lip_refiner(str(out / "runs" / "recipe" / before / "final.pt"), data["shards"],
                                     steps=sizes["oracle_steps"], every=sizes["oracle_every"], windows=sizes["val"])
        print(f"\ncould the lip stage lower the lip error? The lip refiner from the {before} model trained on the "
              "true lip vertices (3D supervision, the held-out metric itself), held-out lip mm:")
        print("| steps | " + " | ".join(str(k) for k in oracle) + " |\n|---|" + "---|" * len(oracle))
        print("| lip mm | " + " | ".join(f"{v:.3f}" for v in oracle.values()) + " |")
    gap = {}
    if "occlusion" in recipe["stages"]:
        before = recipe["chain"][recipe["chain"].index("occlusion") - 1]
        final = out / "runs" / "recipe"  # <out>/<name>/<stage>/final.pt
        gap = _occlusion_gap({f"before the fine-tune ({before})": str(final / before / "final.pt"),
                              "after the occlusion fine-tune": str(final / "occlusion" / "final.pt")}, data["shards"])
        print("\nwhat the occluder costs (every held-out occluded window against its clean twin):")
        print("| model | occluded 3D mm | clean twin 3D mm | occluded lip mm | clean twin lip mm |")
        print("|---|---|---|---|---|")
        for k, v in gap.items():
            print(f"| {k} | {v['occluded/v3d_mm']:.4f} | {v['clean/v3d_mm']:.4f} | {v['occluded/lip_mm']:.4f} | "
                  f"{v['clean/lip_mm']:.4f} |")
    shift = {}
    if heldout:
        runs = out / "runs"
        models = {"pretrain (synthetic ground truth)": runs / "recipe" / "pretrain" / "final.pt",
                  f"final ({recipe['chain'][-1]})": runs / "recipe" / recipe["chain"][-1] / "final.pt",
                  "from scratch: coarse": runs / "scratch" / "coarse" / "final.pt"}
        shift = _style_shift({k: str(v) for k, v in models.items() if v.exists()}, heldout, sizes["val"])
        print(f"\ndomain shift: trained on the '{args.style}' style; {args.test_identities} other held-out speakers "
              f"(seed {HELDOUT_SEED}) in each style, the same windows and ground truth (mm; NME as a fraction of the "
              "inter-ocular distance):")
        print("| model | style | 3D mm | lip mm | expr mm | NME | lip NME |\n|---|---|---|---|---|---|---|")
        for r in shift["rows"]:
            seen = "trained on" if r["style"] == args.style else "unseen"
            print(f"| {r['model']} | {r['style']} ({seen}) | " + " | ".join(
                _fmt(r.get(k)) for k in ("v3d_mm", "lip_mm", "expression_mm", "nme", "lip_nme")) + " |")
        for name, r in shift["ratios"].items():
            print(f"unseen style ({test_style}), {name}: 3D / constant baseline {r['v3d_vs_constant']:.3f}, "
                  f"NME {r['nme_unseen']:.3f} (trained-on style {r['nme_seen']:.3f}), "
                  f"3D unseen / trained-on style {r['v3d_unseen_vs_seen']:.3f}")
    (out / "learning.json").write_text(json.dumps({"rows": rows, "ratios": ratios, "timings": timings,
                                                   "t_data": t_data, "lip_error_budget": budget,
                                                   "shape_from_landmarks": shape_probe, "occlusion_gap": gap,
                                                   "oracle_lip_refiner": oracle, "style_shift": shift},
                                                  indent=2))
    _plot(recipe["tracking_uri"], out / "learning.png")
    print(f"wrote {out / 'learning.png'} and {out / 'learning.json'}")


def _tiny_model(landmark_input: bool) -> dict:
    """The tiny model's config as a mapping (a partial ``model`` mapping would start from the paper's)."""
    from avface.models.config import AVFaceConfig

    cfg = AVFaceConfig.tiny()
    cfg.landmark_input = landmark_input
    return cfg.to_dict()


def _landmark_ablation(common: dict, args, out: Path, data: dict, t_data: float, sizes: dict,
                       heldout: dict[str, Path]) -> None:
    """Pretraining of the image-only network and of the network with the landmark input on the same corpus, the
    same steps and seed; prints their held-out errors and the ratio, and, with ``heldout`` shards per style, both
    networks on the style they were trained on and on the unseen one (does the geometry channel carry across the
    domain shift, as the image does not?)."""
    from avface.train.trainer import run_training

    rows, timings = [], {}
    variants = [(label, name, flag) for label, name, flag in
                [("image-only (paper)", "image", False), ("image + landmarks (geometry channel)", "landmarks", True)]
                if name in args.variants.split(",")]
    stages = _stage_config({"pretrain": args.pretrain_steps}, args.pretrain_val_every)
    for label, name, flag in variants:
        t0 = time.perf_counter()
        run = {**common, "name": f"pretrain-{name}", "stage": "pretrain", "model": _tiny_model(landmark_input=flag),
               "stages": stages}
        metrics = run_training({**run, "use_ray": not args.in_process})["stages"]["pretrain"]["metrics"]
        timings[name] = time.perf_counter() - t0
        if not rows:
            rows.append({"recipe": "mean face (zero shape/expression, true pose)",
                         **{k: metrics.get(f"val/mean_face/{k}") for k, _ in COLUMNS}})
            rows.append({"recipe": "constant (template + training mean expression/jaw)",
                         **{k: metrics.get(f"val/constant/{k}") for k, _ in COLUMNS}})
        rows.append(_row(f"pretrain, {label}", metrics))
    keys = [("v3d_mm", "3D mm"), ("lip_mm", "lip mm"), ("expression_mm", "expr mm"), ("nme", "NME"),
            ("lip_nme", "lip NME")]
    print(f"\ncorpus: {args.identities} training / {args.test_identities} held-out speakers; data {t_data:.0f} s, "
          f"pretraining {args.pretrain_steps} steps: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    print("| model | " + " | ".join(c for _, c in keys) + " |")
    print("|" + "---|" * (len(keys) + 1))
    for r in rows:
        print("| " + " | ".join([r["recipe"], *[_fmt(r.get(k)) for k, _ in keys]]) + " |")
    ratios = {}
    if len(variants) == 2:
        image, lmk = rows[-2], rows[-1]
        ratios = {k: lmk[k] / image[k] for k, _ in keys if image.get(k) and lmk.get(k) is not None}
        print("\nwith landmarks / image-only: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    shift = {}
    if heldout:
        runs = Path(common["out"])  # <out>/<name>/<stage>/final.pt
        shift = _style_shift({label: str(runs / f"pretrain-{name}" / "pretrain" / "final.pt")
                              for label, name, _ in variants}, heldout, sizes["val"])
        print(f"\ndomain shift: trained on the '{args.style}' style; {args.test_identities} other held-out speakers "
              f"(seed {HELDOUT_SEED}) in each style:")
        print("| model | style | " + " | ".join(c for _, c in keys) + " |\n|---|---|" + "---|" * len(keys))
        for r in shift["rows"]:
            seen = "trained on" if r["style"] == args.style else "unseen"
            print(f"| {r['model']} | {r['style']} ({seen}) | " + " | ".join(_fmt(r.get(k)) for k, _ in keys) + " |")
        for name, r in shift["ratios"].items():
            print(f"unseen style, {name}: 3D / constant baseline {r['v3d_vs_constant']:.3f}, NME {r['nme_unseen']:.3f} "
                  f"(trained-on style {r['nme_seen']:.3f}), 3D unseen / trained-on style "
                  f"{r['v3d_unseen_vs_seen']:.3f}")
    tag = "" if len(variants) == 2 else "_" + variants[0][1]
    (out / f"landmark_ablation{tag}.json").write_text(json.dumps({"rows": rows, "ratios": ratios, "timings": timings,
                                                            "style_shift": shift, "t_data": t_data,
                                                            "args": vars(args)}, indent=2))
    print(f"wrote {out / f'landmark_ablation{tag}.json'}")


def _landmark_probe(shards: str, train_windows: int) -> None:
    """Held-out speakers' neutral-face error (mm after the similarity alignment, all vertices / lips) of a ridge
    regression to the true shape from each window's points (per frame centred, unit norm; mean and spread over the
    frames): the exact 68 points, the detector's 68 mapped from its full set, and its full set (x, y)."""
    import numpy as np
    import torch

    from avface.data.shard_index import ShardIndex
    from avface.face_model import FaceModel, load_face_model
    from avface.landmarks.mapping import mediapipe_to_ibug68
    from avface.metrics import vertex_errors

    fm = FaceModel(load_face_model(None))
    lip = torch.as_tensor(fm.region("lips")).long()
    train, test = ShardIndex.build(shards, ["train"]), ShardIndex.build(shards, ["test"])

    def read(index: ShardIndex, rows: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        samples = [index.read(int(r)) for r in rows]
        pts = np.stack([s["detector_points"][..., :2] for s in samples]).astype(np.float64)
        sets = {"exact 68 points (the corpus's)": np.stack([s["landmarks"] for s in samples]).astype(np.float64),
                "detector's 68 (mapped from MediaPipe on the renders)": mediapipe_to_ibug68(pts),
                "detector's 478 points": pts}
        return sets, np.stack([s["gt"]["shape"][0] for s in samples])

    def features(p: np.ndarray) -> np.ndarray:
        p = p - p.mean(2, keepdims=True)
        p = p / np.sqrt((p ** 2).sum((2, 3), keepdims=True) + 1e-12)
        return np.concatenate([p.mean(1).reshape(len(p), -1), p.std(1).reshape(len(p), -1)], 1)

    def neutral(shape: np.ndarray) -> torch.Tensor:
        z = lambda k: torch.zeros(len(shape), k)  # noqa: E731
        with torch.no_grad():
            return fm(shape=torch.as_tensor(shape, dtype=torch.float32), expression=z(fm.n_expression),
                      global_pose=z(3), neck_pose=z(3), jaw_pose=z(3), eye_pose=z(6)).vertices

    x_tr, y_tr = read(train, train.spread(train_windows))
    x_te, y_te = read(test, test.spread(0))
    gt = neutral(y_te)

    def errors(shape: np.ndarray) -> tuple[float, float]:
        v3d, lips = vertex_errors(neutral(shape), gt, lip)
        return float(v3d.mean()), float(lips.mean())

    rows = {"template (zero shape)": errors(np.zeros_like(y_te))}
    for name in x_tr:
        a, b = features(x_tr[name]), features(x_te[name])
        mu, sd = a.mean(0), a.std(0) + 1e-9
        a, b = (a - mu) / sd, (b - mu) / sd
        w = np.linalg.solve(a.T @ a + np.eye(a.shape[1]), a.T @ (y_tr - y_tr.mean(0)))
        rows[f"ridge on the {name}"] = errors(b @ w + y_tr.mean(0))
    from avface.metrics.landmarks import landmark_nme

    print("\nthe detector's 68 points (mapped from its full set) against the exact 68, held-out windows, NME of the "
          "inter-ocular distance (frames where it found the face / all frames):")
    for split in ("test", "test_occ"):
        index = ShardIndex.build(shards, [split])
        samples = [index.read(int(r)) for r in index.spread(60)]
        ok = np.concatenate([s["detector_valid"] for s in samples])
        pred = mediapipe_to_ibug68(np.concatenate([s["detector_points"][..., :2] for s in samples]))
        gt = np.concatenate([s["landmarks"] for s in samples])
        nme = landmark_nme(pred[ok], gt[ok])
        print(f"  {split}: NME {float(nme.mean()):.3f} over {int(ok.sum())} / {len(ok)} frames")
    print(f"\nface shape from 2D points, held-out speakers ({len(y_te)} windows; {len(y_tr)} training windows), "
          "neutral face, mm after the similarity alignment")
    print("| shape from | 3D mm | lip mm |\n|---|---|---|")
    for k, (v3d, lips) in rows.items():
        print(f"| {k} | {v3d:.3f} | {lips:.3f} |")


def _style_shift(checkpoints: dict[str, str], shards: dict[str, Path], windows: int) -> dict:
    """Each checkpoint on the held-out windows of each style's shards (``validate``, with the baselines from the
    checkpoint's training statistics). The first style of ``shards`` is the one trained on. Returns ``{"rows":
    [{model, style, v3d_mm, lip_mm, expression_mm, nme, lip_nme}], "ratios": {model: {...}}}``."""
    from avface.data.shard_index import ShardIndex
    from avface.metrics import Baselines
    from avface.train.validation import validate
    from avface.trained.checkpoints import load_trained

    keys = ("v3d_mm", "lip_mm", "expression_mm", "nme", "lip_nme")
    styles = list(shards)
    rows, ratios, baseline_rows = [], {}, []
    for name, path in checkpoints.items():
        trained = load_trained(path)
        baselines = Baselines.from_statistics(trained.meta["extras"]["statistics"])
        res = {}
        for style in styles:
            index = ShardIndex.build(shards[style], ["test"])
            m = validate(trained.model, index.batches(index.spread(windows), trained.model.config.image_size),
                         baselines)
            res[style] = m
            rows.append({"model": name, "style": style, **{k: m.get(f"val/{k}") for k in keys}})
            if name == next(iter(checkpoints)):  # the baselines: the same for every model
                for base in ("mean_face", "constant"):
                    baseline_rows.append({"model": f"baseline: {base.replace('_', ' ')}", "style": style,
                                          **{k: m.get(f"val/{base}/{k}") for k in keys}})
        if len(styles) > 1:
            seen, unseen = res[styles[0]], res[styles[-1]]
            ratios[name] = {"v3d_vs_constant": unseen["val/v3d_mm"] / unseen["val/constant/v3d_mm"],
                            "nme_unseen": unseen["val/nme"], "nme_seen": seen["val/nme"],
                            "v3d_unseen_vs_seen": unseen["val/v3d_mm"] / seen["val/v3d_mm"]}
    return {"rows": baseline_rows + rows, "ratios": ratios}


def _lip_error_budget(checkpoint: str, shards: str, windows: int) -> dict[str, float]:
    """Lip error of the final model beside faces that swap true parameters in (held-out validation windows): which
    of identity, jaw and expression limits it. Also the jaw's RMS error (degrees, opening axis), and the same with
    the predicted jaw opening scaled by each held-out speaker's least-squares gain against the truth (an oracle:
    how much of the jaw error is the speaker's mouth-opening amplitude, which the corpus draws per speaker, rather
    than the timing of the opening, which the speech gives)."""
    import numpy as np
    import torch

    from avface.data.shard_index import ShardIndex
    from avface.metrics import flat_frames, ground_truth_vertices, vertex_errors
    from avface.trained.checkpoints import load_trained

    trained = load_trained(checkpoint)
    model, fm = trained.model, trained.face_model
    stats = trained.meta["extras"]["statistics"]
    mean_e = torch.tensor(stats["expression"]["mean"], dtype=torch.float32)
    mean_j = torch.tensor(stats["jaw"]["mean"], dtype=torch.float32)
    lip = torch.as_tensor(fm.region("lips")).long()
    index = ShardIndex.build(shards, ["test"])
    rows = index.spread(windows)
    # 1. predictions of every window, with its speaker (the key's identity part)
    seen = []
    with torch.no_grad():
        for batch in index.batches(rows, model.config.image_size):
            out = model(batch)
            frames = batch.targets.jaw.shape[1]
            speakers = np.repeat([key.split("_")[1] for key in batch.keys], frames)  # (B*T,)
            seen.append((batch.targets, out, speakers))
    # 2. the oracle gain per speaker: jaw opening (axis 0) ~ gain * predicted opening
    pred_open = np.concatenate([flat_frames(out.jaw)[:, 0].numpy() for _, out, _ in seen])
    true_open = np.concatenate([flat_frames(tg.jaw)[:, 0].numpy() for tg, _, _ in seen])
    speaker_of = np.concatenate([spk for _, _, spk in seen])
    gain = {s: float((pred_open[speaker_of == s] * true_open[speaker_of == s]).sum()
                     / max((pred_open[speaker_of == s] ** 2).sum(), 1e-12)) for s in np.unique(speaker_of)}
    # 3. lip errors of each face
    acc: dict[str, list[float]] = {}
    jaw_sq: list[float] = []  # per batch: mean squared jaw-opening error (rad^2)
    jaw_sq_gain: list[float] = []
    with torch.no_grad():
        for tg, out, speakers in seen:
            gt = ground_truth_vertices(fm, tg)
            n = gt.shape[0]
            template = torch.zeros_like(flat_frames(tg.shape))
            e, j, shape = flat_frames(out.expression), flat_frames(out.jaw), flat_frames(out.shape)
            j_gain = j.clone()
            j_gain[:, 0] = j[:, 0] * torch.tensor([gain[s] for s in speakers], dtype=j.dtype)
            me, mj = mean_e[None].expand(n, -1), mean_j[None].expand(n, -1)
            faces = {
                "constant: template, mean expression and jaw": ground_truth_vertices(fm, tg, me, mj, template),
                "final model": flat_frames(out.vertices),
                "final model's expression and jaw on the template": ground_truth_vertices(fm, tg, e, j, template),
                "final model's expression and jaw, the jaw opening x the speaker's oracle gain, template":
                    ground_truth_vertices(fm, tg, e, j_gain, template),
                "final model's expression, true jaw, template": ground_truth_vertices(fm, tg, e, flat_frames(tg.jaw),
                                                                                      template),
                "template, mean expression, true jaw": ground_truth_vertices(fm, tg, me, flat_frames(tg.jaw), template),
                "template, true expression and jaw": ground_truth_vertices(fm, tg, shape=template),
                "final model's identity, true expression and jaw": ground_truth_vertices(fm, tg, shape=shape),
                # the floor of a face without lip refinement: every model parameter exact, no lip detail
                "true shape, expression and jaw, no lip detail": ground_truth_vertices(fm, tg, lip_detail=False),
            }
            for name, verts in faces.items():
                acc.setdefault(name, []).append(float(vertex_errors(verts, gt, lip)[1].mean()))
            jaw_sq.append(float(((j[:, 0] - flat_frames(tg.jaw)[:, 0]) ** 2).mean()))
            jaw_sq_gain.append(float(((j_gain[:, 0] - flat_frames(tg.jaw)[:, 0]) ** 2).mean()))
    res = {k: float(np.mean(v)) for k, v in acc.items()}
    res["jaw RMS error (deg)"] = float(np.degrees(np.sqrt(np.mean(jaw_sq))))
    res["jaw RMS error with the speaker's oracle gain (deg)"] = float(np.degrees(np.sqrt(np.mean(jaw_sq_gain))))
    res["true jaw opening spread (deg)"] = float(np.degrees(true_open.std()))
    return res


def _shape_from_landmarks(checkpoint: str, shards: str, train_windows: int = 1500,
                          noise_px: float = 1.0) -> dict[str, tuple[float, float]]:
    """How well the 2D landmark geometry alone tells a speaker's face shape, beside the final model's shape: a
    ridge regression (train windows -> held-out speakers) from each window's landmarks (per frame centred and
    scaled to unit norm; mean and spread over the 16 frames) to the true shape coefficients, with the exact
    landmarks and with ``noise_px`` of Gaussian noise on every point (a detector's error). Errors are of the
    neutral face (zero expression and pose), all vertices and lips, against the template's."""
    import numpy as np
    import torch

    from avface.data.shard_index import ShardIndex
    from avface.metrics import vertex_errors
    from avface.trained.checkpoints import load_trained

    def read(index: ShardIndex, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        samples = [index.read(int(r)) for r in rows]
        lms = np.stack([np.asarray(s["landmarks"], np.float64) for s in samples])  # (N, T, 68, 2) px
        shapes = np.stack([s["gt"]["shape"][0] for s in samples])  # (N, NS)
        return lms, shapes

    def features(lms: np.ndarray) -> np.ndarray:
        p = lms - lms.mean(2, keepdims=True)
        p = p / np.sqrt((p ** 2).sum((2, 3), keepdims=True))
        return np.concatenate([p.mean(1).reshape(len(p), -1), p.std(1).reshape(len(p), -1)], 1)

    trained = load_trained(checkpoint)
    model, fm = trained.model, trained.face_model
    lip = torch.as_tensor(fm.region("lips")).long()
    train, test = ShardIndex.build(shards, ["train"]), ShardIndex.build(shards, ["test"])
    lm_tr, y_tr = read(train, train.spread(train_windows))
    rows_te = test.spread(0)
    lm_te, y_te = read(test, rows_te)

    def neutral(shape: np.ndarray) -> torch.Tensor:
        n = len(shape)
        z = lambda k: torch.zeros(n, k)  # noqa: E731
        return fm(shape=torch.as_tensor(shape, dtype=torch.float32), expression=z(fm.n_expression),
                  global_pose=z(3), neck_pose=z(3), jaw_pose=z(3), eye_pose=z(6)).vertices

    gt = neutral(y_te)

    def errors(shape: np.ndarray) -> tuple[float, float]:
        v3d, lips = vertex_errors(neutral(shape), gt, lip)
        return float(v3d.mean()), float(lips.mean())

    out = {"template (zero shape)": errors(np.zeros_like(y_te))}
    with torch.no_grad():
        pred = [model(b).shape.mean(1).numpy() for b in test.batches(rows_te, model.config.image_size)]
    out["the final model's (mean over the window's frames)"] = errors(np.concatenate(pred))
    rng = np.random.default_rng(0)
    for name, sigma in (("exact", 0.0), (f"{noise_px:g} px noise", noise_px)):
        a, b = (features(x + rng.normal(0.0, sigma, x.shape)) for x in (lm_tr, lm_te))
        mu, sd = a.mean(0), a.std(0) + 1e-9
        a, b = (a - mu) / sd, (b - mu) / sd
        w = np.linalg.solve(a.T @ a + np.eye(a.shape[1]), a.T @ (y_tr - y_tr.mean(0)))
        out[f"ridge on the {name} 2D landmarks"] = errors(b @ w + y_tr.mean(0))
    return out


def _oracle_lip_refiner(checkpoint: str, shards: str, steps: int = 1000, every: int = 100, windows: int = 128,
                        lr: float = 1e-4) -> dict[int, float]:
    """Could any lip-stage loss lower the lip error on this corpus? The lip refiner (the paper's inputs: the audio
    window and the coarse lips) trained from ``checkpoint`` on the held-out metric itself: the lip vertices'
    distance to the TRUE mesh after the similarity alignment (3D supervision no paper loss has). The rest of the
    model is frozen, as in the lip stage. Held-out lip mm (``validate``'s, the lip stage's own metric) at every
    ``every`` steps (step 0 = the starting model)."""
    import numpy as np
    import torch

    from avface.data.shard_index import ShardIndex
    from avface.metrics import flat_frames, ground_truth_vertices, vertex_errors
    from avface.train.validation import validate
    from avface.trained.checkpoints import load_trained

    torch.manual_seed(0)
    trained = load_trained(checkpoint, stage="lip")
    model, fm = trained.model, trained.face_model
    model.freeze_batchnorm(True)  # as the lip stage does when it starts from trained weights
    lip = torch.as_tensor(fm.region("lips")).long()
    val_index, train_index = ShardIndex.build(shards, ["test"]), ShardIndex.build(shards, ["train"])
    val_batches = val_index.batches(val_index.spread(windows), model.config.image_size)

    def held_out() -> float:  # the lip stage's own validation metric (eval mode; validate restores train mode)
        with torch.no_grad():
            return validate(model, val_batches)["val/lip_mm"]

    optimiser = torch.optim.Adam(model.trainable_parameters(), lr=lr, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    model.train()
    curve = {0: held_out()}
    for step in range(1, steps + 1):
        batch = train_index.batches(rng.choice(len(train_index.table), 8, replace=False), model.config.image_size)[0]
        out = model(batch, render=False)
        loss = vertex_errors(flat_frames(out.vertices), ground_truth_vertices(fm, batch.targets), lip)[1].mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step % every == 0:
            curve[step] = held_out()
    return curve


def _occlusion_gap(checkpoints: dict[str, str], shards: str) -> dict[str, dict[str, float]]:
    """3D and lip error of each checkpoint on every held-out occluded window and on its clean twin (the same
    window without the occluder): how much the occluder costs, and how much of that the fine-tune wins back."""
    from avface.data.shard_index import ShardIndex
    from avface.train.data import OCC_SUFFIX
    from avface.train.validation import validate
    from avface.trained.checkpoints import load_trained

    index = ShardIndex.build(shards, ["test", "test" + OCC_SUFFIX])
    occ = index.table.index[index.table["occluded"]].to_numpy()
    twins = index.clean_twins()[occ]
    out = {}
    for name, path in checkpoints.items():
        model = load_trained(path).model
        res = {}
        for tag, rows in (("occluded", occ), ("clean", twins)):
            m = validate(model, index.batches(rows, model.config.image_size))
            res[f"{tag}/v3d_mm"], res[f"{tag}/lip_mm"] = m["val/v3d_mm"], m["val/lip_mm"]
        out[name] = res
    return out


def _plot(tracking_uri: str, path: Path) -> None:
    """Held-out 3D and lip error against cumulative training steps, one colour per stage and run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("avface-train")
    runs = client.search_runs([exp.experiment_id])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in ("recipe", "scratch"):
        offset = 0
        children = sorted((r for r in runs if r.data.tags.get("mlflow.runName", "").startswith(name + "/")),
                          key=lambda r: r.info.start_time)
        for run in children:
            stage = run.data.tags["avface.stage"]
            last = offset
            for ax, key in zip(axes, ("val/v3d_mm", "val/lip_mm"), strict=True):
                hist = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
                if hist:
                    xs = [offset + m.step for m in hist]
                    ax.plot(xs, [m.value for m in hist], marker="o", ms=2, ls="-" if name == "recipe" else "--",
                            label=f"{name}: {stage}")
                    last = max(last, xs[-1])
            offset = last
    for ax, key in zip(axes, ("held-out 3D error (mm)", "held-out lip error (mm)"), strict=True):
        ax.set_xlabel("training steps")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()

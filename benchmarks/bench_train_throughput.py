"""Does data keep up with training? Samples/s of the shard loader alone vs the training step alone (tiny config,
CPU), and of whole Ray Train runs with 1 and 2 workers, in one run.

    python benchmarks/bench_train_throughput.py [--shards DIR] [--batches 30] [--steps 30] [--smoke]

Without ``--shards`` a small synthetic corpus is made first (``avface.train.testing``). Rows:

- loader: ``BatchStream`` + torch DataLoader with 0 / 1 / 2 worker processes (decode + resize + collate);
- step: forward + losses + backward + Adam on pre-loaded batches, for the pretrain and the coarse stage;
- Ray Train: ``run_training`` of the pretrain stage with 1 and 2 workers (0.5 CPU each), samples/s as reported
  by the loop (all workers together, validation excluded).

Goal: the loader at least 3x faster than the step, so data never starves training.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def loader_rate(index, workers: int, batches: int, image_size: int) -> float:
    from avface.train.data import BatchStream, make_loader

    stream = BatchStream(index, 0, 1, 8, 4, image_size, seed=0)
    it = iter(make_loader(stream, workers))
    next(it)  # worker start-up is not throughput
    t0, n = time.perf_counter(), 0
    for _ in range(batches):
        n += next(it)[2].batch_size
    return n / (time.perf_counter() - t0)


def step_rate(index, stage: str, steps: int) -> float:
    from avface.data.shard_index import target_statistics
    from avface.face_model import FaceModel, load_face_model
    from avface.models import AVFaceConfig
    from avface.models.avface import AVFace
    from avface.train.config import default_stages
    from avface.train.data import BatchStream
    from avface.train.loop import StepContext, train_step

    cfg = AVFaceConfig.tiny()
    cfg.audio_dim = 80
    fm = FaceModel(load_face_model(None))
    model = AVFace(cfg, fm)
    model.set_stage("coarse")
    model.train()
    params = model.trainable_parameters()
    opt = torch.optim.Adam(params, lr=1e-4, weight_decay=5e-4)
    stats = target_statistics(index, max_samples=200)
    scales = {k: torch.tensor(v["std"]).clamp_min(1e-2) for k, v in stats.items()}
    stream = iter(BatchStream(index, 0, 1, 8, 4, cfg.image_size, seed=0))
    batches = [next(stream)[2] for _ in range(4)]
    scfg = default_stages()[stage]
    ctx = StepContext(stage, scfg.augment_zoom, scfg.augment_shift, scfg.landmark_weight, scales, fm,
                      torch.as_tensor(fm.region("lips")).long())

    def one(b):  # the loop's own step (avface.train.loop.train_step)
        train_step(model, opt, params, b, ctx, torch.Generator().manual_seed(0))

    one(batches[0])
    t0, n = time.perf_counter(), 0
    for i in range(steps):
        b = batches[i % len(batches)]
        one(b)
        n += b.batch_size
    return n / (time.perf_counter() - t0)


def ray_rate(shards: Path, out: Path, workers: int, steps: int) -> float:
    from avface.train.trainer import run_training

    res = run_training({"data": {"shards": str(shards), "val_windows": 8, "val_occluded_windows": 0},
                        "out": str(out), "name": f"w{workers}", "stage": "pretrain", "num_cpus": 2,
                        "scaling": {"num_workers": workers}, "tracking": {"registered_model": ""},
                        "stages": {"pretrain": {"steps": steps, "val_every": 0, "report_every": 5,
                                                "checkpoint_every": 0}}})
    from mlflow.tracking import MlflowClient

    client = MlflowClient(res["tracking_uri"])
    exp = client.get_experiment_by_name("avface-train")
    run = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("mlflow.runName") ==
           f"w{workers}/pretrain"][0]
    hist = sorted(client.get_metric_history(run.info.run_id, "samples_per_s"), key=lambda m: m.step)
    rates = [m.value for m in hist[1:]] or [m.value for m in hist]  # the first report includes start-up
    return sorted(rates)[len(rates) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", default=None)
    ap.add_argument("--out", default="runs/bench_throughput")
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--identities", type=int, default=6, help="training speakers of the corpus made without --shards")
    ap.add_argument("--smoke", action="store_true",
                    help="the smallest run that prints every row (3 speakers, 2 batches, 5 steps): a test of the "
                         "benchmark, not a measurement")
    args = ap.parse_args()
    if args.smoke:
        args.identities, args.batches, args.steps = 3, 2, 5
    torch.set_num_threads(1)
    out = Path(args.out).resolve()
    from avface.data.shard_index import ShardIndex
    from avface.train.testing import make_training_shards

    shards = Path(args.shards) if args.shards else make_training_shards(out / "data",
                                                                         dev_identities=args.identities,
                                                                         num_cpus=2)["shards"]
    index = ShardIndex.build(shards, ["train"])
    rows = []
    for w in (0, 1, 2):
        rows.append((f"loader, {w} worker process(es)", loader_rate(index, w, args.batches, 64)))
    for stage in ("pretrain", "coarse"):
        rows.append((f"training step ({stage}), 1 thread", step_rate(index, stage, args.steps)))
    if not args.skip_ray:
        for workers in (1, 2):
            rows.append((f"Ray Train pretrain, {workers} worker(s)", ray_rate(shards, out / "ray", workers,
                                                                               args.steps)))
    print("\n| what (tiny config, 64 px, batches of 8 windows x 16 frames) | samples/s |\n|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:.1f} |")
    loader = dict(rows)["loader, 1 worker process(es)"]
    for stage in ("pretrain", "coarse"):
        step = dict(rows)[f"training step ({stage}), 1 thread"]
        print(f"loader (1 worker) / step ({stage}): {loader / step:.2f}x (goal >= 3x)")
    if not args.skip_ray:
        r = dict(rows)
        print(f"Ray Train 2 workers / 1 worker: "
              f"{r['Ray Train pretrain, 2 worker(s)'] / r['Ray Train pretrain, 1 worker(s)']:.2f}x")


if __name__ == "__main__":
    main()

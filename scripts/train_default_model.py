"""Train the project's default tiny model and ship it with its model card (``avface/assets/default_model/``).

    python scripts/train_default_model.py                      # the shipped model's recipe (about 30-40 min, 2 cores)
    python scripts/train_default_model.py --identities 400 --pretrain-steps 1500 ...   # a bigger run
    python scripts/train_default_model.py --set model.landmark_input=true              # any TrainConfig override

1. corpus: ``--identities`` training speakers and ``--test-identities`` held-out ones, one clip each, 64 px, with
   the renderer's normals and occluded copies (``avface.train.testing.make_training_shards``; synthetic faces of
   the open starter model only: nothing licensed is in the corpus or the model);
2. training: ``pipelines/train.py stage=all`` (pretrain on the synthetic ground truth -> coarse -> lip -> detail ->
   occlusion, the tiny model config), tracked in ``OUT/runs/mlflow.db``;
3. ships the final model without its optimiser state to ``--dest`` (``avface-tiny.pt``), with the training
   set's ground-truth statistics (the constant baseline);
4. measures it on the held-out speakers and on the fixed check set (``avface.train.default_model.CHECK_SET``,
   rebuilt by ``tests/test_default_model.py``), beside the mean-face and constant baselines, and writes
   ``MODEL_CARD.md`` and ``model_card.json`` beside the model.

Re-running resumes (corpus, shards and finished stages are kept under ``--out``).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEST = REPO / "avface" / "assets" / "default_model"
MODEL_FILE = "avface-tiny.pt"
ROWS = [("this model", ""), ("constant (template, training mean expression and jaw)", "constant/"),
        ("mean face (template, zero expression)", "mean_face/")]


def _stage_config(args: argparse.Namespace) -> dict:
    later = {"every": args.val_every, "steps": args.stage_steps}
    stages = {s: {"steps": later["steps"], "val_every": later["every"], "checkpoint_every": later["every"],
                  "report_every": 10} for s in ("coarse", "lip", "detail", "occlusion")}
    stages["pretrain"] = {"steps": args.pretrain_steps, "val_every": args.pretrain_val_every,
                          "checkpoint_every": args.pretrain_val_every, "report_every": 10}
    return stages


def _recipe_args() -> list[str]:
    """This run's arguments without ``--dest`` (where the files go is no part of how the model was made)."""
    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a == "--dest":
            skip = True
        elif not a.startswith("--dest="):
            args.append(a)
    return args


def _training_seconds(tracking_uri: str, parent_run_id: str) -> float:
    """Wall time of the training's stages from their MLflow runs (right when stages were resumed or skipped)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_run(parent_run_id).info.experiment_id
    runs = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")
    return sum(((r.info.end_time or r.info.start_time) - r.info.start_time) / 1000.0 for r in runs)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def _table(numbers: dict[str, float]) -> str:
    lines = ["| face | 3D mm | lip mm | expression mm | NME | lip NME |", "|---|---|---|---|---|---|"]
    for label, p in ROWS:
        nme = (_fmt(numbers.get("nme")), _fmt(numbers.get("lip_nme"))) if not p else ("-", "-")
        lines.append(f"| {label} | {_fmt(numbers.get(p + 'v3d_mm'))} | {_fmt(numbers.get(p + 'lip_mm'))} | "
                     f"{_fmt(numbers.get(p + 'expression_mm'))} | {nme[0]} | {nme[1]} |")
    return "\n".join(lines)


def write_card(dest: Path, card: dict) -> Path:
    """``MODEL_CARD.md`` (and ``model_card.json``, what the test reads) from ``card``."""
    (dest / "model_card.json").write_text(json.dumps(card, indent=1, sort_keys=True) + "\n")
    a = card["corpus"]
    text = f"""# avface-tiny: the project's default model

`{MODEL_FILE}` ({card['size_mb']:.1f} MB) is what `avface reconstruct` uses when you have not trained or registered
a model of your own. It is the **tiny** AVFace config (`AVFaceConfig.tiny()`, {card['image_size']} px crops,
mel audio features) trained by this repository's own code on this repository's own **synthetic** talking faces
(the open starter face model; no FLAME, DECA or any licensed data or weights are in it). Expect it to track a real
face only roughly: for better results train on your own data with your FLAME and DECA's weights (README: real
data).

## How it was made

    {card['command']}

- corpus: {a['train_speakers']} training and {a['test_speakers']} held-out synthetic speakers, one clip each,
  {card['image_size']} px, seed {a['seed']} ({a['train_windows']} training windows); made in
  {card['timings_s']['data']:.0f} s
- training: `stage=all`: {' -> '.join(card['chain'])}; steps per stage (the budget; each stage keeps its
  best validated weights): {json.dumps(card['steps'])}; {card['timings_s']['training']:.0f} s of wall time
  (the stages' MLflow runs)
- on: {card['machine']}; {card['date']}; commit {card['commit']}
- input contract (how its inputs must be made; and the audio features' per-channel mean / std):
  {json.dumps({k: v for k, v in card['input_contract'].items() if k not in ('audio_mean', 'audio_std')})}

## Held-out numbers

{card['held_out']['windows']} windows of the {a['test_speakers']} held-out speakers (mm after a per-frame
similarity alignment; expression mm: the predicted expression and jaw on the true shape and pose; NME: fraction of
the inter-ocular distance):

{_table(card['held_out']['numbers'])}

The fixed check set (`avface.train.default_model.CHECK_SET`, its held-out speakers only:
{json.dumps(card['check_set']['config'])}), which `tests/test_default_model.py` rebuilds and measures again:

{_table(card['check_set']['numbers'])}

Retrain with the command above (`--help` lists the knobs; `--set KEY=VALUE` passes any `TrainConfig` override,
e.g. a model option); it rewrites this card.
"""
    path = dest / "MODEL_CARD.md"
    path.write_text(text)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/default_model", help="corpus, shards, training runs")
    ap.add_argument("--dest", default=str(DEFAULT_DEST), help="where the model and its card go")
    ap.add_argument("--identities", type=int, default=240, help="training speakers")
    ap.add_argument("--test-identities", type=int, default=40, help="held-out speakers")
    ap.add_argument("--pretrain-steps", type=int, default=450)
    ap.add_argument("--stage-steps", type=int, default=30, help="steps of each later stage")
    ap.add_argument("--val-every", type=int, default=0, help="later stages: steps between validations (0: at the end)")
    ap.add_argument("--pretrain-val-every", type=int, default=150)
    ap.add_argument("--val-windows", type=int, default=64, help="held-out windows each validation scores")
    ap.add_argument("--card-windows", type=int, default=256, help="held-out windows the card's numbers cover")
    ap.add_argument("--name", default="default",
                    help="training run name under OUT/runs (another name trains anew on the same corpus)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a TrainConfig override in Hydra's dotted form (repeatable), e.g. model.image_size=64")
    args = ap.parse_args()

    from avface.data.shard_index import ShardIndex, target_statistics
    from avface.train.default_model import CHECK_SET, check_set_shards, held_out_numbers, ship_checkpoint
    from avface.train.testing import make_training_shards
    from avface.train.trainer import run_training
    from avface.trained.checkpoints import input_contract_of, read_checkpoint

    out = Path(args.out).resolve()
    dest = Path(args.dest).resolve()
    t0 = time.perf_counter()
    made_before = (out / "data" / "shards" / "index.parquet").exists()
    data = make_training_shards(out / "data", dev_identities=args.identities, test_identities=args.test_identities,
                                clips_per_identity=1, occluded_windows=max(args.identities // 2, 8), seed=args.seed,
                                use_ray_for_synthesis=True, num_cpus=args.num_cpus)
    # the corpus's making time is kept from the run that made it (a resumed run only checks it)
    data_time = out / "data" / "seconds.json"
    if not made_before or not data_time.exists():
        data_time.write_text(json.dumps({"seconds": time.perf_counter() - t0, "resumed": made_before}))
    t_data = json.loads(data_time.read_text())["seconds"]
    overrides = OmegaConf.to_container(OmegaConf.from_dotlist(args.set)) if args.set else {}
    cfg = {"data": {"shards": str(data["shards"]), "val_windows": args.val_windows},
           "out": str(out / "runs"), "name": args.name, "stage": "all", "stages": _stage_config(args),
           "num_cpus": args.num_cpus, "progress": False, "seed": args.seed,
           "tracking": {"registered_model": ""}}
    cfg = OmegaConf.to_container(OmegaConf.merge(OmegaConf.create(cfg), OmegaConf.create(overrides)))
    result = run_training(cfg)
    t_train = _training_seconds(result["tracking_uri"], result["mlflow_run_id"])

    train_index = ShardIndex.build(data["shards"], ["train"])
    stats = target_statistics(train_index)
    ckpt = read_checkpoint(result["final"])
    import subprocess
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    card = {
        "command": "python scripts/train_default_model.py " + " ".join(shlex.quote(a) for a in _recipe_args()),
        "corpus": {"train_speakers": args.identities, "test_speakers": args.test_identities, "seed": args.seed,
                   "train_windows": int(len(train_index))},
        "image_size": int(ckpt["model_config"]["image_size"]),
        "chain": [str(s) for s in result["chain"]],
        "steps": {str(s): cfg["stages"][str(s)]["steps"] for s in result["chain"]},
        "overrides": args.set,
        "timings_s": {"data": t_data, "training": t_train},
        "machine": f"{platform.machine()} CPU, {args.num_cpus} cores for Ray (shared machine)",
        "date": time.strftime("%Y-%m-%d"), "commit": commit,
        "input_contract": input_contract_of(ckpt).to_dict(),
    }
    model_path = ship_checkpoint(result["final"], dest / MODEL_FILE, stats, {k: card[k] for k in (
        "command", "corpus", "chain", "steps", "date", "commit")})
    card["size_mb"] = model_path.stat().st_size / 1e6
    card["held_out"] = {"windows": args.card_windows,
                        "numbers": held_out_numbers(model_path, data["shards"], args.card_windows)}
    check = check_set_shards(out / "check_set")
    card["check_set"] = {"config": CHECK_SET, "numbers": held_out_numbers(model_path, check)}
    path = write_card(dest, card)
    print(f"wrote {model_path} ({card['size_mb']:.1f} MB) and {path}")
    print(_table(card["held_out"]["numbers"]))


if __name__ == "__main__":
    main()

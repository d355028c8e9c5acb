"""Synthetic corpus throughput: VoxCeleb2 clips per minute (and Multiface segments) on this machine.

    .venv/bin/python benchmarks/bench_synthesize.py                 # 8 clips: one process, then Ray
    .venv/bin/python benchmarks/bench_synthesize.py --clips 16 --num-cpus 2
    .venv/bin/python benchmarks/bench_synthesize.py --clips 4 --styles studio,real --contact-sheet sheet.png

Measures the same clips twice in one run: in one process (the baseline) and as Ray tasks over the local CPUs,
and prints a table (wall seconds, clips/min, seconds of video per wall second, bytes per clip), the Ray / one
process ratio, and the mouth/phoneme agreement measured on the generated clips (the inner-lip gap's correlation
with vowel vs bilabial frames). Each further style of `--styles` (the corpus's appearance, `vox.style`) is
measured in one process too, beside the first (the baseline): its clips/min and the ratio to the first's;
`--contact-sheet PNG` writes three frames of one clip per speaker in each style (a row per style). `--json` also writes
everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def mouth_stats(root: str) -> dict:
    from pathlib import Path

    from avface.speech import phoneme_classes_at, phonemes_from_json

    gaps, classes = [], []
    for p in sorted(Path(root, "voxceleb2", "gt").rglob("*.npz")):
        with np.load(p, allow_pickle=False) as z:
            lm = z["landmarks3d"]
            gaps.append(np.linalg.norm(lm[:, 62] - lm[:, 66], axis=1) * 1000)
            t = np.arange(int(z["num_frames"])) / float(z["fps"])
            classes += phoneme_classes_at(phonemes_from_json(str(z["phonemes"])), t)
    gap, cls = np.concatenate(gaps), np.array(classes)
    vowel, bil = np.char.endswith(cls, "vowel"), cls == "bilabial"
    sel = vowel | bil
    return {"lip_gap_mm_vowel": float(gap[vowel].mean()), "lip_gap_mm_bilabial": float(gap[bil].mean()),
            "lip_gap_mm_silence": float(gap[cls == "silence"].mean()),
            "corr_gap_vowel_vs_bilabial": float(np.corrcoef(gap[sel], vowel[sel])[0, 1]),
            "frames": int(len(gap))}


def _contact_row(root: str, frames: tuple[float, ...] = (0.1, 0.5, 0.9), clips: int = 2) -> list[np.ndarray]:
    """Frames at these fractions of the first `clips` clips of a corpus (one per identity: the training and the
    held-out speaker): (H, W, 3) uint8 tiles."""
    from pathlib import Path

    from avface.io import read_video

    tiles = []
    first = {}
    for mp4 in sorted(Path(root, "voxceleb2").glob("*/mp4/*/*/*.mp4")):
        first.setdefault(mp4.parts[-3], mp4)
    for mp4 in list(first.values())[:clips]:
        video = read_video(str(mp4))[0]
        tiles += [video[int(f * (len(video) - 1))] for f in frames]
    return tiles


def _warm_ray_workers(n: int) -> None:
    """Start local Ray and import the corpus code in ``n`` worker processes (seconds each, once per worker)."""
    import ray

    from avface.utils.ray_utils import init_ray

    init_ray(num_cpus=n)

    @ray.remote(num_cpus=1)
    def warm() -> None:
        import avface.synth.corpus  # noqa: F401
        from avface.face_model import load_face_model

        load_face_model(None)
        time.sleep(0.5)  # hold the CPU so every worker process gets one warm-up task

    ray.get([warm.remote() for _ in range(n)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=8, help="VoxCeleb2 clips (2 identities x clips/2)")
    ap.add_argument("--multiface", action="store_true", help="also one Multiface identity (2 cameras, 1 sentence)")
    ap.add_argument("--num-cpus", type=int, default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--styles", default="studio,real",
                    help="comma-separated vox.style values: the first is the baseline (one process and Ray), each "
                         "further one is measured in one process")
    ap.add_argument("--contact-sheet", default=None, help="PNG: frames of each clip, a row per style")
    ap.add_argument("--no-ray", action="store_true",
                    help="one process only (a machine whose free memory is below one Ray task's task_memory_mb)")
    args = ap.parse_args()
    from avface.synth.corpus import synthesize_corpus

    per_id = max(1, args.clips // 2)
    styles = args.styles.split(",")
    results = {}
    sheet: dict[str, list[np.ndarray]] = {}
    runs = [("one process", styles[0]), *([] if args.no_ray else [("ray", styles[0])]),
            *((f"one process, {st}", st) for st in styles[1:])]
    for mode, style in runs:
        out = tempfile.mkdtemp(prefix="bench_synth_")
        cfg = {"out": out, "size": "tiny", "seed": 0, "progress": False, "num_cpus": args.num_cpus,
               "overwrite": True,
               "vox": {"dev_identities": 1, "test_identities": 1, "videos_per_identity": 1, "clips_per_video": per_id,
                       "style": style},
               "multiface": {"enabled": bool(args.multiface)}}
        if mode == "ray":
            _warm_ray_workers(args.num_cpus or os.cpu_count())  # Ray start-up and worker imports are not clip work
        t0 = time.perf_counter()
        s = synthesize_corpus(cfg, use_ray=mode == "ray")
        wall = time.perf_counter() - t0
        n = s["vox_clips"]
        results[mode] = {"clips": n, "wall_s": round(wall, 2), "clips_per_min": round(60 * s["generated"] / wall, 2),
                         "task_s_per_clip": round(s["task_seconds"]["vox"], 3),
                         "video_s_per_wall_s": round(s["vox_seconds_of_video"] / wall, 3),
                         "bytes_per_clip": {k: int(v / n) for k, v in s["vox_bytes"].items()},
                         "cpus": 1 if mode != "ray" else (args.num_cpus or os.cpu_count()), "style": style,
                         **mouth_stats(out)}
        if args.contact_sheet and mode != "ray":
            sheet[style] = _contact_row(out)
        shutil.rmtree(out, ignore_errors=True)
    print(f"{'mode':<22}{'cpus':>5}{'clips':>6}{'wall s':>8}{'clips/min':>10}{'video s/s':>10}{'mp4 KB':>8}"
          f"{'sidecar KB':>11}")
    for mode, r in results.items():
        print(f"{mode:<22}{r['cpus']:>5}{r['clips']:>6}{r['wall_s']:>8.1f}{r['clips_per_min']:>10.1f}"
              f"{r['video_s_per_wall_s']:>10.2f}{r['bytes_per_clip']['mp4'] / 1e3:>8.0f}"
              f"{r['bytes_per_clip']['gt'] / 1e3:>11.0f}")
    if "ray" in results:
        ratio = results["ray"]["clips_per_min"] / results["one process"]["clips_per_min"]
        print(f"ratio Ray / one process: {ratio:.2f}x")
    m = results.get("ray", results["one process"])
    print(f"mouth vs phonemes: inner-lip gap {m['lip_gap_mm_vowel']:.1f} mm on vowels, "
          f"{m['lip_gap_mm_bilabial']:.1f} mm on bilabials, correlation {m['corr_gap_vowel_vs_bilabial']:.2f}")
    for mode, style in runs:
        if mode in ("one process", "ray"):
            continue
        print(f"ratio {style} / {styles[0]} style (one process): "
              f"{results[mode]['clips_per_min'] / results['one process']['clips_per_min']:.2f}x clips/min")
    if args.contact_sheet:
        import cv2

        grid = np.concatenate([np.concatenate(row, 1) for row in sheet.values()], 0)
        cv2.imwrite(args.contact_sheet, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        print(f"wrote {args.contact_sheet} (rows: {', '.join(sheet)})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

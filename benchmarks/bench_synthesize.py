"""Synthetic corpus throughput: VoxCeleb2 clips per minute (and Multiface segments) on this machine.

    .venv/bin/python benchmarks/bench_synthesize.py                 # 8 clips, Ray over all local CPUs
    .venv/bin/python benchmarks/bench_synthesize.py --clips 16 --no-ray --num-cpus 1

Prints one JSON line: wall seconds, clips/min, per-clip task seconds, seconds of video per wall second, bytes per
clip (mp4, txt, sidecar), plus the mouth/phoneme agreement measured on the generated clips (the inner-lip gap's
correlation with vowel vs bilabial frames).
"""

from __future__ import annotations

import argparse
import json
import os
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=8, help="VoxCeleb2 clips (2 identities x clips/2)")
    ap.add_argument("--multiface", action="store_true", help="also one Multiface identity (2 cameras, 1 sentence)")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--num-cpus", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from avface.synth.corpus import synthesize_corpus

    out = args.out or tempfile.mkdtemp(prefix="bench_synth_")
    per_id = max(1, args.clips // 2)
    cfg = {"out": out, "size": "tiny", "seed": 0, "progress": False, "num_cpus": args.num_cpus, "overwrite": True,
           "vox": {"dev_identities": 1, "test_identities": 1, "videos_per_identity": 1, "clips_per_video": per_id},
           "multiface": {"enabled": bool(args.multiface)}}
    t0 = time.perf_counter()
    s = synthesize_corpus(cfg, use_ray=not args.no_ray)
    wall = time.perf_counter() - t0
    n = s["vox_clips"]
    res = {"clips": n, "wall_s": round(wall, 2), "clips_per_min": round(60 * s["generated"] / wall, 2),
           "task_s_per_clip": round(s["task_seconds"]["vox"], 3),
           "video_s_per_wall_s": round(s["vox_seconds_of_video"] / wall, 3),
           "bytes_per_clip": {k: int(v / n) for k, v in s["vox_bytes"].items()},
           "ray": not args.no_ray, "cpus": args.num_cpus or os.cpu_count(), "out": out, **mouth_stats(out)}
    print(json.dumps(res))


if __name__ == "__main__":
    main()

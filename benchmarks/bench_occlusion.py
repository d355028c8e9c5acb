"""Throughput of `occlude_sequence` on 16-frame 224x224 sequences (the paper's window) on this CPU.

    OMP_NUM_THREADS=1 python benchmarks/bench_occlusion.py [--sequences 20] [--json out.json]

Reports frames per second end to end (hand drawing + sliced-OT colour transfer + placement + motion + warping
and blending of every frame), and the baseline it runs beside in preprocessing: decoding the same 16 frames from
an H.264 mp4 with decord, measured in the same run. The ratio says whether occlusion would be the bottleneck.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from occlusion_synth import OcclusionConfig, occlude_sequence, replay  # noqa: E402
from occlusion_synth.demo import astronaut_sequence  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sequences", type=int, default=20)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    frames, boxes = astronaut_sequence(args.frames, args.size, seed=0)
    cfg = OcclusionConfig()
    occlude_sequence(frames, face_boxes=boxes, seed=0, config=cfg)  # warm-up (imports, caches)

    times, params = [], []
    for s in range(args.sequences):
        t0 = time.perf_counter()
        res = occlude_sequence(frames, face_boxes=boxes, seed=s, config=cfg)
        times.append(time.perf_counter() - t0)
        params.append(res.params)
    # Replay redoes the hand + colour transfer but not the sampling: about the same cost, reported for reference.
    t0 = time.perf_counter()
    for p in params[:5]:
        replay(p, frames)
    replay_s = (time.perf_counter() - t0) / min(5, len(params))

    # Baseline: decode the same frames from an H.264 mp4 (what preprocessing does before occluding a window).
    import tempfile

    import decord

    from avface.io.media import write_mp4

    with tempfile.TemporaryDirectory() as tmp:
        video = f"{tmp}/seq.mp4"
        write_mp4(video, frames, fps=25)
        decode_times = []
        for _ in range(args.sequences):
            t0 = time.perf_counter()
            reader = decord.VideoReader(video, num_threads=1)
            reader.get_batch(list(range(len(reader)))).asnumpy()
            decode_times.append(time.perf_counter() - t0)
    decode_s = float(np.median(decode_times))

    times = np.array(times)
    result = {
        "cpu": platform.processor() or platform.machine(),
        "omp_threads": os.environ.get("OMP_NUM_THREADS"),
        "frames_per_sequence": args.frames,
        "size": args.size,
        "sequences": args.sequences,
        "fps_mean": float(args.frames * len(times) / times.sum()),
        "fps_median": float(args.frames / np.median(times)),
        "seconds_per_sequence_median": float(np.median(times)),
        "seconds_per_sequence_max": float(times.max()),
        "replay_seconds_per_sequence": float(replay_s),
        "decode_seconds_per_sequence_median": decode_s,
    }
    n = args.frames
    print(f"{n}-frame {args.size}x{args.size} sequences, {args.sequences} runs, 1 thread")
    print(f"{'stage':<36}{'ms/sequence':>12}{'frames/s':>10}")
    for name, sec in (("occlude_sequence (ours)", float(np.median(times))), ("replay(params)", replay_s),
                      ("baseline: decord decode of the mp4", decode_s)):
        print(f"{name:<36}{sec * 1000:>12.1f}{n / sec:>10.1f}")
    print(f"ratio occlusion / decode time: {np.median(times) / decode_s:.2f}x "
          f"({result['fps_median'] / 25:.0f}x real time at 25 fps)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

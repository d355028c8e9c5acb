"""Throughput of `occlude_sequence` on 16-frame 224x224 sequences (the paper's window) on this CPU.

    OMP_NUM_THREADS=1 python benchmarks/bench_occlusion.py [--sequences 20] [--json out.json]

Reports frames per second end to end (hand drawing + sliced-OT colour transfer + placement + motion + warping
and blending of every frame), and the baseline it runs beside in preprocessing: decoding the same 16 frames from
an H.264 mp4 with decord, measured in the same run. The ratio says whether occlusion would be the bottleneck.

Then the hand's colour on a face in front of a saturated red stage (`occlusion_synth.demo.astronaut_on_backdrop`):
the CIELAB distance of the hand's mean colour to the face's skin and to the backdrop, for the colour transfer of
params version 1 (sliced OT on the landmark hull, the baseline) and today's (Lab statistics of the skin region),
with the detected landmarks and with a jaw line a third too wide (as a turned head's far-side contour).
`--figure PATH` writes the before/after picture (rows: baseline, today's; columns: seeds x landmarks).
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
from occlusion_synth.color_transfer import rgb_to_lab  # noqa: E402
from occlusion_synth.demo import astronaut_on_backdrop, astronaut_sequence  # noqa: E402

RED_STAGE = (225, 25, 30)
BASELINE_COLOR = {"method": "sliced_ot", "region": "hull"}  # params version 1's colour transfer


def colour_on_red_stage(seeds: int = 3, figure: str | None = None) -> dict[str, dict[str, float]]:
    """Mean CIELAB distances of the hand's mean colour to the skin and to the backdrop, per method and landmarks."""
    from occlusion_synth.placement import skin_region_mask

    frames, lms = astronaut_on_backdrop(num_frames=2, backdrop=RED_STAGE)
    skin = rgb_to_lab(frames[0][skin_region_mask(frames.shape[1:3], lms[0])].astype(np.float32) / 255).mean(0)
    red = rgb_to_lab(np.array(RED_STAGE, np.float32) / 255)
    loose = lms.copy()
    c = lms[0, 27:36].mean(0)
    loose[:, :17] = c + 1.35 * (lms[:, :17] - c)
    rows, tiles = {}, {}
    for method, color in (("baseline: sliced OT, landmark hull", BASELINE_COLOR), ("Lab statistics, skin", {})):
        cfg = OcclusionConfig.from_dict({"color": color})
        for name, lm in (("detected", lms), ("jaw 35% too wide", loose)):
            d_skin, d_red, l_std, secs = [], [], [], []
            for seed in range(seeds):
                t0 = time.perf_counter()
                res = occlude_sequence(frames, landmarks=lm, seed=seed, config=cfg)
                secs.append(time.perf_counter() - t0)
                hand = rgb_to_lab(res.frames[0][res.masks[0] > 0.95].astype(np.float32) / 255)
                d_skin.append(np.linalg.norm(hand.mean(0) - skin))
                d_red.append(np.linalg.norm(hand.mean(0) - red))
                l_std.append(hand[:, 0].std())
                tiles.setdefault(method, []).append(res.frames[0][8:200, 24:200])  # the head
            rows[f"{method} | {name}"] = {"dE_skin": float(np.mean(d_skin)), "dE_backdrop": float(np.mean(d_red)),
                                          "hand_L_std": float(np.mean(l_std)), "ms": 1000 * float(np.median(secs))}
    if figure:
        grid = np.concatenate([np.concatenate(t, 1) for t in tiles.values()], 0)
        grid = cv2.resize(grid, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
        cv2.imwrite(figure, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sequences", type=int, default=20)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--json", default=None)
    ap.add_argument("--figure", default=None, help="PNG: the hand's colour before a red stage, baseline vs today's")
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
    colour = colour_on_red_stage(figure=args.figure)
    result["colour_on_red_stage"] = colour
    print("\nhand colour on a face before a red stage (CIELAB distance of the hand's mean; 3 seeds):")
    print(f"{'method | landmarks':<58}{'dE skin':>9}{'dE stage':>10}{'hand L* std':>12}{'ms/seq':>8}")
    for name, r in colour.items():
        print(f"{name:<58}{r['dE_skin']:>9.1f}{r['dE_backdrop']:>10.1f}{r['hand_L_std']:>12.1f}{r['ms']:>8.0f}")
    worst = max(r["dE_skin"] for k, r in colour.items() if not k.startswith("baseline"))
    worst_base = max(r["dE_skin"] for k, r in colour.items() if k.startswith("baseline"))
    print(f"ratio worst dE to the skin, today's / baseline: {worst / worst_base:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

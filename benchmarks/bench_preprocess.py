"""Preprocessing throughput: whole pipeline vs decode-only, frames per second per core; 1 vs 2 Ray workers.

    python benchmarks/bench_preprocess.py [--clips 8] [--seconds 3.2] [--size 224] [--audio mel]

Builds a synthetic VoxCeleb2-layout tree (224x224 25 fps H.264 + AAC, like VoxCeleb2), then measures

* decode-only: what preprocessing decodes, with the project's reader (:mod:`avface.io.video`, one decoder
  thread): the scan (frame times + audio) and every frame as upright RGB, one process (1 core); for comparison
  decord's ``VideoReader.get_batch`` of every frame (video only), where decord is installed;
* pipeline: ``run_preprocess`` (decode, resample, audio decode + features, landmarks, JPEG strips, tar writing)
  with a local Ray of 1 and of 2 CPUs (one shard task per CPU). Per core = frames / sum of the shard tasks'
  seconds (each task holds one core); wall = frames / wall time of the job with the manifest already built.

The figure is ``pipeline per-core / decode-only``; the speed-up is wall(1 worker) / wall(2 workers). Numbers from a
shared 2-core machine are noisy: read them as orders of magnitude.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


def _warm_body() -> None:
    import time as _t

    import avface.audio.mel  # noqa: F401
    import avface.data.shards  # noqa: F401
    from avface.audio import AudioConfig, extract_audio_features

    extract_audio_features(__import__("numpy").zeros(16000, "float32"), 25, 25.0, AudioConfig(kind="mel"))
    _t.sleep(0.5)


def _remote_warm():
    import ray

    return ray.remote(_warm_body)


_warm = None


def _decode_reader(videos: list[Path]) -> tuple[int, float]:
    """Frames and seconds of preprocessing's decoding: the reader's scan (with audio) and frame pass."""
    from avface.io.video import iter_frames, scan_video

    t0 = time.perf_counter()
    n = 0
    for v in videos:
        scan = scan_video(v, threads=1)
        if scan.audio is not None:  # (clips with a separate .m4a have no audio stream)
            scan.audio.close()
        n += sum(1 for _ in iter_frames(scan.info, threads=1))
    return n, time.perf_counter() - t0


def _decode_decord(videos: list[Path]) -> float | None:
    """Seconds of decord decoding every frame (video only), None without decord."""
    try:
        import decord
    except ImportError:
        return None
    t0 = time.perf_counter()
    for v in videos:
        vr = decord.VideoReader(str(v), num_threads=1)
        vr.get_batch(list(range(len(vr)))).asnumpy()
    return time.perf_counter() - t0


def main() -> None:
    global _warm
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--audio", default="mel")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    import ray

    _warm = _remote_warm()

    from avface.data.config import PreprocessConfig
    from avface.data.preprocess import run_preprocess
    from avface.data.testing import make_tiny_voxceleb2

    work = Path(tempfile.mkdtemp(prefix="bench_preprocess_"))
    try:
        root = make_tiny_voxceleb2(work / "vox", size=args.size, seconds=args.seconds, bad=False, n_good=args.clips)
        videos = sorted((root / "dev" / "mp4").rglob("*.mp4"))

        n_decoded, decode_s = _decode_reader(videos)
        decord_s = _decode_decord(videos)

        rows = []
        manifest = None
        for workers in (1, 2):
            cfg = PreprocessConfig()
            cfg.data.root, cfg.out = str(root), str(work / f"out{workers}")
            cfg.video.image_size = args.size - args.size % 16
            cfg.audio.kind = args.audio
            cfg.occlusion.windows = {}
            cfg.shards.max_samples = 4  # several shards so 2 workers have work to share
            cfg.ray.num_cpus, cfg.ray.task_memory_mb = workers, 500
            cfg.progress = False
            Path(cfg.out).mkdir(parents=True)
            if manifest is not None:
                shutil.copy(manifest, Path(cfg.out) / "manifest.parquet")
            ray.shutdown()
            from avface.utils.ray_utils import init_ray

            init_ray(num_cpus=workers)
            # warm the worker processes (imports of torch/torchaudio/av/cv2 take seconds, once per process)
            ray.get([_warm.options(num_cpus=1).remote() for _ in range(workers)])
            t0 = time.perf_counter()
            summary = run_preprocess(cfg, init_ray=False)
            wall = time.perf_counter() - t0
            manifest = Path(cfg.out) / "manifest.parquet"
            done = [json.loads(p.read_text()) for p in (Path(cfg.out) / "_fragments").glob("*.done.json")]
            frames = sum(d["frames"] for d in done)
            task_s = sum(d["seconds"] for d in done)
            rows.append({"workers": workers, "frames": frames, "wall_s": wall, "task_s": task_s,
                         "per_core": frames / task_s, "wall_fps": frames / wall, "samples": summary["samples"]})
        ray.shutdown()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    dec_fps = n_decoded / decode_s
    print(f"\n{len(videos)} clips x {args.seconds:g} s, {args.size}x{args.size}, audio={args.audio}")
    print(f"{'stage':<28}{'frames':>8}{'seconds':>10}{'frames/s':>10}")
    print(f"{'decode-only (1 core)':<28}{n_decoded:>8}{decode_s:>10.2f}{dec_fps:>10.1f}")
    if decord_s is not None:
        print(f"{'decode-only, decord':<28}{n_decoded:>8}{decord_s:>10.2f}{n_decoded / decord_s:>10.1f}")
    for r in rows:
        print(f"{'pipeline per core, ' + str(r['workers']) + ' worker(s)':<28}{r['frames']:>8}{r['task_s']:>10.2f}"
              f"{r['per_core']:>10.1f}")
        print(f"{'pipeline wall, ' + str(r['workers']) + ' worker(s)':<28}{r['frames']:>8}{r['wall_s']:>10.2f}"
              f"{r['wall_fps']:>10.1f}")
    print(f"ratio pipeline/decode-only (per core, 1 worker): {rows[0]['per_core'] / dec_fps:.3f}")
    print(f"speed-up 1 -> 2 workers (wall): {rows[0]['wall_s'] / rows[1]['wall_s']:.2f}x")


if __name__ == "__main__":
    main()

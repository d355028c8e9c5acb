"""CPU rasterizer benchmark: our vectorised z-buffer vs pytorch3d's CPU rasterize_meshes, on one core.

Scene: a face-like height field (``avface.render.meshes.face_like_mesh``) at ~1k and ~10k faces, seen frontally by
the orthographic camera so that it fills ~60% of a 224x224 frame, like a face crop; small per-frame jitter of the
camera so frames differ. Both backends produce full ``Fragments`` (visibility, zbuf, barycentrics, dists).
pytorch3d tests every face at every pixel, so at ~10k faces it is measured on fewer frames (its cost per frame
does not depend on the batch size); the table says how many frames each number is from.

Run: ``.venv/bin/python benchmarks/bench_rasterizer.py`` (prints one table).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from avface.render.cameras import orthographic_project
from avface.render.meshes import face_like_mesh
from avface.render.rasterizer import rasterize


def _scene(n_grid: int, batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, V, 3) NDC vertices and (F, 3) faces of the face-like mesh filling ~60% of the frame."""
    verts, faces, _ = face_like_mesh(n_grid, size=0.2)
    g = torch.Generator().manual_seed(0)
    side_ndc = 2.0 * math.sqrt(0.6)  # a square covering 60% of the [-1, 1]^2 frame
    s = side_ndc / 0.2 * (1.0 + 0.02 * torch.randn(batch, generator=g))
    t = 0.01 * torch.randn(batch, 2, generator=g)
    cam = torch.cat([s[:, None], t], dim=1)
    return orthographic_project(verts[None].expand(batch, -1, -1), cam), faces


def _time(fn, repeats: int) -> tuple[float, float]:  # noqa: ANN001 - a zero-argument callable
    """Best-of-``repeats`` (wall seconds, process CPU seconds) per call. The minimum is the usual estimator on a
    shared machine: other processes only ever add time."""
    fn()  # warm-up (allocator, lazy imports)
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (CI smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = args.image_size

    rows = []
    for n_grid in (22, 70):  # 968 and 9,800 faces
        for batch in (1, 16):
            verts, faces = _scene(n_grid, batch, size)
            reps = 3 if args.quick else (20 if batch == 1 else 5)
            ours, ours_cpu = _time(lambda v=verts, f=faces: rasterize(v, f, size, backend="zbuffer"), reps)
            # pytorch3d: cost per frame is independent of the batch; bound the frames measured at 10k faces.
            p3d_frames = batch if faces.shape[0] < 5000 else min(batch, 2)
            p3d_reps = 1 if (args.quick or faces.shape[0] >= 5000) else 2
            vp = verts[:p3d_frames]
            p3d, _ = _time(lambda v=vp, f=faces: rasterize(v, f, size, backend="pytorch3d"), p3d_reps)
            cover = (rasterize(verts[:1], faces, size, backend="zbuffer").pix_to_face >= 0).float().mean().item()
            ours, ours_cpu, p3d = ours / batch, ours_cpu / batch, p3d / p3d_frames
            rows.append((faces.shape[0], batch, ours * 1e3, ours_cpu * 1e3, p3d * 1e3, p3d / ours, p3d_frames, cover))

    print(f"CPU rasterization to full Fragments, {size}x{size}, torch threads = {args.threads}, ms per frame")
    print("(best of several runs; 'cpu' = process CPU time, less sensitive to other load on a shared machine)")
    print(
        f"{'faces':>6} {'batch':>5} {'ours ms':>8} {'ours cpu':>8} {'p3d ms':>8} {'speed-up':>8} "
        f"{'p3d frames':>10} {'coverage':>8}"
    )
    for nf, b, o, oc, p, r, pf, cov in rows:
        print(f"{nf:>6} {b:>5} {o:>8.2f} {oc:>8.2f} {p:>8.1f} {r:>7.0f}x {pf:>10} {cov:>8.2f}")


if __name__ == "__main__":
    main()

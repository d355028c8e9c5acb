"""Parameter counts and forward FLOPs per frame of the AVFace networks, for the paper and tiny configs.

    python benchmarks/bench_models.py [--window 16] [--lip-vertices 280] [--markdown]

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (1 multiply-add = 2 FLOPs; convolutions,
matmuls, attention; element-wise ops are not counted) on the *meta* device, so nothing is computed and the
paper config costs no CPU time. Sequence modules run on one window of ``--window`` frames and the count is
divided by the window; the fine stage runs one UV map per frame. ``--lip-vertices`` is the lip region size (the
starter model has 280; FLAME's lip region is of the same order).
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from avface.models import AVFaceConfig, CoarseEncoder, DetailUNet, ExpressionJawEncoder, LipRefiner


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def measure(cfg: AVFaceConfig, window: int, lip_vertices: int) -> dict[str, tuple[int, float]]:
    """{module: (parameters, forward FLOPs per frame)}."""
    dev = torch.device("meta")
    s, u, t = cfg.image_size, cfg.detail.uv_size, window
    with dev:
        mods = {
            "coarse E_c": CoarseEncoder(cfg.coarse),
            "expression-jaw (E_a+E_v+transf.)": ExpressionJawEncoder(cfg.expression, cfg.audio_dim,
                                                                     cfg.audio_window),
            "lip refiner (SIREN+FiLM)": LipRefiner(cfg.lip, lip_vertices, cfg.audio_dim, cfg.audio_window),
            "detail UNet-ResNet": DetailUNet(cfg.detail, cfg.audio_dim, cfg.audio_window),
        }
        images = torch.empty(1, t, 3, s, s)
        audio = torch.empty(1, t, cfg.audio_window, cfg.audio_dim)
        lips = torch.empty(1, t, lip_vertices, 3)
        uv_in = torch.empty(1, cfg.detail.in_channels, u, u)
        a1 = torch.empty(1, cfg.audio_window, cfg.audio_dim)
    for m in mods.values():
        m.eval()
    calls = {
        "coarse E_c": (lambda: mods["coarse E_c"](images), t),
        "expression-jaw (E_a+E_v+transf.)": (lambda: mods["expression-jaw (E_a+E_v+transf.)"](images, audio), t),
        "lip refiner (SIREN+FiLM)": (lambda: mods["lip refiner (SIREN+FiLM)"](lips, audio), t),
        "detail UNet-ResNet": (lambda: mods["detail UNet-ResNet"](uv_in, a1), 1),
    }
    res = {}
    with torch.no_grad():
        for name, (fn, frames) in calls.items():
            params = sum(p.numel() for p in mods[name].parameters())
            res[name] = (params, _flops(fn) / frames)
    res["total"] = (sum(v[0] for v in res.values()), sum(v[1] for v in res.values()))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--lip-vertices", type=int, default=280)
    args = ap.parse_args()
    paper = measure(AVFaceConfig.paper(), args.window, args.lip_vertices)
    tiny = measure(AVFaceConfig.tiny(), args.window, args.lip_vertices)
    print(f"AVFace networks: parameters and forward FLOPs per frame (window {args.window}, "
          f"{args.lip_vertices} lip vertices; paper 224x224 / UV 256, tiny 64x64 / UV 64)")
    hdr = f"| {'module':34s} | {'paper params':>13s} | {'paper GFLOP/fr':>14s} | {'tiny params':>11s} | " \
          f"{'tiny MFLOP/fr':>13s} | {'params ratio':>12s} | {'FLOP ratio':>10s} |"
    print(hdr)
    print("|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|")
    for name in paper:
        pp, pf = paper[name]
        tp, tf = tiny[name]
        print(f"| {name:34s} | {pp:13,d} | {pf / 1e9:14.3f} | {tp:11,d} | {tf / 1e6:13.2f} | "
              f"{pp / tp:12.1f} | {pf / tf:10.0f} |")


if __name__ == "__main__":
    main()

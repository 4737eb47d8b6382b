"""Ad hoc probe (eleventh session, reverted after its run): lama.kernels.ReflectConvSum.padded (the
experiment's kernels, with and without their padded output) against its gather kernel, each layer
alone at the 320×240 and 160×120 bottlenecks, graph replays.

    python tools/padded_layers.py
"""
import os, sys, torch
sys.path.insert(0, os.getcwd()); sys.path.insert(0, os.path.join(os.getcwd(), "tools"))
from padded_probe import graph_us
from lama import kernels
half = dict(device="cuda", dtype=torch.float16)
with torch.inference_mode():
    for width, height in ((320, 240), (160, 120)):
        torch.manual_seed(0)
        x_l = torch.randn(1, height, width, 128, **half); x_g = torch.randn(1, height, width, 384, **half)
        four = torch.randn(1, height, width, 192, **half)
        res_l = torch.randn(1, height, width, 128, **half); res_g = torch.randn(1, height, width, 384, **half)
        w_l2l = torch.randn(128, 128, 3, 3, **half) / 30; w_g2l = torch.randn(128, 384, 3, 3, **half) / 30
        w_l2g = torch.randn(384, 128, 3, 3, **half) / 30; w_2 = torch.randn(384, 192, 1, 1, **half) / 15
        b_l = torch.randn(128, **half); b_g = torch.randn(384, **half)
        local = kernels.ReflectConvSum([w_l2l, w_g2l], b_l, True, kernels.LOCAL_LARGE_TILE)
        glob = kernels.ReflectConvSum([w_l2g, w_2], b_g, True, kernels.GLOBAL_LARGE_TILE)
        P = kernels.reflect_pad(torch.cat([x_l, x_g], 3), 1)
        nxt = torch.empty_like(P)
        r = {}
        r["gather local"] = graph_us(lambda: local([x_l, x_g], res_l))
        r["gather global"] = graph_us(lambda: glob([x_l, four], res_g))
        r["padded local, out + padded_out"] = graph_us(lambda: local.padded(P, residual=res_l, padded_out=nxt[..., :128]))
        r["padded local, padded_out only"] = graph_us(lambda: local.padded(P, padded_out=nxt[..., :128], output=False))
        r["padded local, out only"] = graph_us(lambda: local.padded(P, residual=res_l))
        r["padded global, out + padded_out"] = graph_us(lambda: glob.padded(P, four, residual=res_g, padded_out=nxt[..., 128:]))
        r["padded global, out only"] = graph_us(lambda: glob.padded(P, four, residual=res_g))
        r["fill_border 512"] = graph_us(lambda: kernels.fill_border(nxt))
        r["cat + reflect_pad 512"] = graph_us(lambda: kernels.reflect_pad(torch.cat([x_l, x_g], 3), 1))
        print(f"{width}x{height}: " + ", ".join(f"{k} {v:.1f} us" for k, v in r.items()), flush=True)

"""Ad hoc probe (eleventh session, reverted after its run): the residual layers' 3x3 convolutions on reflect-padded 512-channel maps
through TMA descriptors (WS=1: with Triton's warp specialisation), against lama.kernels.ReflectConvSum.

    WS=0 python tools/padded_probe.py; WS=1 python tools/padded_probe.py
"""
import json, os, sys, time
import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor
sys.path.insert(0, os.getcwd())
from lama import kernels

def cuda_median_ms(fn, runs=30):
    times = []
    for _ in range(runs):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record(); e.synchronize(); times.append(s.elapsed_time(e))
    times.sort(); return times[len(times) // 2]

def graph_us(run, repeats=20):
    stream = torch.cuda.Stream(); stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2): run()
    torch.cuda.current_stream().wait_stream(stream)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(repeats): run()
    return 1000 * cuda_median_ms(g.replay) / repeats

@triton.jit(do_not_specialize=["rows", "height", "width"])
def padded_conv(src, matrix, bias, residual, dst, rows, height, width, out_channels,
                CIN: tl.constexpr, RELU: tl.constexpr, RESIDUAL: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, WS: tl.constexpr, STAGES: tl.constexpr):
    n0 = tl.program_id(0) * BLOCK_N
    q0 = tl.program_id(1) * BLOCK_M
    pw = width + 2
    chunks: tl.constexpr = CIN // BLOCK_K
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for step in tl.range(0, 9 * chunks, num_stages=STAGES, warp_specialize=WS):
        tap = step // chunks
        channel = (step % chunks) * BLOCK_K
        a = src.load([q0 + (tap // 3) * pw + tap % 3, channel])
        b = matrix.load([tap * CIN + channel, n0])
        acc = tl.dot(a, b, acc)
    q = q0 + tl.arange(0, BLOCK_M)
    per_image = (height + 2) * pw
    y, x = (q % per_image) // pw, q % pw
    keep_m = (q < rows) & (y < height) & (x < width)
    m = (((q // per_image) * height + y) * width + x).to(tl.int64)
    n = n0 + tl.arange(0, BLOCK_N)
    keep_n = n < out_channels
    acc += tl.load(bias + n, mask=keep_n, other=0.0).to(tl.float32)[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0)
    target = m[:, None] * out_channels + n[None, :]
    keep = keep_m[:, None] & keep_n[None, :]
    if RESIDUAL:
        acc += tl.load(residual + target, mask=keep).to(tl.float32)
    tl.store(dst + target, acc.to(dst.dtype.element_ty), mask=keep)

def run_padded(xp_flat, cin, matrix, bias, residual, out, height, width, tile, ws):
    bm, bn, warps, stages = tile
    bk = 64
    src = TensorDescriptor(xp_flat, list(xp_flat.shape), list(xp_flat.stride()), [bm, bk])
    mat = TensorDescriptor.from_tensor(matrix, [bk, bn])
    rows = xp_flat.shape[0]
    cout = matrix.shape[1]
    grid = (triton.cdiv(cout, bn), triton.cdiv(rows, bm))
    padded_conv[grid](src, mat, bias, residual, out, rows, height, width, cout, CIN=cin, RELU=True, RESIDUAL=True,
                      BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, WS=ws, STAGES=stages, num_warps=warps, num_stages=stages)

def rel(a, b):
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())

TILES = [(128, 128, 4, 3), (128, 128, 8, 3), (128, 128, 4, 4), (64, 128, 4, 4), (128, 256, 8, 3)]

def main():
    out_path = os.environ.get("OUT", ".")
    print("triton", triton.__version__, torch.cuda.get_device_name(), flush=True)
    half = dict(device="cuda", dtype=torch.float16)
    results = []
    for width, height in ((320, 240),):
        torch.manual_seed(0)
        x = torch.randn(1, height, width, 512, **half)  # local 128 | global 384
        x_l, x_g = x[..., :128].contiguous(), x[..., 128:].contiguous()
        four = torch.randn(1, height, width, 192, **half)
        res_l = torch.randn(1, height, width, 128, **half); res_g = torch.randn(1, height, width, 384, **half)
        w_l2l = torch.randn(128, 128, 3, 3, **half) / 30; w_g2l = torch.randn(128, 384, 3, 3, **half) / 30
        w_l2g = torch.randn(384, 128, 3, 3, **half) / 30; w_2 = torch.randn(384, 192, 1, 1, **half) / 15
        b_l = torch.randn(128, **half); b_g = torch.randn(384, **half)
        prod_local = kernels.ReflectConvSum([w_l2l, w_g2l], b_l, True, kernels.LOCAL_LARGE_TILE)
        prod_global = kernels.ReflectConvSum([w_l2g, w_2], b_g, True, kernels.GLOBAL_LARGE_TILE)
        prod_l2g = kernels.ReflectConvSum([w_l2g], b_g, True, kernels.GLOBAL_LARGE_TILE)
        row = {"bottleneck": f"{width}x{height}"}
        want_local = prod_local([x_l, x_g], res_l)
        want_l2g = prod_l2g([x_l], res_g)
        row["gather_local_us"] = graph_us(lambda: prod_local([x_l, x_g], res_l))
        row["gather_global_us"] = graph_us(lambda: prod_global([x_l, four], res_g))
        row["gather_l2g_only_us"] = graph_us(lambda: prod_l2g([x_l], res_g))
        xp = kernels.reflect_pad(x, 1)
        row["reflect_pad_512_us"] = graph_us(lambda: kernels.reflect_pad(x, 1))
        xp_flat = xp.view(-1, 512)
        m_local = torch.cat([w_l2l, w_g2l], 1).permute(2, 3, 1, 0).reshape(-1, 128).contiguous()
        m_l2g = w_l2g.permute(2, 3, 1, 0).reshape(-1, 384).contiguous()
        out_l = torch.empty_like(res_l); out_g = torch.empty_like(res_g)
        x_lp = xp[..., :128]  # a view: channels 0..127 of the 512-wide padded map
        xlp_flat = xp_flat[:, :128]
        for ws in (os.environ.get('WS') == '1',):
            for tile in TILES:
                name = f"{tile[0]}x{tile[1]}w{tile[2]}s{tile[3]}{'_ws' if ws else ''}"
                for layer, args, want in (("local", (xp_flat, 512, m_local, b_l, res_l, out_l), want_local),
                                          ("l2g", (xlp_flat, 128, m_l2g, b_g, res_g, out_g), want_l2g)):
                    if tile[1] > args[2].shape[1]:
                        continue
                    run = lambda: run_padded(*args, height, width, tile, ws)
                    print(f"compiling {layer} {name}", flush=True)
                    try:
                        t0 = time.perf_counter(); run(); torch.cuda.synchronize()
                        compile_s = time.perf_counter() - t0
                        err = rel(args[5], want)
                        us = graph_us(run)
                        row[f"{layer}_{name}_us"] = round(us, 1); row[f"{layer}_{name}_err"] = err
                        print(f"{width}x{height} {layer} {name}: {us:.1f} us err {err:.2e} (first call {compile_s:.1f} s)", flush=True)
                    except Exception as error:
                        row[f"{layer}_{name}_failed"] = f"{type(error).__name__}: {error}"[:400]
                        print(f"{width}x{height} {layer} {name}: FAILED {type(error).__name__}: {str(error)[:300]}", flush=True)
        print(json.dumps({k: v for k, v in row.items() if "gather" in k or "pad" in k}), flush=True)
        results.append(row)
    with open(os.path.join(out_path, f"ws{os.environ.get('WS')}.json"), "w") as f:
        json.dump(results, f, indent=1)

if __name__ == "__main__":
    with torch.inference_mode():
        main()

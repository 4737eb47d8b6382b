"""Exploration on the GPU box: which fast-path variant wins, and where the time goes.

Not a benchmark of record (that is `python -m lama bench --compare-reference`): this times
candidate variants of the generator side by side in one process, profiles the largest size
kernel by kernel and times the CPU codecs, so that one device call answers several questions.

    python tools/gpu_explore.py --out DIR              # variants, profiles, codecs
    python tools/gpu_explore.py --kernels --out DIR    # the stem's and head's 7x7 kernels
    python tools/gpu_explore.py --conv-sum --out DIR   # the residual layers' kernel against cuDNN
    python tools/gpu_explore.py --timeline --out DIR   # a graph replay, per stream and kernel
    python tools/gpu_explore.py --tiles --out DIR      # the residual layers' kernel: tiles per bottleneck size
    python tools/gpu_explore.py --padded --out DIR     # the residual stage on padded maps: from which size, which tiles
    python tools/gpu_explore.py --repair-steps --out DIR  # one repair's model run, step by step, against the model
    python tools/gpu_explore.py --conv-sum-runs 320x240 --out DIR  # that kernel alone, for a profiler (gpu_soak.sh ncu)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from functools import partial

import torch
import torch.nn.functional as F

from lama import fastpath, imageio, kernels, masks
from lama.bench import codec_timings, strict_fp32
from lama.engine import InpaintEngine
from lama.fastnet import PADDED_MAP_PIXELS, FastGenerator
from lama.reference import composite, to_host, to_uint8
from lama.synthetic import synthetic_case

SIZES = ((640, 480), (1280, 960), (2560, 1920))
LOAD_MASK_COVERAGE = 0.08  # the load benchmark's


def cuda_median_ms(run, runs: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        run()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def peak_bytes(run) -> int:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    run()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(out.float() - ref) / torch.linalg.vector_norm(ref))


def profile_table(run, rows: int = 25) -> str:
    from torch.profiler import ProfilerActivity, profile
    run()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=70)


def graph_timeline(run) -> dict:
    """Where a CUDA-graph replay's time goes: the kernels' busy time per stream, the time no
    stream was busy, and the kernels by total time (from the profiler's Chrome trace)."""
    from torch.profiler import ProfilerActivity, profile
    for _ in range(3):
        run()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    with tempfile.NamedTemporaryFile(suffix=".json") as trace:
        prof.export_chrome_trace(trace.name)
        with open(trace.name) as f:
            events = json.load(f)["traceEvents"]
    kernels = sorted((e for e in events if e.get("cat") == "kernel"), key=lambda e: e["ts"])
    start, end = kernels[0]["ts"], max(e["ts"] + e["dur"] for e in kernels)
    streams: dict[str, list[float]] = {}
    names: dict[str, list[float]] = {}
    busy_until, idle = start, 0.0
    for e in kernels:
        streams.setdefault(str(e["args"].get("stream")), []).append(e["dur"])
        names.setdefault(e["name"][:90], []).append(e["dur"])
        idle += max(0.0, e["ts"] - busy_until)
        busy_until = max(busy_until, e["ts"] + e["dur"])
    return {
        "span_us": end - start, "idle_us": idle, "kernels": len(kernels),
        "streams": {s: {"kernels": len(d), "busy_us": sum(d)} for s, d in streams.items()},
        "by_name": sorted(({"name": n, "calls": len(d), "total_us": sum(d), "median_us": statistics.median(d)}
                           for n, d in names.items()), key=lambda r: -r["total_us"]),
    }


def kernel_times() -> list[dict]:
    """The stem's and the head's 7x7 convolution: cuDNN (input channels padded to 8 / output
    channels to 8, as the fast path had them) against lama.kernels.ReflectConv, each with
    the passes around it, for every tile (runs x rows x run length) and warp count tried."""
    torch.manual_seed(0)
    rows = []
    for width, height in SIZES[1:]:
        for name, cin, cout, act in (("stem", 4, 64, "relu"), ("head", 64, 3, "sigmoid")):
            weight = torch.randn(cout, cin, 7, 7, device="cuda", dtype=torch.float16) / 50
            bias = torch.randn(cout, device="cuda", dtype=torch.float16)
            x = torch.randn(1, cin, height, width, device="cuda", dtype=torch.float16)
            if name == "head":
                x = x.contiguous(memory_format=torch.channels_last)
            nhwc = x.permute(0, 2, 3, 1)
            cin8, cout8 = -(-cin // 8) * 8, -(-cout // 8) * 8
            padded_weight = torch.zeros(cout8, cin8, 7, 7, device="cuda", dtype=torch.float16)
            padded_weight[:cout, :cin] = weight
            padded_weight = padded_weight.contiguous(memory_format=torch.channels_last)
            padded_bias = F.pad(bias, (0, cout8 - cout))

            def cudnn() -> torch.Tensor:
                source = F.pad(nhwc, (0, cin8 - cin)) if cin8 != cin else nhwc
                padded = kernels.reflect_pad(source, 3, relu=name == "head")
                out = F.conv2d(padded.permute(0, 3, 1, 2), padded_weight, padded_bias)
                out = out.permute(0, 2, 3, 1)[..., :cout]
                return out.relu() if act == "relu" else torch.sigmoid(out)

            conv = kernels.ReflectConv(weight, bias, act)
            want = cudnn().float()
            row = {"size": f"{width}x{height}", "conv": name, "cudnn_ms": cuda_median_ms(cudnn)}
            # (output rows, runs of adjacent output columns) a program computes
            shapes = ((1, 1), (2, 1)) if name == "stem" else (
                (4, 1), (8, 1), (16, 1), (4, 2), (2, 4), (4, 4), (8, 2), (2, 8), (4, 8), (8, 4))
            for block_m in (64, 128):
                for warps in (4, 8):
                    for out_rows, out_columns in shapes:
                        conv.tune(block_m, warps, out_rows, out_columns)
                        run = lambda: conv(nhwc, relu_input=name == "head")  # noqa: E731
                        tile = f"{block_m}x{out_rows}x{out_columns}_w{warps}"
                        row[f"triton_{tile}_ms"] = cuda_median_ms(run)
                        row[f"triton_{tile}_err"] = rel_error(run(), want)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def graph_us(run, repeats: int = 20) -> float:
    """Microseconds per call of `run`, from replays of a graph of `repeats` calls (no launch gaps)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            run()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(repeats):
            run()
    return 1000 * cuda_median_ms(graph.replay, runs=30) / repeats


# big-lama's bottleneck sizes (width, height) at 640×480, 1280×960 and 2560×1920 inputs.
BOTTLENECKS = ((80, 60), (160, 120), (320, 240))


def _residual_layer(width: int, height: int) -> dict[str, torch.Tensor]:
    """A residual block's layer at a bottleneck size, random, fp16 on the GPU: its maps (local and
    global inputs, the Fourier unit's sum, the two residuals) and its weights and biases."""
    half = dict(device="cuda", dtype=torch.float16)
    maps = {"x_l": 128, "x_g": 384, "fourier_sum": 192, "res_l": 128, "res_g": 384}
    layer = {name: torch.randn(1, height, width, channels, **half) for name, channels in maps.items()}
    layer.update(w_l2l=torch.randn(128, 128, 3, 3, **half) / 30, w_g2l=torch.randn(128, 384, 3, 3, **half) / 30,
                 w_l2g=torch.randn(384, 128, 3, 3, **half) / 30, w_2=torch.randn(384, 192, 1, 1, **half) / 15,
                 b_l=torch.randn(128, **half), b_g=torch.randn(384, **half))
    return layer


def conv_sum_runs(width: int, height: int, runs: int = 2) -> None:
    """A residual block's two layers at one bottleneck size, as the fast path runs them in fp16
    (lama.kernels.ReflectConvSum with its tiles for that size), `runs` times each in turn, the
    local output's layer first: launches for a profiler to pick (tools/gpu_soak.sh ncu). The first
    run compiles."""
    torch.manual_seed(0)
    layer = _residual_layer(width, height)
    local = kernels.ReflectConvSum([layer["w_l2l"], layer["w_g2l"]], layer["b_l"], True, kernels.LOCAL_LARGE_TILE)
    global_ = kernels.ReflectConvSum([layer["w_l2g"], layer["w_2"]], layer["b_g"], True, kernels.GLOBAL_LARGE_TILE)
    for _ in range(runs):
        local([layer["x_l"], layer["x_g"]], layer["res_l"])
        global_([layer["x_l"], layer["fourier_sum"]], layer["res_g"])
    torch.cuda.synchronize()
    print(f"ReflectConvSum at {width}×{height}: {runs} runs of the local and the global layer "
          f"(tiles {local.tile(width * height, torch.float16)} and {global_.tile(width * height, torch.float16)})")


def conv_sum_times() -> list[dict]:
    """A residual-block layer's two outputs at big-lama's bottleneck sizes: cuDNN with the
    passes around it (reflect pads, the fused conv + add + ReLU, the spectral branch's 1x1
    product, the residual adds) against lama.kernels.ReflectConvSum, for two tiles."""
    torch.manual_seed(0)
    rows = []
    for width, height in BOTTLENECKS:
        layer = _residual_layer(width, height)
        x_l, x_g, fourier_sum, res_l, res_g = (layer[k] for k in ("x_l", "x_g", "fourier_sum", "res_l", "res_g"))
        w_l2l, w_g2l, w_l2g, w_2 = (layer[k] for k in ("w_l2l", "w_g2l", "w_l2g", "w_2"))
        b_l, b_g = layer["b_l"], layer["b_g"]
        cl = [w.contiguous(memory_format=torch.channels_last) for w in (w_l2l, w_g2l, w_l2g)]

        def nchw(t: torch.Tensor) -> torch.Tensor:
            return t.permute(0, 3, 1, 2)

        def cudnn_local() -> torch.Tensor:
            from_global = F.conv2d(nchw(kernels.reflect_pad(x_g, 1)), cl[1])
            out = torch.cudnn_convolution_add_relu(nchw(kernels.reflect_pad(x_l, 1)), cl[0], from_global, 1.0, b_l,
                                                   (1, 1), (0, 0), (1, 1), 1)
            return out.permute(0, 2, 3, 1).add_(res_l)

        def cudnn_global() -> torch.Tensor:
            spectral = F.linear(fourier_sum, w_2[:, :, 0, 0]).permute(0, 3, 1, 2)
            out = torch.cudnn_convolution_add_relu(nchw(kernels.reflect_pad(x_l, 1)), cl[2], spectral, 1.0, b_g,
                                                   (1, 1), (0, 0), (1, 1), 1)
            return out.permute(0, 2, 3, 1).add_(res_g)

        local = kernels.ReflectConvSum([w_l2l, w_g2l], b_l, True)
        global_ = kernels.ReflectConvSum([w_l2g, w_2], b_g, True)
        row = {"bottleneck": f"{width}x{height}", "cudnn_local_us": graph_us(cudnn_local),
               "cudnn_global_us": graph_us(cudnn_global)}
        for tile in ((64, 128, 4, 3), (128, 128, 8, 4)):
            local.tune(*tile)
            global_.tune(*tile)
            name = "x".join(map(str, tile))
            row[f"triton_local_{name}_us"] = graph_us(lambda: local([x_l, x_g], res_l))
            row[f"triton_global_{name}_us"] = graph_us(lambda: global_([x_l, fourier_sum], res_g))
            row[f"triton_local_{name}_err"] = rel_error(local([x_l, x_g], res_l), cudnn_local().float())
            row[f"triton_global_{name}_err"] = rel_error(global_([x_l, fourier_sum], res_g), cudnn_global().float())
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


# Tiles of ReflectConvSum tried by --tiles: (block_m, block_n, num_warps, num_stages). Each
# fits Hopper's shared memory at block_k 64; one that does not compile is reported as such.
CANDIDATE_TILES = ((64, 128, 4, 3), (64, 128, 4, 4), (64, 64, 4, 4), (128, 64, 4, 4), (128, 128, 4, 3),
             (128, 128, 8, 3), (128, 128, 8, 4), (128, 128, 8, 5), (128, 256, 8, 3), (256, 128, 8, 3),
             (64, 256, 8, 3))


def _tile_name(tile: tuple[int, ...]) -> str:
    return "x".join(map(str, tile))


def _set_tiles(fast: FastGenerator, local: tuple[int, ...], global_: tuple[int, ...]) -> None:
    for layer in (layer for pair in fast.blocks for layer in pair if layer.fused):
        layer.local_conv.tune(*local)
        layer.global_conv.tune(*global_)


def _graphed_forward_ms(fast: FastGenerator, net_input: torch.Tensor) -> float:
    """The forward's median replay time in a graph captured for the tiles set now."""
    ms = cuda_median_ms(partial(fastpath.GraphRunner(fast, max_graphs=1, max_pixels=10**9), net_input), runs=30)
    torch.cuda.empty_cache()  # the runner, and its graph's pool, are gone with the partial
    return ms


def tile_sweep() -> dict:
    """Which ReflectConvSum tile is fastest at each of big-lama's bottleneck sizes, for the
    local and the global output alone (a graph of 20 calls, random maps), and what the best
    pair makes of the whole forward (a graph replay, as the service runs it) at the input size
    of that bottleneck, against lama.kernels.SUM_TILE on every layer (the tile of every size
    before the sweep)."""
    torch.manual_seed(0)
    default = kernels.SUM_TILE
    kernels_by_size, best = [], {}
    for width, height in BOTTLENECKS:
        layer = _residual_layer(width, height)
        local = kernels.ReflectConvSum([layer["w_l2l"], layer["w_g2l"]], layer["b_l"], True)
        global_ = kernels.ReflectConvSum([layer["w_l2g"], layer["w_2"]], layer["b_g"], True)
        runs = {"local": (local, lambda: local([layer["x_l"], layer["x_g"]], layer["res_l"])),
                "global": (global_, lambda: global_([layer["x_l"], layer["fourier_sum"]], layer["res_g"]))}
        row: dict = {"bottleneck": f"{width}x{height}"}
        for branch, (conv, run) in runs.items():
            conv.tune(*default)
            want = run().float()
            times = {}
            for tile in CANDIDATE_TILES:
                conv.tune(*tile)
                try:
                    times[tile] = graph_us(run)
                    row[f"{branch}_{_tile_name(tile)}_err"] = rel_error(run(), want)
                except Exception as error:  # noqa: BLE001 - a tile the GPU cannot run is a result too
                    row[f"{branch}_{_tile_name(tile)}_failed"] = f"{type(error).__name__}: {error}"[:200]
                    continue
                row[f"{branch}_{_tile_name(tile)}_us"] = times[tile]
            best[(width, height, branch)] = min(times, key=times.get)
            row[f"{branch}_best"] = _tile_name(best[(width, height, branch)])
        kernels_by_size.append(row)
        print(json.dumps(row), flush=True)

    engine = InpaintEngine.with_random_weights(device="cuda", precision="fp16")
    fast = FastGenerator(engine.backend.generator)
    forwards = []
    for width, height in SIZES:
        bottleneck = (width // 8, height // 8)
        pairs = {"default": (default, default),
                 "best": (best[(*bottleneck, "local")], best[(*bottleneck, "global")]),
                 "best_local_only": (best[(*bottleneck, "local")], default),
                 "best_global_only": (default, best[(*bottleneck, "global")])}
        image, mask = synthetic_case(width, height)
        with torch.inference_mode():
            net_input = engine.backend.model_input(image, mask > 0)[2]
            row = {"size": f"{width}x{height}"}
            for name, (local_tile, global_tile) in pairs.items():
                _set_tiles(fast, local_tile, global_tile)
                row[f"{name}_tiles"] = f"local {_tile_name(local_tile)}, global {_tile_name(global_tile)}"
                row[f"{name}_ms"] = _graphed_forward_ms(fast, net_input)
            # The default again, last: the first and the last agree when the GPU's clocks held.
            _set_tiles(fast, default, default)
            row["default_again_ms"] = _graphed_forward_ms(fast, net_input)
        forwards.append(row)
        print(json.dumps(row), flush=True)
    return {"kernels": kernels_by_size, "forward": forwards}


# Input sizes whose bottlenecks bracket where the residual stage on padded maps starts paying:
# 80×60, 128×96, 160×120 (lama.fastnet.PADDED_MAP_PIXELS), 240×135, 200×150, 320×240.
PADDED_SIZES = ((640, 480), (1024, 768), (1280, 960), (1920, 1080), (1600, 1200), (2560, 1920))
PADDED_TILES = {"local": ((128, 128, 8, 3), (128, 128, 4, 3), (64, 128, 4, 4), (256, 128, 8, 3)),
                "global": ((128, 128, 8, 3), (128, 128, 4, 4), (256, 128, 8, 3), (64, 128, 4, 3))}


def padded_sweep() -> dict:
    """The residual stage on padded maps (FastGenerator._padded_stage) against the gather kernels,
    whole graphed forwards at each of PADDED_SIZES (gather, padded, gather again: the first and
    the last agree when the GPU's clocks held); then, at each of them whose bottleneck runs the
    padded stage (from PADDED_MAP_PIXELS on), each residual layer's padded tile
    (ReflectConvSum.padded_tile) against lama.kernels' default, one layer's tile changed at a
    time: whether a tile should depend on the map's size (the local layer's 8-warp tile was
    faster at 160×120 and slower at 240×135, docs/PROFILING.md). Where the GPU has no TMA, the
    padded stage does not run."""
    engine = InpaintEngine.with_random_weights(device="cuda", precision="fp16")
    fast = FastGenerator(engine.backend.generator)
    layers = [layer for pair in fast.blocks for layer in pair if layer.fused]
    default = {"local": kernels.LOCAL_PADDED_TILE, "global": kernels.GLOBAL_PADDED_TILE}

    def set_tiles(local: tuple[int, ...], global_: tuple[int, ...]) -> None:
        for layer in layers:
            layer.local_conv.padded_tile, layer.global_conv.padded_tile = local, global_

    def forward_ms(net_input: torch.Tensor, least_pixels: int) -> float:
        fast.padded_min_pixels = least_pixels
        fast._constants.clear()  # made again with (or without) the padded maps' DFT matrices
        return round(_graphed_forward_ms(fast, net_input), 2)

    stages, tiles = [], []
    inputs = {}
    for width, height in PADDED_SIZES:
        image, mask = synthetic_case(width, height)
        inputs[(width, height)] = net_input = engine.backend.model_input(image, mask > 0)[2]
        row = {"size": f"{width}x{height}", "bottleneck": f"{width // 8}x{height // 8}"}
        for name, least in (("gather_ms", 10**12), ("padded_ms", 0), ("gather_again_ms", 10**12)):
            row[name] = forward_ms(net_input, least)
        stages.append(row)
        print(json.dumps(row), flush=True)
    for width, height in (size for size in PADDED_SIZES if (size[0] // 8) * (size[1] // 8) >= PADDED_MAP_PIXELS):
        row = {"size": f"{width}x{height}", "default": f"local {_tile_name(default['local'])}, "
                                                      f"global {_tile_name(default['global'])}"}
        set_tiles(default["local"], default["global"])
        row["default_ms"] = forward_ms(inputs[(width, height)], 0)
        for layer_kind, candidates in PADDED_TILES.items():
            for tile in candidates:
                set_tiles(tile if layer_kind == "local" else default["local"],
                          tile if layer_kind == "global" else default["global"])
                try:
                    row[f"{layer_kind}_{_tile_name(tile)}_ms"] = forward_ms(inputs[(width, height)], 0)
                except Exception as error:  # noqa: BLE001 - a tile the GPU cannot run is a result too
                    row[f"{layer_kind}_{_tile_name(tile)}_failed"] = f"{type(error).__name__}: {error}"[:200]
        set_tiles(default["local"], default["global"])
        row["default_again_ms"] = forward_ms(inputs[(width, height)], 0)
        tiles.append(row)
        print(json.dumps(row), flush=True)
    return {"stages": stages, "tiles": tiles}


def wall_median_ms(run, runs: int = 25, pause_s: float = 0.0) -> float:
    """Wall-clock milliseconds of `run` to the GPU's end of it, as a caller waits for it;
    `pause_s`: the GPU left idle that long before each call."""
    run()
    run()
    times = []
    for _ in range(runs):
        torch.cuda.synchronize()
        time.sleep(pause_s)
        started = time.perf_counter()
        run()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


# One client's repairs come about this far apart at 2560×1920 (its round trip less the model's
# time): the GPU waits that long between them.
IDLE_BETWEEN_REPAIRS_S = 0.06


def sm_clock_mhz(pause_s: float, runs: int = 9) -> float | None:
    """The GPU's multiprocessor clock (NVML) after `pause_s` of idling, median of `runs` readings;
    None where NVML cannot be read."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
    except Exception:  # noqa: BLE001 - no NVML: the clock is simply not reported
        return None
    readings = []
    for _ in range(runs):
        torch.cuda.synchronize()
        time.sleep(pause_s)
        readings.append(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM))
    return statistics.median(readings)


def repair_steps() -> dict:
    """The load benchmark's upload at each size, prepared as the service prepares it (crop,
    dilate 4), and the backend's repair of it timed whole and step by step: what the service's
    'infer' stage adds to the model's own time inside the engine (the rest is the server's).
    The whole repair is the fast path's graph of it (lama.fastpath.DeviceRepair); the steps are
    the reference's, one by one around the network's own graph, so they add up to more.
    The whole repair is timed twice: back to back, and each after the GPU idled as long as it
    does between one client's repairs, with the multiprocessor clock NVML reads after such an
    idle and right after a repair."""
    from loadreport.load import make_upload

    engine = InpaintEngine.with_random_weights(device="cuda", precision="fp16")
    engine.warmup()
    backend = engine.backend
    steps = {}
    for width, height in SIZES:
        upload = make_upload(width, height, 0, LOAD_MASK_COVERAGE)
        image = imageio.decode_image(upload.image_jpeg)
        mask = masks.binarize(imageio.decode_mask(upload.mask_png), masks.DEFAULT_THRESHOLD)
        job = engine.prepare(image, mask, "crop", 4)
        rgb, region = job.inputs[0]
        for _ in range(2):  # a shape's second sighting captures its graph
            backend.repair(rgb, region)
        with torch.inference_mode(), backend.device.worker_stream():
            x, holes, net_input = backend.model_input(rgb, region)
            predicted = backend.run_model(net_input)

            def composited() -> torch.Tensor:
                return to_uint8(composite(x, holes, predicted, region.shape))

            result = composited()
            steps[f"{width}x{height}"] = {
                "model input": list(net_input.shape),
                "repair (the infer stage's call)": wall_median_ms(lambda: backend.repair(rgb, region)),
                f"repair after {IDLE_BETWEEN_REPAIRS_S * 1000:.0f} ms idle": wall_median_ms(
                    lambda: backend.repair(rgb, region), pause_s=IDLE_BETWEEN_REPAIRS_S),
                "SM clock right after a repair, MHz": sm_clock_mhz(0.0),
                f"SM clock after {IDLE_BETWEEN_REPAIRS_S * 1000:.0f} ms idle, MHz": sm_clock_mhz(IDLE_BETWEEN_REPAIRS_S),
                "model_input (page-locked copy, upload, padding)": wall_median_ms(
                    lambda: backend.model_input(rgb, region)),
                "run_model (the graph, the overflow check)": wall_median_ms(lambda: backend.run_model(net_input)),
                "composite to uint8": wall_median_ms(composited),
                "to the host": wall_median_ms(lambda: to_host(result)),
            }
        print(f"{width}×{height}: " + ", ".join(f"{name} {value:.2f} ms" if isinstance(value, float) else
                                                 f"{name} {value}" for name, value in steps[f'{width}x{height}'].items()),
              flush=True)
    return steps


def _save(folder: str, name: str, result: dict | list) -> None:
    with open(os.path.join(folder, name), "w") as f:
        json.dump(result, f, indent=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--kernels", action="store_true", help="only time the stem's and head's kernels")
    parser.add_argument("--conv-sum", action="store_true",
                        help="only time the residual layers' ReflectConvSum against cuDNN and its passes")
    parser.add_argument("--timeline", action="store_true",
                        help="only summarise the fast path's graph replay at each size, on two streams and on one")
    parser.add_argument("--tiles", action="store_true",
                        help="only sweep ReflectConvSum's tiles per bottleneck size, kernels alone and whole forwards")
    parser.add_argument("--padded", action="store_true",
                        help="only time the residual stage on padded maps against the gather kernels, and its tiles")
    parser.add_argument("--repair-steps", action="store_true",
                        help="only time one repair's model run step by step, at the load benchmark's upload")
    parser.add_argument("--conv-sum-runs", metavar="WxH",
                        help="only run ReflectConvSum's two layers at this bottleneck size, twice, for a profiler")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.conv_sum_runs:
        with torch.inference_mode():
            conv_sum_runs(*map(int, args.conv_sum_runs.split("x")))
        return
    if args.repair_steps:
        _save(args.out, "repair_steps.json", repair_steps())
        return
    if args.tiles:
        with torch.inference_mode():
            _save(args.out, "tiles.json", tile_sweep())
        return
    if args.padded:
        with torch.inference_mode():
            _save(args.out, "padded.json", padded_sweep())
        return
    if args.kernels:
        _save(args.out, "kernels.json", kernel_times())
        return
    if args.conv_sum:
        with torch.inference_mode(), open(os.path.join(args.out, "conv_sum.json"), "w") as f:
            json.dump(conv_sum_times(), f, indent=1)
        return
    if args.timeline:
        engine = InpaintEngine.with_random_weights(device="cuda", precision="fp16")
        folded = engine.backend.generator
        runners = {"": fastpath.GraphRunner(FastGenerator(folded), max_graphs=8, max_pixels=10**9),
                   # One stream: each kernel alone on the GPU, so that its time is its own (on two
                   # streams a kernel's time includes what the other stream takes from it).
                   "_one_stream": fastpath.GraphRunner(FastGenerator(folded, parallel_branches=False),
                                                       max_graphs=8, max_pixels=10**9)}
        timelines = {}
        with torch.inference_mode():
            for width, height in SIZES:
                image, mask = synthetic_case(width, height)
                net_input = engine.backend.model_input(image, mask > 0)[2]
                for suffix, runner in runners.items():
                    timeline = graph_timeline(lambda: runner(net_input))
                    timelines[f"{width}x{height}{suffix}"] = timeline
                    print(f"{width}×{height}{suffix}: span {timeline['span_us'] / 1000:.2f} ms, " + ", ".join(
                        f"{kernel['name'][:40]} {kernel['total_us'] / 1000:.2f} ms ×{kernel['calls']}"
                        for kernel in timeline["by_name"][:8]), flush=True)
        with open(os.path.join(args.out, "timeline.json"), "w") as f:
            json.dump(timelines, f, indent=1)
        return
    report: dict = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}

    x = torch.randn(1, 8, 9, 10, device="cuda").to(memory_format=torch.channels_last)
    report["cuda_reflect_pad_keeps_channels_last"] = F.pad(x, (1, 1, 1, 1), mode="reflect").is_contiguous(
        memory_format=torch.channels_last)

    engine = InpaintEngine.with_random_weights(device="cuda", precision="fp16")
    reference = engine.reference()
    folded = engine.backend.generator
    fast = FastGenerator(folded)
    one_stream = FastGenerator(folded, parallel_branches=False)
    variants = {
        "nchw_eager": folded,
        "fast_eager": fast,
        "fast_graph": fastpath.GraphRunner(fast, max_graphs=8, max_pixels=10**9),
        "fast_graph_one_stream": fastpath.GraphRunner(one_stream, max_graphs=8, max_pixels=10**9),
    }
    results = []
    for width, height in SIZES:
        image, mask = synthetic_case(width, height)
        with torch.inference_mode():
            net_input = engine.backend.model_input(image, mask > 0)[2]
            exact_input = reference.backend.model_input(image, mask > 0)[2]
            with strict_fp32():
                ref_out = reference.backend.run_model(exact_input)
                ref_ms = cuda_median_ms(lambda: reference.backend.run_model(exact_input))
            row = {"size": f"{width}x{height}", "fp32_eager_ms": ref_ms}
            for name, module in variants.items():
                row[f"{name}_ms"] = cuda_median_ms(lambda: module(net_input))
                row[f"{name}_peak_gib"] = peak_bytes(lambda: module(net_input)) / 2**30
                row[f"{name}_err"] = rel_error(module(net_input), ref_out)
        results.append(row)
        print(json.dumps(row), flush=True)
    report["variants"] = results

    with torch.inference_mode():
        for width, height in SIZES:
            image, mask = synthetic_case(width, height)
            net_input = engine.backend.model_input(image, mask > 0)[2]
            with open(os.path.join(args.out, f"profile_fast_eager_{width}.txt"), "w") as f:
                f.write(profile_table(lambda: fast(net_input)))

    report["codecs_2560x1920"] = codec_timings([(2560, 1920)], runs=5)[0]
    image, mask = synthetic_case(2560, 1920)
    timings: dict[str, float] = {}
    for _ in range(3):
        timings.clear()
        engine.inpaint(image, mask, strategy="original", timings=timings)
    report["engine_stages_2560x1920_ms"] = {k: v * 1000 for k, v in timings.items()}
    print(json.dumps(report["codecs_2560x1920"]), json.dumps(report["engine_stages_2560x1920_ms"]), flush=True)

    with open(os.path.join(args.out, "explore.json"), "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# On the GPU box: the real server with full-size random big-lama weights, timed from start to
# /readyz, the first request after /readyz against the steady ones, then the resource report
# (python -m loadreport) with 20 simultaneous 2560×1920 requests. Results under $1.
# With a second argument `startup-only`: start-up and first requests, no report; with `bursts`:
# then three short reports in a row, each ending in 20 simultaneous 2560×1920 requests, with
# NVML's memory used after each (does memory plateau after the first burst, or keep growing?);
# with `load`: then the load benchmark (python -m loadreport load; extra arguments go to it),
# its table in $1/load.md and everything in $1/load.json; with `ui`: the editor's server path
# through gradio_client against the REST API (tools/ui_bench.py --client gradio, then --client stream: the
# same path with its event stream read as the page reads it), in $1/ui.md; with
# `gil`: who holds the GIL under 16 clients (py-spy, tools/gil_profile.py), in $1/gil.md; with
# `profile`: where one client's 2560×1920 repairs spend the server's threads' time, in $1/profile.md.
# Two modes start servers of their own (issue 15):
# `startup` (item 6): two starts, the first with an empty kernel cache and the second with the
# kernels the first compiled, each timed to /readyz with the log's phases, then RSS and threads
# at rest (with what backs that memory: tools/rss_map.py), after a short load, and 95 s later
# (after the sweep that returns free heap pages and the pinned buffers), then the RSS each
# start-up step adds (tools/rss_steps.py);
# `pipeline` (item 3): the load benchmark against each variant of tools/pipeline_probe.py (GPU
# workers, codecs), PIPELINE_ROUNDS servers of each (default 1) taking turns (every other round in
# reverse order), one table comparing them in $1/pipeline.md, each start to /readyz in
# $1/pipeline/ready.txt;
# `readyz` (item 6): start to /readyz of each of those variants, several starts each taking
# turns (READYZ_STARTS, default 3), with the model load's phases and the server's start-up line
# (each step's seconds from the process's start), in $1/readyz.txt; with
# READYZ_COLD=1 each start with an empty kernel cache (a fresh box's first start), else with the
# kernels one start before them compiled; with READYZ_EVICT=1 each start with torch's libraries
# and the checkpoint out of the page cache (a box that has just booted: tools/evict_page_cache.py).
# `startup-profile` (item 6): after a start that fills the kernel cache, two restarts sampled by
# py-spy from their first moment to /readyz, thread by thread: every thread, running or waiting
# (--threads --idle), then the thread holding the GIL (--gil), in $1/startup-profile.md, with each
# restart's start-up line.
# `jobs`: a script's batch of jobs (python -m loadreport jobs) against those variants, by default
# base and cpu-workers-0 (the CPU workers against none), in $1/jobs.md; with JOBS_REST_S set, the
# server's RSS that many seconds after the batches too.
# `replicas` (issue 18): one replica alone, then two behind deploy/haproxy.cfg (one per GPU, or
# both on one GPU where the box has one), each measured with the load benchmark, then a burst and
# a rolling restart through the balancer: tools/replicas.py, whose table is $1/replicas.md; extra
# arguments go to it (`--device cpu --model $LAMA_FIXTURES/tiny-lama --sizes 256x192 ...` runs
# the whole procedure on a CPU). HAProxy is the box's, else the Debian packages carried in
# .devcarry/debs (tools/carry_haproxy.sh).
# `ncu` (issue 15, model time): no server; Nsight Compute's sections for the residual layers'
# kernel at 2560×1920's bottleneck (NCU_BOTTLENECK=WxH for another), in $1/ncu.txt.
# `codecs` (issue 15, item 3): no server; tools/codec_bench.py's CPU codecs against nvJPEG through
# torchvision (decode, 16 threads decoding at once, encode), in $1/codecs.md; extra arguments go to it.
# `rss` (item 6): no server; tools/rss_steps.py, the RSS and heap each start-up step adds, once per
# variant (PIPELINE_VARIANTS, default "base unfused-convs": what cuDNN's fused convolutions' plans
# hold), each in a process of its own, in $1/rss.txt.
# `variants`: nothing run; the variants that PIPELINE_VARIANTS picks, one a line with their app.py
# flags (a name that is no variant is refused, as in the modes that run them).
set -uo pipefail
out=${1:?output folder}
only=${2:-}
shift $(( $# < 2 ? $# : 2 ))
mkdir -p "$out"
if { [ "$only" = gil ] || [ "$only" = profile ] || [ "$only" = startup-profile ]; } && ! command -v py-spy >/dev/null; then
    echo "$only needs py-spy (pip install py-spy; on the GPU box, carry its wheel with the others)" >&2
    exit 1
fi
# The probe's variants (tools/pipeline_probe.py): name, then the variant and app.py flags; the
# summary compares each with base. Base with other numbers of workers, then every variant the probe
# has (`pipeline_probe.py names`). PIPELINE_VARIANTS picks some by name, in its order (e.g.
# "workers-4 base": base second); all by default, base first. A name that is none of them stops the
# call before any server starts: a misspelt variant would otherwise cost a GPU call for nothing.
variants=("base|base" "workers-1|base --gpu-workers 1" "workers-4|base --gpu-workers 4"
          "cpu-workers-0|base --cpu-workers 0" "cpu-workers-2|base --cpu-workers 2" "cpu-workers-4|base --cpu-workers 4"
          "cpu-workers-8|base --cpu-workers 8")
for name in $(python3 tools/pipeline_probe.py names); do
    [ "$name" = base ] || variants+=("$name|$name")
done
if [ "$only" = jobs ]; then  # the batch jobs' benchmark compares the CPU workers with none by default
    PIPELINE_VARIANTS=${PIPELINE_VARIANTS:-"base cpu-workers-0"}
fi
if [ "$only" = rss ]; then  # and the RSS steps the fused convolutions with the unfused ones
    PIPELINE_VARIANTS=${PIPELINE_VARIANTS:-"base unfused-convs"}
fi
if [ -n "${PIPELINE_VARIANTS:-}" ]; then
    picked=()
    for name in $PIPELINE_VARIANTS; do
        found=
        for entry in "${variants[@]}"; do
            [ "${entry%%|*}" = "$name" ] && picked+=("$entry") && found=1
        done
        if [ -z "$found" ]; then
            echo "PIPELINE_VARIANTS: no variant $name; there are: ${variants[*]%%|*}" >&2
            exit 1
        fi
    done
    variants=("${picked[@]}")
fi
if [ "$only" = rss ]; then  # rss_steps.py switches a probe variant on; it takes no app.py flags
    for entry in "${variants[@]}"; do
        if [ "${entry#*|}" != "${entry%%|*}" ]; then
            echo "rss: ${entry%%|*} is no probe variant (tools/pipeline_probe.py names)" >&2
            exit 1
        fi
    done
fi
if [ "$only" = variants ]; then  # a dry run: what PIPELINE_VARIANTS picks, before a GPU call spends time on it
    printf '%s\n' "${variants[@]}"
    exit 0
fi

# Python's modules as an install leaves them: pip compiles each package's bytecode as it installs
# it, and a start reads that. Where none was written (wheels carried with --no-compile, torch's
# image without it, PYTHONDONTWRITEBYTECODE set: the device tool's boxes), every start compiled
# torch, Gradio and the rest from source, 3 s and more of the way to /readyz (docs/BENCHMARKS.md,
# 2026-12-07): compiled here once, as start_app.sh's install has them.
# Where: the checkout's packages, what PYTHONPATH adds and the site-packages (not the standard
# library, whose tests hold files that never compile: compileall would try them at every call).
python3 -c "import os, site; print('\n'.join(d for d in ['app.py', 'lama', 'service', 'webui', 'monitor',
    'loadreport', 'tools', *os.environ.get('PYTHONPATH', '').split(':'), *site.getsitepackages()]
    if d and os.path.exists(d) and os.path.realpath(d) != os.getcwd()))" \
    | xargs python3 -m compileall -q -j 0 >/dev/null 2>&1 || true

if [ "$only" = ncu ]; then  # no weights either: the residual layers' kernel alone, under Nsight Compute
    # The second run's two launches at 2560×1920's bottleneck (the first run compiles); clocks left
    # as they are (the device tool's METHOD.md).
    ncu --clock-control none --kernel-name regex:_conv_sum_kernel --launch-skip 2 --launch-count 2 \
        --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
        --section Occupancy --section LaunchStats --section SchedulerStats --section WarpStateStats \
        --section InstructionStats \
        python3 tools/gpu_explore.py --conv-sum-runs "${NCU_BOTTLENECK:-320x240}" --out "$out" 2>&1 | tee "$out/ncu.txt"
    exit "${PIPESTATUS[0]}"
fi
if [ "$only" = codecs ]; then  # before the weights: it needs none
    python3 tools/codec_bench.py "$@" | tee "$out/codecs.md"
    exit $?
fi
python3 tools/random_weights.py models/big-lama.safetensors
if [ "$only" = rss ]; then
    for entry in "${variants[@]}"; do
        { echo "## ${entry%%|*}"; python3 tools/rss_steps.py --model models/big-lama.safetensors --variant "${entry%%|*}" 2>&1; } \
            | tee -a "$out/rss.txt"
    done
    exit 0
fi
if [ "$only" = replicas ]; then
    haproxy=$(command -v haproxy || bash tools/carry_haproxy.sh unpack /tmp/haproxy-carried) || exit 1
    python3 tools/replicas.py --model models/big-lama.safetensors --out "$out" --haproxy "$haproxy" "$@"
    exit $?
fi
url=http://127.0.0.1:7860
ready() { python3 -c "import urllib.request as u; u.urlopen('$url/readyz', timeout=2)" 2>/dev/null; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# launch LOG COMMAND...: the server in the background ($server), its output in LOG.
launch() {
    server_log=$1; shift
    started=$(now_ms)
    started_at=$(date -u +%T.%3N)  # to read the log's phases against
    "$@" >"$server_log" 2>&1 &
    server=$!
}
# await_ready [POLL_S]: until the launched server's /readyz answers ($ready_ms after its launch).
await_ready() {
    until ready; do
        kill -0 $server 2>/dev/null || { echo "server died"; tail -30 "$server_log"; exit 1; }
        sleep "${1:-0.2}"
    done
    ready_ms=$(( $(now_ms) - started ))
}
# start LOG COMMAND...: launch, then await_ready.
start() { launch "$@"; await_ready; }
stop() { kill -TERM $server; wait $server; }
# fill_kernel_cache LOG: a server started and stopped once, leaving its compiled kernels in a cache
# of the scratch folder (TRITON_CACHE_DIR, exported) for the starts after it.
fill_kernel_cache() {
    export TRITON_CACHE_DIR="$scratch/kernel-cache"
    start "$1" python3 app.py "${server_flags[@]}" --logs-dir "$scratch/logs"
    stop
}
# start_variant LOG LOGS_DIR ENTRY: start as above, the server being pipeline_probe.py's variant
# ENTRY (an entry of $variants below: name|variant and app.py flags).
start_variant() {
    local -a variant
    read -r -a variant <<<"${3#*|}"
    start "$1" python3 tools/pipeline_probe.py serve "${variant[@]}" "${server_flags[@]}" --logs-dir "$2"
}
# RSS and threads of the server now, as /proc says, and the pinned transfer buffers it holds (/metrics).
pinned() {
    python3 -c "import urllib.request as u; print(next((l.split()[1] for l in u.urlopen('$url/metrics', timeout=5)
        .read().decode().splitlines() if l.startswith('inpaint_pinned_host_bytes ')), 'unknown'))" 2>/dev/null
}
process() { echo "$(grep -E '^(VmRSS|Threads):' /proc/$server/status | tr -s ' \t' ' ' | paste -sd ' ') pinned: $(pinned) bytes"; }
server_flags=(--port 7860 --model models/big-lama.safetensors --outputs-dir /tmp/outputs)

# The kernel caches and the servers' log folders of `startup` and `readyz` (dozens of files) go to
# a scratch folder: the device tool brings back only the first few files under $OUT, which are to
# be the results.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

if [ "$only" = startup ]; then
    export TRITON_CACHE_DIR="$scratch/kernel-cache"
    for pass in cold-kernel-cache warm-kernel-cache; do
        start "$out/$pass.log" python3 app.py "${server_flags[@]}" --logs-dir "$scratch/logs-$pass"
        {
            echo "$pass: started at $started_at UTC, /readyz after $ready_ms ms"
            grep -E "loaded big-lama|threads: at most|kernels: |warm-up: |GPU memory model|warm: ready|start-up: " "$out/$pass.log" \
                | cut -c1-260
            echo "$pass: at rest after /readyz: $(process)"
            python3 tools/rss_map.py $server
        } | tee -a "$out/startup.txt"
        if [ $pass = warm-kernel-cache ]; then
            python3 tools/first_request.py $url | tee -a "$out/startup.txt"
            python3 -m loadreport load --url $url --sizes 1280x960,2560x1920 --clients 16 --settings default \
                --duration 6 --json "$out/startup-load.json" >"$out/startup-load.md"
            echo "after 16 clients at 1280×960 and 2560×1920: $(process)" | tee -a "$out/startup.txt"
            # The outputs sweep (every 60 s) returns the heap's free pages, and the pinned buffers once the
            # queue has been idle 30 s: by 90 s after the load, whenever its minute falls.
            sleep 95
            { echo "95 s later, at rest: $(process)"; python3 tools/rss_map.py $server; } | tee -a "$out/startup.txt"
        fi
        stop
    done
    # The RSS each start-up step adds, in a process of its own (what of the 1 GB the CUDA stack takes).
    python3 tools/rss_steps.py --model models/big-lama.safetensors 2>&1 | tee -a "$out/startup.txt"
    exit 0
fi

# in_turn ROUND: $order, the variants in the order round ROUND runs them: as given in odd rounds,
# reversed in even ones.
in_turn() {
    order=("${variants[@]}")
    if (( $1 % 2 == 0 )); then
        order=()
        for (( i = ${#variants[@]} - 1; i >= 0; i-- )); do order+=("${variants[i]}"); done
    fi
}

if [ "$only" = readyz ]; then
    # Start to /readyz of each variant, READYZ_STARTS times (default 3) taking turns (in_turn) so
    # that a drift of the machine falls on all alike, after one start that fills the kernel cache
    # (with READYZ_COLD, none: the cache is emptied before each start).
    mkdir -p "$out/readyz"
    export TRITON_CACHE_DIR="$scratch/kernel-cache"
    [ -n "${READYZ_COLD:-}" ] || fill_kernel_cache "$out/readyz/fill-kernel-cache.log"
    for round in $(seq "${READYZ_STARTS:-3}"); do
        in_turn "$round"
        for entry in "${order[@]}"; do
            name=${entry%%|*}
            log="$out/readyz/$name-$round.log"
            [ -n "${READYZ_COLD:-}" ] && rm -rf "$TRITON_CACHE_DIR"
            if [ -n "${READYZ_EVICT:-}" ]; then  # what the start before had read, recorded first (variant read-ahead)
                export READAHEAD_RECORD="$scratch/resident.json"
                python3 tools/evict_page_cache.py --record "$READAHEAD_RECORD" models/big-lama.safetensors \
                    | tee -a "$out/readyz.txt"
            fi
            start_variant "$log" "$scratch/logs" "$entry"
            stop
            echo "$name: /readyz after $ready_ms ms (model loaded $(grep -o 'in [0-9.]* s (file.*)' "$log");" \
                "$(grep -o 'kernel helper: .*\|kernels: .*' "$log" | cut -c1-100 | paste -sd ' ') warm-up $(grep -o 'warm-up: [0-9×]* in [0-9.]* s' "$log" \
                | sed 's/warm-up: //' | paste -sd ' '); $(grep -o 'start-up: .*' "$log")" | tee -a "$out/readyz.txt"
        done
    done
    exit 0
fi

if [ "$only" = startup-profile ]; then
    fill_kernel_cache "$scratch/fill-kernel-cache.log"
    rate=200
    for sampled in "threads --threads --idle" "gil --gil --threads"; do
        name=${sampled%% *}
        read -r -a flags <<<"${sampled#* }"
        launch "$scratch/startup-$name.log" python3 app.py "${server_flags[@]}" --logs-dir "$scratch/logs"
        py-spy record "${flags[@]}" --nonblocking --format raw -r $rate -p $server -o "$scratch/startup-$name.raw" \
            >"$scratch/py-spy-$name.log" 2>&1 &
        spy=$!
        await_ready 0.05
        kill -INT $spy; wait $spy  # py-spy writes its samples once interrupted
        stop
        {
            echo "## $name ($sampled): /readyz after $ready_ms ms; $(grep -o 'start-up: .*' "$scratch/startup-$name.log")"
            tail -2 "$scratch/py-spy-$name.log"
            python3 tools/gil_profile.py "$scratch/startup-$name.raw" --seconds "$(awk "BEGIN { print $ready_ms / 1000 }")" --rate $rate \
                --held-by "$([ $name = gil ] && echo gil || echo profile)" --top 40 --by-thread 25
        } | tee -a "$out/startup-profile.md"
    done
    exit 0
fi

if [ "$only" = jobs ]; then
    # A script's batch of jobs (python -m loadreport jobs; extra arguments go to it) against each
    # variant in turn, a server each: its table in $1/jobs/VARIANT.md, RSS and threads after it.
    mkdir -p "$out/jobs"
    for entry in "${variants[@]}"; do
        run="$out/jobs/${entry%%|*}"
        start_variant "$run.log" "$run-logs" "$entry"
        python3 -m loadreport jobs --url $url "$@" >"$run.md" 2>"$run.progress"
        echo "after the batches: $(process)" >>"$run.md"
        if [ -n "${JOBS_REST_S:-}" ]; then  # then at rest, once the outputs sweep (every 60 s) has run
            sleep "$JOBS_REST_S"
            echo "$JOBS_REST_S s later, at rest: $(process)" >>"$run.md"
        fi
        stop
        { echo "## ${entry%%|*}"; cat "$run.md"; echo; } | tee -a "$out/jobs.md"
    done
    exit 0
fi

if [ "$only" = pipeline ]; then
    # PIPELINE_ROUNDS (default 1) servers of each variant, taking turns: one server's cells can
    # differ from the next one's by more than a change does (docs/BENCHMARKS.md, eleventh run).
    # Every other round runs the variants in reverse order (in_turn), so that a machine drifting
    # through a call (the fourteenth run's first round slowed by a third) favours none of them.
    mkdir -p "$out/pipeline"
    runs=()
    for round in $(seq "${PIPELINE_ROUNDS:-1}"); do
        in_turn "$round"
        for entry in "${order[@]}"; do
            run="$out/pipeline/${entry%%|*}.$round"  # no @: the device tool brings back plain names only
            runs+=("$run.json")
            start_variant "$run.log" "$run-logs" "$entry"
            echo "pipeline: ${entry%%|*} (round $round) ready in $ready_ms ms" | tee -a "$out/pipeline/ready.txt" >&2
            python3 -m loadreport load --url $url --clients 1,16 --settings default --duration 4 \
                --json "$run.json" "$@" >"$run.md"
            process >"$run.proc"
            stop
        done
    done
    python3 tools/pipeline_probe.py summary "${runs[@]}" | tee "$out/pipeline.md"
    exit 0
fi

start "$out/app.log" python3 app.py "${server_flags[@]}" --logs-dir "$out/logs"
echo "start to /readyz: $ready_ms ms" | tee "$out/startup.txt"
python3 tools/first_request.py $url | tee -a "$out/startup.txt"
if [ "$only" = gil ] || [ "$only" = profile ]; then
    # gil: who holds the GIL with 16 clients (GIL_SIZE, default 1280x960); profile: where one
    # client's repairs spend the server's time, every thread's samples whether it holds the GIL
    # or not (PROFILE_SIZE, default 2560x1920; PROFILE_CLIENTS, default 1). py-spy samples the
    # server for 8 s inside the cell, tools/gil_profile.py sums the stacks.
    if [ "$only" = gil ]; then
        size=${GIL_SIZE:-1280x960} clients=16 sampled=(--gil)
    else
        size=${PROFILE_SIZE:-2560x1920} clients=${PROFILE_CLIENTS:-1} sampled=(--threads)
    fi
    python3 -m loadreport load --url $url --sizes "$size" --clients "$clients" --settings default --duration 14 \
        >"$out/$only-load.md" 2>"$out/$only-load.log" &
    load=$!
    if [ "$only" = gil ]; then  # the 16 clients' cell: the one client's (always run first) is over
        until grep -q "1 client:" "$out/$only-load.log" 2>/dev/null; do sleep 0.2; done
    fi
    sleep 3  # the upload made and the warm-up repairs done
    py-spy record "${sampled[@]}" --nonblocking --format raw -r 100 -d 8 -p $server -o "$out/$only.raw" \
        >"$out/py-spy.log" 2>&1
    wait $load
    python3 tools/gil_profile.py "$out/$only.raw" --seconds 8 --rate 100 --held-by "$only" | tee "$out/$only.md"
    tail -4 "$out/$only-load.md"
    stop
    exit 0
fi
if [ "$only" = startup-only ]; then stop; exit 0; fi
if [ "$only" = load ]; then
    python3 -m loadreport load --url $url --json "$out/load.json" "$@" | tee "$out/load.md"
    stop; exit 0
fi
if [ "$only" = ui ]; then
    # The editor's server path through gradio_client against POST /api/v1/inpaint (no browser here).
    python3 tools/ui_bench.py --url $url --client gradio --sizes 1280x960,4000x3000 "$@" | tee "$out/ui.md"
    # The same path as the page speaks it: the event stream read, not polled every 50 ms.
    python3 tools/ui_bench.py --url $url --client stream --sizes 1280x960,4000x3000 "$@" | tee -a "$out/ui.md"
    stop; exit 0
fi
if [ "$only" = bursts ]; then
    echo "after the first requests: NVML memory used $(nvidia-smi --query-gpu=memory.used --format=csv,noheader)" \
        | tee "$out/bursts.txt"
    for i in 1 2 3; do
        python3 -m loadreport --url $url --simultaneous 20 --out "$out/bursts/$i" \
            --stream-count 20 --stream-interval 0.2 --runs 3 >/dev/null 2>&1
        echo "after report $i: NVML memory used $(nvidia-smi --query-gpu=memory.used --format=csv,noheader)," \
            "$(grep -o '[0-9]*/20 repaired' "$out/bursts/$i/report.md")" | tee -a "$out/bursts.txt"
    done
    stop; exit 0
fi
python3 -m loadreport --url $url --simultaneous 20 --out "$out/report" \
    --stream-count 100 --stream-interval 0.3 --runs 10 2>&1 | tail -5
python3 -c "import urllib.request as u; print(u.urlopen('$url/healthz').read().decode())" \
    >"$out/healthz.json"
stop

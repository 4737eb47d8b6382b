#!/usr/bin/env bash
# Several commits measured in turns on one machine: the A/B comparisons of docs/BENCHMARKS.md, in
# one device call (a GPU machine's speed differs from the next one's, so trees are only compared
# within one run), and issue 15's figures as ratios to the commit it was filed at.
#
#   bash tools/bench_trees.sh prepare REV...                    # here, in the git checkout
#   bash tools/bench_trees.sh run [ROUNDS] [-- BENCH_ARGS]      # on the GPU box, .devcarry carried
#   bash tools/bench_trees.sh prepare-server REV...             # here
#   bash tools/bench_trees.sh load [ROUNDS] [-- LOAD_ARGS]      # on the GPU box
#
# `prepare` unpacks each REV's lama/ (git archive) into .devcarry/trees/REV/ (BENCH_TREES: another
# folder), the folder the device tool carries. `run` runs `python -m lama bench` (default arguments
# `--model random`) in this checkout and then in a copy of it with each prepared REV's lama/, in
# turn, ROUNDS times (default 2), and prints each tree's table rows under its name.
#
# `prepare-server` unpacks each REV's server (app.py, configs/, lama/, monitor/, service/, webui/)
# into .devcarry/servers/REV/ (BENCH_SERVERS: another folder). `load` writes full-size random
# weights (tools/random_weights.py), then, ROUNDS times (default 1), starts this checkout's server
# and each prepared one in turn on port 7860 (BENCH_PORT: another), prints its start to /readyz
# and runs this checkout's load benchmark (`python -m loadreport load`) against it with LOAD_ARGS
# (default: one client at the three sizes, default settings). BENCH_MODEL: another checkpoint
# (e.g. the tiny fixture, with BENCH_SERVER_FLAGS="--device cpu" on a box without a GPU).
#
# Nothing is asserted: the rows are the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
trees=${BENCH_TREES:-.devcarry/trees}
servers=${BENCH_SERVERS:-.devcarry/servers}
mode=${1:?usage: bench_trees.sh prepare REV... | run [ROUNDS] [-- BENCH_ARGS] | prepare-server REV... | load [ROUNDS] [-- LOAD_ARGS]}
shift

# unpack FOLDER PATTERN REV...: the paths of each REV's top level that PATTERN (a grep -E
# expression matching whole names) picks, into FOLDER/REV.
unpack() {
    local folder=$1 pattern=$2 rev name
    shift 2
    [ $# -gt 0 ] || { echo "$mode needs at least one revision" >&2; exit 2; }
    for rev in "$@"; do
        name=$(git rev-parse --short "$rev^{commit}")
        rm -rf "${folder:?}/$name" && mkdir -p "$folder/$name"
        mapfile -t parts < <(git ls-tree --name-only "$name" | grep -xE "$pattern")
        git archive "$name" "${parts[@]}" | tar -x -C "$folder/$name"
        echo "$folder/$name: ${parts[*]} of $name"
    done
}

# rounds_then_args DEFAULT "$@": sets $rounds (the first argument unless it is --, else DEFAULT)
# and $args (what follows --).
rounds_then_args() {
    rounds=$1
    shift
    if [ $# -gt 0 ] && [ "$1" != -- ]; then rounds=$1; shift; fi
    [ "${1:-}" = -- ] && shift
    args=("$@")
}

case "$mode" in
prepare)
    unpack "$trees" 'lama' "$@"
    ;;
prepare-server)
    # The server's own folders at that commit (later ones split webui/ into layers).
    unpack "$servers" 'app.py|configs|lama|monitor|service|webui' "$@"
    ;;
run)
    rounds_then_args 2 "$@"
    [ ${#args[@]} -gt 0 ] || args=(--model random)
    copies=$(mktemp -d)
    trap 'rm -rf "$copies"' EXIT
    names=(this)
    for tree in "$trees"/*/; do
        name=$(basename "$tree")
        [ -d "$tree/lama" ] || continue
        # The checkout without its hidden folders (the carried trees and wheels, a virtual
        # environment) and what the service writes, then that tree's engine.
        mkdir "$copies/$name"
        tar -c --exclude='./.*' --exclude=./models --exclude=./outputs --exclude=./logs --exclude=./cache . \
            | tar -x -C "$copies/$name"
        rm -rf "$copies/$name/lama" && cp -r "$tree/lama" "$copies/$name/lama"
        ln -s "$PWD/models" "$copies/$name/models" 2>/dev/null || true
        names+=("$name")
    done
    [ ${#names[@]} -gt 1 ] || { echo "no prepared trees in $trees: run 'prepare REV' in the checkout first" >&2; exit 2; }
    for round in $(seq "$rounds"); do
        for name in "${names[@]}"; do
            folder=$PWD
            [ "$name" = this ] || folder=$copies/$name
            echo "## $name (round $round)"
            (cd "$folder" && PYTHONPATH="$folder${PYTHONPATH:+:$PYTHONPATH}" python3 -m lama bench "${args[@]}" 2>&1 | grep '^|' | grep -v -- '---')
        done
    done
    ;;
load)
    rounds_then_args 1 "$@"
    [ ${#args[@]} -gt 0 ] || args=(--sizes 640x480,1280x960,2560x1920 --clients 1 --settings default --duration 4)
    names=(this)
    for tree in "$servers"/*/; do
        [ -f "$tree/app.py" ] && names+=("$(basename "$tree")")
    done
    [ ${#names[@]} -gt 1 ] || { echo "no prepared servers in $servers: run 'prepare-server REV' in the checkout first" >&2; exit 2; }
    scratch=$(mktemp -d)
    server=
    trap '[ -z "$server" ] || kill -TERM "$server" 2>/dev/null; rm -rf "$scratch"' EXIT
    model=${BENCH_MODEL:-}
    if [ -z "$model" ]; then
        model=$scratch/big-lama.safetensors
        python3 tools/random_weights.py "$model"
    fi
    model=$(realpath "$model")
    read -r -a flags <<<"${BENCH_SERVER_FLAGS:-}"
    port=${BENCH_PORT:-7860}
    url=http://127.0.0.1:$port
    for round in $(seq "$rounds"); do
        for name in "${names[@]}"; do
            folder=$PWD
            [ "$name" = this ] || folder=$(realpath "$servers/$name")
            log=$scratch/$name-$round.log
            started=$(date +%s%N)
            (cd "$folder" && PYTHONPATH="$folder${PYTHONPATH:+:$PYTHONPATH}" exec python3 app.py --port "$port" \
                --model "$model" "${flags[@]}" --outputs-dir "$scratch/outputs-$name" --logs-dir "$scratch/logs-$name") \
                >"$log" 2>&1 &
            server=$!
            until python3 -c "import urllib.request as u; u.urlopen('$url/readyz', timeout=2)" 2>/dev/null; do
                kill -0 "$server" 2>/dev/null || { echo "$name's server died:" >&2; tail -30 "$log" >&2; exit 1; }
                sleep 0.2
            done
            echo "## $name (round $round): start to /readyz $(( ($(date +%s%N) - started) / 1000000 )) ms"
            python3 -m loadreport load --url "$url" "${args[@]}" 2>/dev/null | grep '^|'
            kill -TERM "$server" && wait "$server" || true
            server=
        done
    done
    ;;
*)
    echo "unknown mode $mode: prepare, run, prepare-server or load" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# The load benchmark (this checkout's `python -m loadreport load`) against the real server of
# several commits, in turns on one machine: how far the service has come since a commit, as a ratio
# measured in one run (issue 15 asks for its H200 figures' ratios on an H100, whose baseline was
# never measured; a GPU machine's speed differs from the next one's).
#
#   bash tools/load_trees.sh prepare REV...                  # here, in the git checkout
#   bash tools/load_trees.sh run [ROUNDS] [-- LOAD_ARGS]     # on the GPU box, .devcarry carried
#
# `prepare` unpacks each REV's server (app.py, configs/, lama/, monitor/, webui/, service/) into
# .devcarry/servers/REV/ (LOAD_TREES: another folder), which the device tool carries. `run` writes
# full-size random weights (tools/random_weights.py), then, ROUNDS times (default 1), starts this
# checkout's server and each prepared one in turn on port 7860 (LOAD_TREES_PORT: another), prints
# its start to /readyz and runs the load benchmark against it with LOAD_ARGS (default: one client
# at the three sizes, default settings). LOAD_TREES_MODEL: another checkpoint (e.g. the tiny
# fixture, with LOAD_TREES_FLAGS="--device cpu" on a box without a GPU). Nothing is asserted: the
# rows are the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
trees=${LOAD_TREES:-.devcarry/servers}
mode=${1:?usage: load_trees.sh prepare REV... | run [ROUNDS] [-- LOAD_ARGS]}
shift
case "$mode" in
prepare)
    [ $# -gt 0 ] || { echo "prepare needs at least one revision" >&2; exit 2; }
    for rev in "$@"; do
        name=$(git rev-parse --short "$rev^{commit}")
        rm -rf "${trees:?}/$name" && mkdir -p "$trees/$name"
        # The server's own folders at that commit (later ones split webui/ into layers).
        mapfile -t parts < <(git ls-tree --name-only "$name" | grep -xE 'app.py|configs|lama|monitor|service|webui')
        git archive "$name" "${parts[@]}" | tar -x -C "$trees/$name"
        echo "$trees/$name: ${parts[*]} of $name"
    done
    ;;
run)
    rounds=1
    if [ $# -gt 0 ] && [ "$1" != -- ]; then rounds=$1; shift; fi
    [ "${1:-}" = -- ] && shift
    [ $# -gt 0 ] || set -- --sizes 640x480,1280x960,2560x1920 --clients 1 --settings default --duration 4
    names=(this)
    for tree in "$trees"/*/; do
        [ -f "$tree/app.py" ] && names+=("$(basename "$tree")")
    done
    [ ${#names[@]} -gt 1 ] || { echo "no prepared servers in $trees: run 'prepare REV' in the checkout first" >&2; exit 2; }
    scratch=$(mktemp -d)
    server=
    trap '[ -z "$server" ] || kill -TERM "$server" 2>/dev/null; rm -rf "$scratch"' EXIT
    model=${LOAD_TREES_MODEL:-}
    if [ -z "$model" ]; then
        model=$scratch/big-lama.safetensors
        python3 tools/random_weights.py "$model"
    fi
    model=$(realpath "$model")
    read -r -a flags <<<"${LOAD_TREES_FLAGS:-}"
    port=${LOAD_TREES_PORT:-7860}
    url=http://127.0.0.1:$port
    for round in $(seq "$rounds"); do
        for name in "${names[@]}"; do
            folder=$PWD
            [ "$name" = this ] || folder=$(realpath "$trees/$name")
            log=$scratch/$name-$round.log
            started=$(date +%s%N)
            (cd "$folder" && PYTHONPATH="$folder${PYTHONPATH:+:$PYTHONPATH}" exec python3 app.py --port "$port" --model "$model" "${flags[@]}" \
                --outputs-dir "$scratch/outputs-$name" --logs-dir "$scratch/logs-$name") >"$log" 2>&1 &
            server=$!
            until python3 -c "import urllib.request as u; u.urlopen('$url/readyz', timeout=2)" 2>/dev/null; do
                kill -0 "$server" 2>/dev/null || { echo "$name's server died:" >&2; tail -30 "$log" >&2; exit 1; }
                sleep 0.2
            done
            echo "## $name (round $round): start to /readyz $(( ($(date +%s%N) - started) / 1000000 )) ms"
            python3 -m loadreport load --url "$url" "$@" 2>/dev/null | grep '^|'
            kill -TERM "$server" && wait "$server" || true
            server=
        done
    done
    ;;
*)
    echo "unknown mode $mode: prepare or run" >&2
    exit 2
    ;;
esac

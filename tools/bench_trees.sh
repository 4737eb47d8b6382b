#!/usr/bin/env bash
# Model times of several commits' engines measured in turns on one machine: the A/B comparisons of
# docs/BENCHMARKS.md, in one device call (a GPU machine's speed differs from the next one's, so
# trees are only compared within one run).
#
#   bash tools/bench_trees.sh prepare REV...                 # here, in the git checkout
#   bash tools/bench_trees.sh run [ROUNDS] [-- BENCH_ARGS]   # on the GPU box, .devcarry carried
#
# `prepare` unpacks each REV's lama/ (git archive) into .devcarry/trees/REV/ (BENCH_TREES: another
# folder), the folder the device tool carries. `run` runs `python -m lama bench` (default arguments
# `--model random`) in this checkout and then in a copy of it with each prepared REV's lama/, in
# turn, ROUNDS times (default 2), and prints each tree's table rows under its name. Nothing is
# asserted: the rows are the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
trees=${BENCH_TREES:-.devcarry/trees}
mode=${1:?usage: bench_trees.sh prepare REV... | run [ROUNDS] [-- BENCH_ARGS]}
shift
case "$mode" in
prepare)
    [ $# -gt 0 ] || { echo "prepare needs at least one revision" >&2; exit 2; }
    for rev in "$@"; do
        name=$(git rev-parse --short "$rev^{commit}")
        rm -rf "${trees:?}/$name" && mkdir -p "$trees/$name"
        git archive "$name" lama | tar -x -C "$trees/$name"
        echo "$trees/$name: lama/ of $name"
    done
    ;;
run)
    rounds=2
    if [ $# -gt 0 ] && [ "$1" != -- ]; then rounds=$1; shift; fi
    [ "${1:-}" = -- ] && shift
    [ $# -gt 0 ] || set -- --model random
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
            (cd "$folder" && PYTHONPATH="$folder${PYTHONPATH:+:$PYTHONPATH}" python3 -m lama bench "$@" 2>&1 | grep '^|' | grep -v -- '---')
        done
    done
    ;;
*)
    echo "unknown mode $mode: prepare or run" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# What an operator runs on the GPU box (and a newcomer on any machine).
#   ./start_app.sh [APP ARGS...]   set up .venv on first run, fetch big-lama if missing, start the
#                                  service (arguments go to app.py: --port, --preset, --model, ...)
#   ./start_app.sh --test [PYTEST ARGS...]   set up the same way (with test extras) and run the tests
#   ./start_app.sh --install         set up .venv only and exit (deploy/Containerfile builds with it)
set -euo pipefail
cd "$(dirname "$0")"

VENV=${LAMA_VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=2.13.0

mode=run
if [[ "${1:-}" == "--test" || "${1:-}" == "--install" ]]; then
    mode=${1#--}
    shift
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "start_app: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
py="$VENV/bin/python"

# torch first and pinned: left to the resolver, a plain "torch" pulls the newest CUDA
# build (several GB). On a GPU box PyPI's torch==$TORCH_VERSION is the CUDA build.
if ! "$py" -c "import torch" 2>/dev/null; then
    echo "start_app: installing torch==$TORCH_VERSION"
    "$py" -m pip install --quiet "torch==$TORCH_VERSION"
fi

# The project itself, re-installed only when its dependency list changes (an install
# with the test extras also serves a plain start).
extras=$([[ $mode == test ]] && echo "[test]" || echo "")
stamp="$VENV/.lama-install-stamp"
hash="$(sha256sum pyproject.toml | cut -d' ' -f1)"
installed="$(cat "$stamp" 2>/dev/null || true)"
if [[ "$installed" != "$hash [test]" && "$installed" != "$hash $extras" ]]; then
    echo "start_app: installing the project$extras"
    "$py" -m pip install --quiet -e ".$extras"
    echo "$hash $extras" >"$stamp"
fi

if [[ $mode == install ]]; then
    # The project's own modules compiled to bytecode now, as pip compiles the dependencies: where
    # the service may not write its code (the container runs it as another user) or
    # PYTHONDONTWRITEBYTECODE is set, Python would compile those it imports at every start. All
    # of a start's Python from source costs 3-4 s of /readyz; the project's share is within the
    # noise of a restart (docs/BENCHMARKS.md).
    "$py" -m compileall -q -j 0 app.py lama service webui monitor loadreport
    exit 0
fi

if [[ $mode == test ]]; then
    # The browser tests drive Debian's Chromium (never a browser downloaded by a tool); the
    # scale-out tests put Debian's HAProxy in front of replicas (tests/live/test_haproxy.py); the
    # README's batch recipe, which a test runs, needs curl and jq.
    missing=()
    [[ -x /usr/bin/chromium ]] || missing+=(chromium)
    command -v curl >/dev/null || missing+=(curl)
    command -v jq >/dev/null || missing+=(jq)
    command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
    command -v kubectl >/dev/null || missing+=(kubectl)  # renders the Kubernetes manifests (kustomize)
    if (( ${#missing[@]} )); then
        echo "start_app: installing Debian's ${missing[*]} for the tests"
        sudo_cmd=$([[ $(id -u) -eq 0 ]] && echo "" || echo "sudo")
        $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    # Lint and the layer contracts of docs/ARCHITECTURE.md (pyproject.toml) before the tests.
    "$(dirname "$py")/ruff" check --quiet .
    "$(dirname "$py")/lint-imports" --no-cache
    # Two test processes (pytest-xdist; LAMA_TEST_WORKERS sets how many, `--test -n 0` runs the
    # tests in this one): most tests wait on servers, browsers and subprocesses, so two finish
    # sooner than one on the 2-core CI box (docs/PROFILING.md has the suite's time there).
    exec "$py" -m pytest -n "${LAMA_TEST_WORKERS:-2}" "$@"
fi

# One GPU per process unless the operator says otherwise; expandable segments keep the
# allocator from fragmenting when image sizes vary from request to request.
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
export GRADIO_ANALYTICS_ENABLED=False
# Two malloc arenas instead of one per thread: the server's threads (uvicorn, Gradio, the
# GPU worker) otherwise keep tens of MB each of freed image buffers, and RSS swings by that
# much from request to request (tests/live/test_soak.py measures the server with this setting).
export MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-2}

if ! "$py" -c "from lama.loading import find_default_model; raise SystemExit(find_default_model() is None)"; then
    echo "start_app: no big-lama weights in models/, downloading"
    "$py" -m lama download --dest models ||
        echo "start_app: WARNING: download failed; the service starts on the OpenCV fallback" \
             "(its page says so) until models/big-lama.pt exists" >&2
fi

exec "$py" app.py "$@"

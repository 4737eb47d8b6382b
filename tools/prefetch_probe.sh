# Ad hoc probe (eleventh session, reverted after its run), on the GPU box: start to /readyz with
# the libraries, the checkpoint and Python's files out of the page cache, with and without a process
# prefetching what a start read (tools/prefetch_probe.py). bash tools/prefetch_probe.sh (results in $OUT).
mkdir -p models
python3 - <<'PY'
from pathlib import Path
import torch
from lama.checkpoint import LoadedCheckpoint, save_safetensors
from lama.model import BIG_LAMA_CONFIG, FFCResNetGenerator
torch.manual_seed(0)
weights = FFCResNetGenerator(BIG_LAMA_CONFIG).eval().state_dict()
save_safetensors(LoadedCheckpoint(weights, BIG_LAMA_CONFIG, "random", Path("random"), torch.float32), "models/big-lama.safetensors")
PY
SITE=$(python3 -c "import torch,os;print(os.path.dirname(os.path.dirname(torch.__file__)))")
STD=$(python3 -c "import os;print(os.path.dirname(os.__file__))")
LIBPY=$(python3 -c "import sysconfig,os;print(os.path.join(sysconfig.get_config_var('LIBDIR'), sysconfig.get_config_var('INSTSONAME') or ''))")
echo "site $SITE std $STD libpython $LIBPY python $(readlink -f $(command -v python3))"
df -h . /tmp $SITE | tee $OUT/df.txt
export TRITON_CACHE_DIR=/tmp/kc
python3 tools/prefetch_probe_starts.py $SITE /tmp/site $STD $LIBPY $(readlink -f $(command -v python3)) $PWD/lama $PWD/webui $PWD/service $PWD/monitor $PWD/app.py $PWD/models $TRITON_CACHE_DIR 2>&1 | tee $OUT/bench.txt

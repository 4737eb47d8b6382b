"""Ad hoc: start to /readyz, cold page cache (everything under ROOTS evicted) with and without a
prefetch process reading the recorded working set; plus one restart under -X importtime."""
import os, subprocess, sys, time, urllib.request, json
here = os.path.dirname(os.path.abspath(__file__))
proto = [sys.executable, os.path.join(here, "prefetch_probe.py")]
out = os.environ["OUT"]
roots = sys.argv[1:]
url = "http://127.0.0.1:7860/readyz"
def ready():
    try:
        urllib.request.urlopen(url, timeout=1); return True
    except Exception:
        return False
def start(name, prefetch=False, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    log = open(f"{out}/{name}.log", "w")
    t = time.perf_counter()
    pf = subprocess.Popen(proto + ["prefetch", f"{out}/rec.json"], stderr=log) if prefetch else None
    p = subprocess.Popen([sys.executable, "app.py", "--port", "7860", "--model", "models/big-lama.safetensors",
                          "--outputs-dir", "/tmp/outputs", "--logs-dir", f"/tmp/logs-{name}"], stdout=log, stderr=log, env=env)
    while not ready():
        if p.poll() is not None:
            print(name, "died"); return
        time.sleep(0.02)
    ms = (time.perf_counter() - t) * 1000
    p.terminate(); p.wait()
    if pf: pf.wait()
    print(f"{name}: /readyz after {ms:.0f} ms", flush=True)
def evict():
    subprocess.run(proto + ["evict", "x", *roots], stdout=subprocess.DEVNULL); os.sync()
start("first-start-on-this-box")
start("restart-importtime", env_extra={"PYTHONPROFILEIMPORTTIME": "1"})
start("restart")
evict()
print(subprocess.run(proto + ["resident", "x", *roots], capture_output=True, text=True).stdout.strip(), "resident after eviction")
start("cold-for-record")
print(subprocess.run(proto + ["record", f"{out}/rec.json", *roots], capture_output=True, text=True).stdout.strip(), "recorded")
for i in range(3):
    evict(); start(f"cold-{i}")
    evict(); start(f"prefetch-{i}", prefetch=True)
start("restart-again")

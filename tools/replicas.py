"""One replica alone, then two behind HAProxy (deploy/haproxy.cfg as it ships), on this box:
the load benchmark against each, simultaneous large repairs through the balancer, and a rolling
restart under load. Prints one Markdown table; everything goes under --out (issue 18).

    python tools/replicas.py --model models/big-lama.safetensors --out OUT
        [--device cuda|cpu] [--sizes 640x480,1280x960,2560x1920] [--clients 1,4,16,32]
        [--duration 5] [--burst 20 --burst-size 2560x1920]
        [--restart-clients 4 --restart-size 1280x960] [--haproxy PATH]

Where the replicas run: with two or more GPUs listed by `nvidia-smi -L`, replica N on GPU N-1
(CUDA_VISIBLE_DEVICES): the scaling. With one GPU, both on it, each with --gpu-memory-fraction
SHARED_GPU_SHARE so that the two fit: the set-up's overhead, not scaling. With --device cpu,
neither: the whole procedure with the test checkpoint, to check it before a GPU run.

Out come one.md/one.json and two.md/two.json (python -m loadreport load against the replica
alone, then against the balancer), replicas.md (the table below, the burst and the restart) and
replicas-logs.tar.gz (every replica's and HAProxy's output).

The rolling restart: clients keep sending repairs through the balancer while each replica in
turn gets SIGTERM (it drains), is started again and is back in HAProxy's rotation. A client
honours a 503's Retry-After and sends the same repair again, as docs/SCALING.md asks of
clients; a repair is lost when it never got a 200.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # deploy/ is not an installed package: run as a script, find it here

from deploy.balancer import Balancer, find_haproxy, haproxy_command, haproxy_environment, replica_names  # noqa: E402
from lama.bench import source_commit  # noqa: E402  ($LAMA_COMMIT on the GPU box's copy, which has no history)
from loadreport.client import ServiceClient  # noqa: E402
from loadreport.load import MASK_COVERAGE, Cell, Upload, make_upload  # noqa: E402
from loadreport.load_summary import gpu_busy_text  # noqa: E402
from loadreport.tables import markdown_table  # noqa: E402

REPLICAS = 2
SHARED_GPU_SHARE = 0.45  # of the card, each of two replicas on one GPU: 0.9 together
START_S = 300  # to /readyz: a cold Triton kernel cache on the GPU compiles for a while
STOP_S = 60  # SIGTERM drains in-flight repairs (30 s by default), then the process exits
UP_S = 30  # for HAProxy to see a replica back: checks every 1 s, two in a row to rise
MAX_RESENDS = 5  # of one repair a restart client sends again after a 503 with Retry-After
MAX_BACKOFF_S = 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="one replica alone vs two behind HAProxy: load, burst, "
                                     "rolling restart; a Markdown table on stdout")
    parser.add_argument("--model", required=True, help="checkpoint every replica loads")
    parser.add_argument("--out", type=Path, required=True, help="folder for the results")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--sizes", default="640x480,1280x960,2560x1920", help="for the load benchmark")
    parser.add_argument("--clients", default="1,4,16,32", help="for the load benchmark")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load benchmark cell")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured repairs per size before its cells")
    parser.add_argument("--burst", type=int, default=20, help="simultaneous repairs through the balancer")
    parser.add_argument("--burst-size", default="2560x1920")
    parser.add_argument("--restart-clients", type=int, default=4, help="clients sending during the rolling restart")
    parser.add_argument("--restart-size", default="1280x960")
    parser.add_argument("--ports", default="7861,7862", help="the replicas' ports")
    parser.add_argument("--balancer", default="127.0.0.1:8080", help="where HAProxy listens")
    parser.add_argument("--stats", default="127.0.0.1:8404", help="HAProxy's stats page")
    parser.add_argument("--haproxy", default=find_haproxy(), help="the haproxy binary (default: on PATH or Debian's)")
    parser.add_argument("--work", type=Path, help="outputs, logs and caches of the replicas (default: a temporary folder)")
    args = parser.parse_args(argv)
    args.ports = [int(port) for port in args.ports.split(",")]
    if len(args.ports) != REPLICAS:
        parser.error(f"--ports needs {REPLICAS} ports")
    if not args.haproxy:
        parser.error("haproxy not found: install Debian's haproxy, or give --haproxy (tools/carry_haproxy.sh "
                     "packs it for a box without it)")
    return args


# ------------------------------------------------------------------ replicas


def gpu_count() -> int:
    """GPUs `nvidia-smi -L` lists; 0 without the tool."""
    if not shutil.which("nvidia-smi"):
        return 0
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
    return sum(line.startswith("GPU ") for line in listing.splitlines())


@dataclass
class Replica:
    name: str  # HAProxy's
    port: int
    placement: str  # where it runs, for the table's header
    command: list[str]
    env: dict[str, str]
    log_prefix: Path  # its output goes to <prefix>-start<N>.log
    process: subprocess.Popen | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start app.py and wait until its /readyz answers 200."""
        self.starts += 1
        with open(f"{self.log_prefix}-start{self.starts}.log", "wb") as log:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_S
        while not self._ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"replica {self.name} exited with {self.process.returncode} while starting "
                                   f"(its output: {self.log_prefix}-start{self.starts}.log)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica {self.name} not ready within {START_S} s")
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            return httpx.get(self.url + "/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        """SIGTERM, and wait while it drains and exits."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def make_replicas(args: argparse.Namespace, count: int, work: Path, logs: Path) -> list[Replica]:
    """`count` replicas, each with its own port, logs and UI cache, all sharing one outputs folder;
    placed on the GPUs as the module's docstring says."""
    gpus = gpu_count() if args.device == "cuda" else 0
    shared = gpus == 1 and count > 1
    env = {key: value for key, value in os.environ.items() if key not in ("LAMA_API_TOKEN", "LAMA_AUTH")}
    replicas = []
    for index, (name, port) in enumerate(zip(replica_names(count), args.ports)):
        label = f"{count}-replica{'s' if count > 1 else ''}-{name}"
        command = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port),
                   "--model", args.model, "--device", args.device, "--outputs-dir", str(work / "outputs"),
                   "--logs-dir", str(work / label / "logs"), "--ui-cache-dir", str(work / label / "cache")]
        if shared:
            command += ["--gpu-memory-fraction", str(SHARED_GPU_SHARE)]
            placement = f"GPU 0, shared ({SHARED_GPU_SHARE:g} of its memory)"
        else:
            placement = f"GPU {index}" if gpus else args.device
        gpu_env = {"CUDA_VISIBLE_DEVICES": str(0 if shared else index)} if gpus else {}
        replicas.append(Replica(name, port, placement, command, {**env, **gpu_env}, logs / label))
    return replicas


@contextmanager
def running(*replicas: Replica) -> Iterator[None]:
    with ExitStack() as stack:
        for replica in replicas:  # one after the other: start-ups at once compete for the CPU
            stack.callback(replica.stop)
            replica.start()
        yield


@contextmanager
def balancer_in_front(args: argparse.Namespace, replicas: list[Replica], logs: Path) -> Iterator[Balancer]:
    environment = {**os.environ, **haproxy_environment([f"127.0.0.1:{r.port}" for r in replicas],
                                                       args.balancer, args.stats)}
    with open(logs / "haproxy.log", "wb") as log:
        process = subprocess.Popen(haproxy_command(args.haproxy), env=environment, stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        balancer = Balancer(f"http://{args.balancer}", f"http://{args.stats}")
        for replica in replicas:
            balancer.wait_state(replica.name, "UP", UP_S)
        yield balancer
    finally:
        process.terminate()
        process.wait(10)


# ------------------------------------------------------------------ measurements


def load_benchmark(args: argparse.Namespace, url: str, label: str) -> dict[str, Any]:
    """python -m loadreport load against `url`: its table in OUT/label.md, everything in OUT/label.json."""
    json_path = args.out / f"{label}.json"
    with open(args.out / f"{label}.md", "wb") as table:
        subprocess.run([sys.executable, "-m", "loadreport", "load", "--url", url, "--sizes", args.sizes,
                        "--clients", args.clients, "--settings", "default", "--duration", str(args.duration),
                        "--warmup", str(args.warmup), "--json", str(json_path)],
                       cwd=ROOT, stdout=table, check=True)
    return json.loads(json_path.read_text())


def upload_of(size: str, seed: int) -> Upload:
    width, _, height = size.partition("x")
    return make_upload(int(width), int(height), seed, MASK_COVERAGE)


def burst(url: str, count: int, size: str) -> Counter[str]:
    """`count` clients, each sending one repair at the same moment; their answers' statuses."""
    records = Cell(url, None, upload_of(size, 0), {}, clients=count, requests=count, duration_s=3600).run()
    return Counter(str(record["status"] or "no answer") for record in records)


@dataclass
class RestartTally:
    answered: int = 0  # repairs that got a 200
    lost: Counter[str] = field(default_factory=Counter)  # repairs that never did, by their last answer
    retried_after_503: int = 0  # sends again after a 503 with Retry-After
    lock: threading.Lock = field(default_factory=threading.Lock)


def keep_sending(url: str, upload: Upload, stop: threading.Event, tally: RestartTally) -> None:
    with ServiceClient(url) as client:
        while not stop.is_set():
            for attempt in range(MAX_RESENDS + 1):
                exchange = client.inpaint(upload.image_jpeg, upload.mask_png, "image/jpeg")
                retry_after = exchange.headers.get("retry-after", "")
                if exchange.status == 503 and retry_after.isdigit() and attempt < MAX_RESENDS:
                    with tally.lock:
                        tally.retried_after_503 += 1
                    time.sleep(min(float(retry_after), MAX_BACKOFF_S))
                    continue
                with tally.lock:
                    if exchange.status == 200:
                        tally.answered += 1
                    else:
                        tally.lost[str(exchange.status or exchange.transport_error)] += 1
                break


def rolling_restart(args: argparse.Namespace, balancer: Balancer, replicas: list[Replica]) -> tuple[RestartTally, int]:
    """Each replica in turn: SIGTERM, wait for it to exit, start it again, wait until HAProxy has it
    back; clients keep sending meanwhile. The tally and the requests HAProxy re-sent."""
    tally, stop = RestartTally(), threading.Event()
    resent_before = balancer.resent()
    upload = upload_of(args.restart_size, 1)
    clients = [threading.Thread(target=keep_sending, args=(balancer.url, upload, stop, tally), daemon=True)
               for _ in range(args.restart_clients)]
    for client in clients:
        client.start()
    try:
        time.sleep(1)  # load on both before the first SIGTERM
        for replica in replicas:
            replica.stop()
            replica.start()
            balancer.wait_state(replica.name, "UP", UP_S)
        time.sleep(1)  # and on both again after the last start
    finally:
        stop.set()
        for client in clients:
            client.join()
    return tally, balancer.resent() - resent_before


# ------------------------------------------------------------------ the table


def comparison(one: dict[str, Any], two: dict[str, Any]) -> list[str]:
    header = ["size", "clients", "1 replica req/s", "2 replicas req/s", "ratio", "GPU busy, 1 replica",
              "GPU busy, 2 replicas", "failures (1 / 2)"]
    pair = {(c["width"], c["height"], c["clients"]): c["summary"] for c in two["cells"]}
    rows = []
    for cell in one["cells"]:
        solo, both = cell["summary"], pair.get((cell["width"], cell["height"], cell["clients"]))
        if both is None:
            continue  # the balancer's run was interrupted before this cell
        ratio = both["requests_per_s"] / solo["requests_per_s"] if solo["requests_per_s"] else None
        rows.append([f"{cell['width']}×{cell['height']}", str(cell["clients"]), f"{solo['requests_per_s']:.2f}",
                     f"{both['requests_per_s']:.2f}", "n/a" if ratio is None else f"{ratio:.2f}×",
                     gpu_busy_text(solo), gpu_busy_text(both),
                     f"{solo['sent'] - solo['ok']} / {both['sent'] - both['ok']}"])
    return markdown_table(header, rows)


def report(args: argparse.Namespace, single: Replica, replicas: list[Replica], one: dict[str, Any], two: dict[str, Any],
           spread: dict[str, int], bursts: Counter[str], tally: RestartTally, resent: int) -> str:
    model = one["health"].get("model") or {}
    gpu = (one["health"].get("gpu") or {}).get("name")
    date = datetime.datetime.now(datetime.timezone.utc)
    lines = [
        f"One replica alone vs two behind HAProxy (`tools/replicas.py`, deploy/haproxy.cfg), {date:%Y-%m-%d %H:%M} "
        f"UTC, commit {source_commit()}: {model.get('name')} on {model.get('device')}{f' ({gpu})' if gpu else ''}, "
        f"{model.get('precision')}. One replica on {single.placement}; two: "
        + "; ".join(f"{r.name} on {r.placement}" for r in replicas) + ".",
        "",
        f"- Load benchmark (`python -m loadreport load`, JPEG uploads, default settings, {args.duration:g} s per "
        f"cell) against the replica alone (one.md) and then against the balancer (two.md). Ratio: two over one.",
        f"- GPU busy: {two['gpu_busy_source']}.",
        "- HAProxy sent the balancer's benchmark (warm-ups and the health check included) "
        + ", ".join(f"{count} requests to {name}" for name, count in spread.items()) + ".",
        "",
        *comparison(one, two),
        "",
        f"- Burst: {args.burst} simultaneous {args.burst_size.replace('x', '×')} repairs through the balancer: "
        f"{bursts.get('200', 0)}/{args.burst} answered 200"
        + ("" if set(bursts) <= {"200"} else f" (others: {dict((k, v) for k, v in bursts.items() if k != '200')})")
        + ".",
        f"- Rolling restart under load ({args.restart_clients} client{'s' if args.restart_clients > 1 else ''} sending "
        f"{args.restart_size.replace('x', '×')} repairs through the balancer; each replica in turn SIGTERMed, "
        f"started again, back in HAProxy's rotation): {tally.answered} answered 200, "
        f"{sum(tally.lost.values())} lost{f' ({dict(tally.lost)})' if tally.lost else ''}; "
        f"{tally.retried_after_503} sent again by a client after a 503 with Retry-After, {resent} re-sent by HAProxy.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="lama-replicas-"))
    logs = work / "process-logs"
    logs.mkdir(parents=True, exist_ok=True)
    single, replicas = make_replicas(args, 1, work, logs), make_replicas(args, REPLICAS, work, logs)
    try:
        with running(*single):
            progress(f"one replica ({single[0].placement}): load benchmark")
            one = load_benchmark(args, single[0].url, "one")
        with running(*replicas), balancer_in_front(args, replicas, logs) as balancer:
            progress("two replicas behind HAProxy: load benchmark")
            before = balancer.sessions()
            two = load_benchmark(args, balancer.url, "two")
            spread = {name: count - before.get(name, 0) for name, count in balancer.sessions().items()}
            progress(f"burst of {args.burst}")
            bursts = burst(balancer.url, args.burst, args.burst_size)
            progress("rolling restart under load")
            tally, resent = rolling_restart(args, balancer, replicas)
    except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as error:
        # A replica that did not start, HAProxy that never saw one up, a benchmark that failed (its
        # own message is above): one line; every process's output is in the logs' archive.
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        with tarfile.open(args.out / "replicas-logs.tar.gz", "w:gz") as archive:
            archive.add(logs, arcname="logs")
    text = report(args, single[0], replicas, one, two, spread, bursts, tally, resent)
    (args.out / "replicas.md").write_text(text)
    print(text, end="")
    failed = bursts.get("200", 0) != args.burst or tally.lost
    return 1 if failed else 0


def progress(line: str) -> None:
    print(f"replicas: {line}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())

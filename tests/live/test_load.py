"""Load: bursts against a live `python app.py` (tiny model, CPU), as clients see them.

- a burst of 24 simultaneous 512×384 repairs all complete with 200, each with its own picture;
- beyond the configured queue capacity the answer is 503 with Retry-After, never another
  5xx or a hang (every client call has a timeout);
- first come, first served: requests that arrive one after another while the queue is busy
  complete in arrival order;
- the UI (its page and its config), /healthz and /metrics answer within a bound while the
  API is busy.

Each figure is recorded for docs/RELIABILITY.md (tests/support/reliability.py).
"""

from __future__ import annotations

import statistics
import threading
import time

import cv2
import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.liveserver import LiveServer
from support.reliability import record

BURST = 24
WIDTH, HEIGHT = 512, 384
CLIENT_TIMEOUT_S = 120  # no call may hang: a request slower than this fails the test
BURST_BOUND_S = 90  # the whole burst; about 24 × 0.4 s on two busy CPU cores
SMALL_QUEUE = 4
OVERFLOW = 16  # simultaneous requests sent at the queue of 4
REFUSAL_BOUND_S = 5.0  # a 503 must come fast, even while the CPU is saturated
UI_BOUND_S = 2.0  # the page, its config, /healthz, /metrics while the GPU queue is busy
PROBES = ("/", "/config", "/healthz", "/metrics")
FAIR_COUNT = 8
# Far more than getting a 512×384 upload to the queue takes (body, decode, thread hand-overs)
# while the long job's inference keeps both cores of a CI machine busy: at 0.25 s the first
# request was seen reaching the queue after the second, before anything was queued.
FAIR_STAGGER_S = 0.5


# ------------------------------------------------------------------ helpers


def picture(seed: int, width: int = WIDTH, height: int = HEIGHT) -> tuple[np.ndarray, np.ndarray]:
    """A distinct RGB picture per seed (coarse noise, upscaled: cheap to send) and a box mask."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4: height // 2, width // 3: 2 * width // 3] = 255
    return image, mask


def png(array: np.ndarray) -> bytes:
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".png", array)
    assert ok
    return data.tobytes()


def form(image: np.ndarray, mask: np.ndarray, **fields: str) -> dict:
    # dilate=feather=0: the pixels outside the mask must come back exactly.
    return {"files": {"image": ("photo.png", png(image), "image/png"), "mask": ("mask.png", png(mask), "image/png")},
            "data": {"dilate": "0", "feather": "0", **fields}}


def check_repaired(response: httpx.Response, image: np.ndarray, mask: np.ndarray) -> None:
    assert response.status_code == 200, response.text
    result = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert result is not None, "the body is not an image"
    result = cv2.cvtColor(result, cv2.COLOR_BGR2RGB)
    assert result.shape == image.shape
    # Its own picture, not a neighbour's.
    assert np.array_equal(result[mask == 0], image[mask == 0])


def server_timing(response: httpx.Response) -> dict[str, float]:
    """Server-Timing's stages, in seconds."""
    stages = {}
    for part in response.headers["server-timing"].split(","):
        name, _, duration = part.strip().partition(";dur=")
        stages[name] = float(duration) / 1000
    return stages


def queue_wait_s(response: httpx.Response) -> float:
    return server_timing(response)["queue"]


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def simultaneous(count: int, call) -> tuple[dict[int, object], list[BaseException], float]:
    """Run call(index) on `count` threads released together; (results, errors, seconds)."""
    barrier = threading.Barrier(count + 1)
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def one(index: int) -> None:
        try:
            barrier.wait(CLIENT_TIMEOUT_S)
            results[index] = call(index)
        except BaseException as error:  # surfaced by the caller
            errors.append(error)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    barrier.wait(CLIENT_TIMEOUT_S)
    started = time.perf_counter()
    for thread in threads:
        thread.join(CLIENT_TIMEOUT_S + 10)
    assert not any(thread.is_alive() for thread in threads), "a client hung past its timeout"
    return results, errors, time.perf_counter() - started


class Prober:
    """Polls the UI and the probes round-robin on its own thread, timing each answer."""

    def __init__(self, base: str):
        self.base = base
        self.times: dict[str, list[float]] = {path: [] for path in PROBES}
        self.statuses: list[tuple[str, int]] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=CLIENT_TIMEOUT_S) as http:
            while not self._stop.is_set():
                for path in PROBES:
                    try:
                        started = time.perf_counter()
                        response = http.get(path)
                        self.times[path].append(time.perf_counter() - started)
                        self.statuses.append((path, response.status_code))
                    except BaseException as error:
                        self.errors.append(error)
                    self._stop.wait(0.05)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(CLIENT_TIMEOUT_S)


# ------------------------------------------------------------------ servers


@pytest.fixture(scope="module")
def server(tiny_dir, tmp_path_factory):
    with LiveServer.start(tiny_dir, tmp_path_factory.mktemp("load")) as server:
        yield server


@pytest.fixture(scope="module")
def small_queue(tiny_dir, tmp_path_factory):
    with LiveServer.start(tiny_dir, tmp_path_factory.mktemp("load-small-queue"),
                          "--queue-capacity", str(SMALL_QUEUE)) as server:
        yield server


@pytest.fixture(scope="module")
def burst(server):
    """24 simultaneous repairs, with the UI and the probes polled all along; the tests below
    each check one property of this one run."""
    cases = [picture(seed) for seed in range(BURST)]
    with httpx.Client(base_url=server.base, timeout=CLIENT_TIMEOUT_S) as http:
        served_before = metric(http.get("/metrics").text, "inpaint_requests_total", status="200")

    def post(index: int) -> tuple[httpx.Response, float]:
        started = time.perf_counter()
        with httpx.Client(base_url=server.base, timeout=CLIENT_TIMEOUT_S) as http:
            response = http.post("/api/v1/inpaint", **form(*cases[index]))
        return response, time.perf_counter() - started

    with Prober(server.base) as prober:
        time.sleep(0.3)  # a few idle probe rounds first, for comparison
        idle_rounds = len(prober.times["/"])
        results, errors, seconds = simultaneous(BURST, post)
    return {"cases": cases, "results": results, "errors": errors, "seconds": seconds,
            "prober": prober, "idle_rounds": idle_rounds, "served_before": served_before}


# ------------------------------------------------------------------ the burst


def test_a_burst_of_24_all_complete_with_200(server, burst):
    assert burst["errors"] == [], burst["errors"]
    results = burst["results"]
    ok = sum(response.status_code == 200 for response, _ in results.values())
    record("Load: burst of 24 simultaneous 512×384 API requests", "answered 200",
           f"{ok} / {BURST}", f"all {BURST}")
    record("Load: burst of 24 simultaneous 512×384 API requests", "whole burst (CPU, tiny model)",
           f"{burst['seconds']:.1f} s", f"< {BURST_BOUND_S} s, no client call over {CLIENT_TIMEOUT_S} s")
    assert len(results) == BURST
    for index, (response, _) in results.items():
        check_repaired(response, *burst["cases"][index])
    assert burst["seconds"] < BURST_BOUND_S
    with httpx.Client(base_url=server.base, timeout=CLIENT_TIMEOUT_S) as http:
        text = http.get("/metrics").text
        assert http.get("/readyz").status_code == 200
    assert metric(text, "inpaint_requests_total", status="200") == burst["served_before"] + BURST
    assert metric(text, "inpaint_queue_depth") == 0.0
    for status in ("500", "502", "503", "504"):
        assert metric(text, "inpaint_requests_total", status=status) == 0.0
    assert server.alive()


def test_nobody_in_the_burst_is_starved(burst):
    """With one worker, a job waits only for the jobs served before it: the longest queue
    wait is at most the others' run time put together (Server-Timing has each job's)."""
    timings = [server_timing(response) for response, _ in burst["results"].values()]
    runs = [sum(t.get(stage, 0.0) for stage in ("preprocess", "infer", "postprocess")) for t in timings]
    waits = [t["queue"] for t in timings]
    longest = max(range(BURST), key=lambda i: waits[i])
    others = sum(runs) - runs[longest]
    latencies = sorted(seconds for _, seconds in burst["results"].values())
    case = "Load: burst of 24 simultaneous 512×384 API requests"
    record(case, "client latency median / max",
           f"{statistics.median(latencies):.2f} s / {latencies[-1]:.2f} s", f"max < {CLIENT_TIMEOUT_S} s")
    record(case, "longest queue wait / the other 23 jobs' run time",
           f"{waits[longest]:.2f} s / {others:.2f} s", "≤ (+ 0.5 s)")
    assert waits[longest] <= others + 0.5


def test_the_ui_and_probes_stay_responsive_while_the_api_is_busy(burst):
    prober: Prober = burst["prober"]
    assert prober.errors == [], prober.errors
    assert all(status == 200 for _, status in prober.statuses), [s for s in prober.statuses if s[1] != 200]
    idle = burst["idle_rounds"]
    for path in PROBES:
        busy = prober.times[path][idle:]
        assert len(busy) >= 3, f"{path} answered only {len(busy)} times during the burst"
        worst = max(busy)
        record("Load: UI and probes during the burst of 24", f"GET {path} median / max",
               f"{statistics.median(busy) * 1000:.0f} ms / {worst * 1000:.0f} ms ({len(busy)} calls)",
               f"max < {UI_BOUND_S:.0f} s")
        assert worst < UI_BOUND_S, f"GET {path} took {worst:.2f} s during the burst"


# ------------------------------------------------------------------ fairness, measured directly


def test_requests_arriving_in_turn_complete_in_arrival_order(server):
    """Two long jobs occupy the worker and the head of the queue; then 8 requests arrive 500 ms
    apart. All of them queue (their Server-Timing queue wait is > 0), and they complete in
    arrival order. (The long jobs' own answers are not compared: encoding a 5 MP result takes
    longer than the next small job.) Two, because one alone (3.5 s on a CI machine) could end
    before the last request arrived, and then that request did not queue."""
    heads = {-1: picture(1000, 2560, 1920), -2: picture(1001, 2560, 1920)}
    cases = [picture(2000 + i) for i in range(FAIR_COUNT)]
    done: dict[int, tuple[httpx.Response, float]] = {}
    errors: list[BaseException] = []
    started = time.perf_counter()

    def post(index: int, image: np.ndarray, mask: np.ndarray, delay: float) -> None:
        try:
            # The head job repairs the whole 2560×1920 picture ("crop" would repair a corner).
            body = form(image, mask, strategy="original") if index < 0 else form(image, mask)
            with httpx.Client(base_url=server.base, timeout=CLIENT_TIMEOUT_S) as http:
                time.sleep(max(0.0, started + delay - time.perf_counter()))
                response = http.post("/api/v1/inpaint", **body)
            done[index] = (response, time.perf_counter())
        except BaseException as error:
            errors.append(error)

    long_jobs = [threading.Thread(target=post, args=(index, *heads[index], 0.0), daemon=True) for index in heads]
    for thread in long_jobs:
        thread.start()
    with httpx.Client(base_url=server.base, timeout=CLIENT_TIMEOUT_S) as http:
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while http.get("/healthz").json()["queue"]["depth"] < len(heads):  # one on the worker, one waiting
            assert time.monotonic() < deadline and all(t.is_alive() for t in long_jobs), \
                "the long jobs never reached the queue"
            time.sleep(0.01)
    started = time.perf_counter()
    threads = long_jobs + [threading.Thread(target=post, args=(i, *cases[i], i * FAIR_STAGGER_S), daemon=True)
                           for i in range(FAIR_COUNT)]
    for thread in threads[len(long_jobs):]:
        thread.start()
    for thread in threads:
        thread.join(CLIENT_TIMEOUT_S + 10)
    assert errors == [] and len(done) == FAIR_COUNT + len(heads)
    for index, (image, mask) in heads.items():
        check_repaired(done[index][0], image, mask)
    for index, case in enumerate(cases):
        check_repaired(done[index][0], *case)
    waits = [queue_wait_s(done[i][0]) for i in range(FAIR_COUNT)]
    order = sorted(range(FAIR_COUNT), key=lambda i: done[i][1])
    out_of_order = sum(1 for a in range(FAIR_COUNT) for b in range(a + 1, FAIR_COUNT)
                       if order.index(a) > order.index(b))
    record(f"Load: fairness, {FAIR_COUNT} requests arriving {FAIR_STAGGER_S * 1000:.0f} ms apart behind long jobs",
           "completed out of arrival order",
           f"{out_of_order} pairs of {FAIR_COUNT * (FAIR_COUNT - 1) // 2} "
           f"(queue waits {min(waits):.2f}..{max(waits):.2f} s)", "0 (first come, first served)")
    assert min(waits) > 0.05, f"the requests did not queue (waits {waits}): the test proves nothing"
    assert order == list(range(FAIR_COUNT)), f"completion order {order}"


# ------------------------------------------------------------------ beyond the queue's capacity


def test_beyond_the_queue_capacity_the_answer_is_503_with_retry_after(small_queue):
    cases = [picture(3000 + i) for i in range(OVERFLOW)]

    def post(index: int) -> tuple[httpx.Response, float]:
        started = time.perf_counter()
        with httpx.Client(base_url=small_queue.base, timeout=CLIENT_TIMEOUT_S) as http:
            response = http.post("/api/v1/inpaint", **form(*cases[index]))
        return response, time.perf_counter() - started

    results, errors, seconds = simultaneous(OVERFLOW, post)
    assert errors == [], errors
    assert len(results) == OVERFLOW
    statuses = sorted(response.status_code for response, _ in results.values())
    served = [i for i, (response, _) in results.items() if response.status_code == 200]
    refused = [i for i, (response, _) in results.items() if response.status_code == 503]
    other = [status for status in statuses if status not in (200, 503)]
    refusal_s = max((results[i][1] for i in refused), default=0.0)
    case = f"Load: {OVERFLOW} simultaneous requests at a queue of {SMALL_QUEUE}"
    record(case, "answered 200 / 503 with Retry-After / other",
           f"{len(served)} / {len(refused)} / {len(other)}", f"≥ {SMALL_QUEUE} / ≥ 1 / 0")
    record(case, "slowest 503", f"{refusal_s * 1000:.0f} ms", f"< {REFUSAL_BOUND_S:.0f} s")
    assert other == [], f"statuses {statuses}"
    assert len(served) >= SMALL_QUEUE and refused, f"statuses {statuses}"
    for index in served:
        check_repaired(results[index][0], *cases[index])
    for index in refused:
        response = results[index][0]
        assert response.headers["content-type"].startswith("application/json")
        error = response.json()["error"]
        assert error["code"] == "queue_full" and "full" in error["message"]
        assert int(response.headers["retry-after"]) >= 1
    assert refusal_s < REFUSAL_BOUND_S
    # Nothing left behind: the queue drains and the server serves again.
    with httpx.Client(base_url=small_queue.base, timeout=CLIENT_TIMEOUT_S) as http:
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while http.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the queue never drained"
            time.sleep(0.05)
        check_repaired(http.post("/api/v1/inpaint", **form(*cases[0])), *cases[0])
        text = http.get("/metrics").text
    assert metric(text, "inpaint_requests_total", status="503") == len(refused)
    assert metric(text, "inpaint_requests_total", status="500") == 0.0
    assert metric(text, "inpaint_queue_depth") == 0.0
    assert small_queue.alive()

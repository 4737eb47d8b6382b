"""/metrics as Prometheus reads it: the gauges of the sampler's latest sample, read at scrape time,
and the per-stage and peak-GPU-memory histograms."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from monitor.metrics import PEAK_GPU_BUCKETS, STAGE_BUCKETS, ServiceMetrics

GiB = 2**30
SAMPLE_GAUGES = ("inpaint_gpu_utilization_ratio", "inpaint_gpu_memory_used_bytes", "inpaint_gpu_memory_total_bytes",
                 "inpaint_gpu_temperature_celsius", "inpaint_gpu_power_watts", "inpaint_system_memory_used_bytes")


def gpu(index: int, **fields) -> dict:
    return {"index": index, "name": "NVIDIA A10", "utilization_ratio": 0.87, "memory_used_bytes": 6_800_000_000,
            "memory_total_bytes": 24 * GiB, "memory_reserved_bytes": 300 * 2**20, "temperature_celsius": 64,
            "power_watts": 148.25, "sm_clock_mhz": 1695, **fields}


def sample(**fields) -> dict:
    return {"ts": 1.7e9, "process_cpu_percent": 112.5, "process_rss_bytes": 900_000_000,
            "system_memory_used_bytes": 12 * GiB, "gpu": [gpu(0), gpu(1, temperature_celsius=None)], **fields}


def make(latest=None) -> ServiceMetrics:
    if latest is None:
        return ServiceMetrics(lambda: 2, lambda: 1, lambda: 1)  # as issue 3's callers build it
    return ServiceMetrics(lambda: 2, lambda: 1, lambda: 1, latest_sample=latest)


def scrape(metrics: ServiceMetrics) -> dict[tuple[str, tuple], float]:
    return {(line.name, tuple(sorted(line.labels.items()))): line.value
            for family in text_string_to_metric_families(metrics.render().decode()) for line in family.samples}


def test_gauges_come_from_the_latest_sample_with_a_gpu_label():
    current = {"sample": sample()}
    metrics = make(lambda: current["sample"])
    values = scrape(metrics)
    assert values[("inpaint_gpu_utilization_ratio", (("gpu", "0"),))] == 0.87
    assert values[("inpaint_gpu_memory_used_bytes", (("gpu", "1"),))] == 6_800_000_000
    assert values[("inpaint_gpu_memory_total_bytes", (("gpu", "0"),))] == 24 * GiB
    assert values[("inpaint_gpu_temperature_celsius", (("gpu", "0"),))] == 64
    assert ("inpaint_gpu_temperature_celsius", (("gpu", "1"),)) not in values  # unknown, not 0
    assert values[("inpaint_gpu_power_watts", (("gpu", "1"),))] == 148.25
    assert values[("inpaint_system_memory_used_bytes", ())] == 12 * GiB
    assert values[("inpaint_queue_depth", ())] == 2  # issue 3's gauges stay

    current["sample"] = sample(system_memory_used_bytes=13 * GiB)  # read at scrape time, not at start
    assert scrape(metrics)[("inpaint_system_memory_used_bytes", ())] == 13 * GiB


def test_no_sample_no_gauges():
    for metrics in (make(), make(lambda: None)):
        text = metrics.render().decode()
        assert not [name for name in SAMPLE_GAUGES if name in text]
        assert "inpaint_queue_depth 2.0" in text


def test_without_a_gpu_only_the_host_gauge():
    names = {name for name, _ in scrape(make(lambda: sample(gpu=None)))}
    assert names & set(SAMPLE_GAUGES) == {"inpaint_system_memory_used_bytes"}


def test_the_process_is_measured_by_the_standard_collector_at_scrape_time():
    """prometheus_client's ProcessCollector on the service's own registry: CPU seconds, RSS, fds."""
    import resource

    values = scrape(make())
    rss = values[("process_resident_memory_bytes", ())]
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    assert 10e6 < rss <= peak_rss * 1.01
    assert values[("process_cpu_seconds_total", ())] > 0 and values[("process_open_fds", ())] > 0


def test_stage_histogram_counts_each_stage_that_ran():
    metrics = make()
    metrics.observe_stages({"decode": 0.002, "queue": 0.0, "infer": 0.5, "save": None, "total": 0.6})
    metrics.observe_stages({"decode": 0.004, "infer": 0.7})
    values = scrape(metrics)

    def stage(suffix: str, name: str, **labels) -> float:
        return values[(f"inpaint_stage_duration_seconds_{suffix}", tuple(sorted({"stage": name, **labels}.items())))]

    assert STAGE_BUCKETS[0] == 0.001 and STAGE_BUCKETS[-1] == 60
    assert stage("count", "decode") == 2 and stage("sum", "decode") == 0.006
    assert stage("bucket", "decode", le="0.001") == 0
    assert stage("bucket", "decode", le="0.0025") == 1
    assert stage("bucket", "decode", le="0.005") == 2
    assert stage("count", "queue") == 1 and stage("count", "infer") == 2
    stages = {dict(labels).get("stage") for name, labels in values if name.startswith("inpaint_stage_duration")}
    assert stages == {"decode", "queue", "infer"}  # no "save" that never ran, no "total"


def test_peak_gpu_histogram_counts_gpu_repairs_in_bytes():
    metrics = make()
    metrics.observe_peak_gpu(3 * GiB)
    metrics.observe_peak_gpu(None)  # a repair on the CPU
    values = scrape(metrics)
    assert PEAK_GPU_BUCKETS[0] == 64 * 2**20 and PEAK_GPU_BUCKETS[-1] == 64 * GiB
    assert values[("inpaint_request_peak_gpu_memory_bytes_count", ())] == 1
    assert values[("inpaint_request_peak_gpu_memory_bytes_sum", ())] == 3 * GiB
    buckets = {float(dict(labels)["le"]): value for (name, labels), value in values.items()
               if name == "inpaint_request_peak_gpu_memory_bytes_bucket"}
    assert buckets[2 * GiB] == 0 and buckets[4 * GiB] == 1 and buckets[float("inf")] == 1


def test_fp16_fallbacks_are_a_counter_read_when_scraped():
    fallbacks = [0]
    metrics = ServiceMetrics(lambda: 0, lambda: 1, lambda: 1, fp16_fallbacks=lambda: fallbacks[0])
    assert scrape(metrics)[("inpaint_fp16_fallbacks_total", ())] == 0
    fallbacks[0] = 3
    assert scrape(metrics)[("inpaint_fp16_fallbacks_total", ())] == 3
    assert "# TYPE inpaint_fp16_fallbacks_total counter" in metrics.render().decode()


def test_the_cpu_workers_gauges_exist_only_where_they_are_watched():
    state = {"in_flight": 0, "restarts": 0}
    metrics = ServiceMetrics(lambda: 0, lambda: 1, lambda: 1)
    assert "inpaint_cpu_worker" not in metrics.render().decode()
    metrics.watch_cpu_workers(in_flight=lambda: state["in_flight"], restarts=lambda: state["restarts"])
    state.update(in_flight=5, restarts=2)
    values = scrape(metrics)
    assert values[("inpaint_cpu_workers_in_flight", ())] == 5
    assert values[("inpaint_cpu_worker_restarts_total", ())] == 2
    assert "# TYPE inpaint_cpu_worker_restarts_total counter" in metrics.render().decode()


def test_the_pinned_buffers_gauge_is_read_when_scraped_and_left_out_while_unknown():
    held = [48 * 2**20]
    metrics = make()
    assert ("inpaint_pinned_host_bytes", ()) not in scrape(metrics), "only a GPU server watches it"
    metrics.watch_pinned_host(lambda: held[0])
    assert scrape(metrics)[("inpaint_pinned_host_bytes", ())] == 48 * 2**20
    held[0] = 0
    assert scrape(metrics)[("inpaint_pinned_host_bytes", ())] == 0
    held[0] = None  # a torch without host statistics
    assert ("inpaint_pinned_host_bytes", ()) not in scrape(metrics)

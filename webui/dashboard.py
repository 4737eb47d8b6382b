"""The Resources tab: what the service costs, live, over the last 5, 15 or 60 minutes.

Operators look at plots, so everything is a plot except the per-request stage timings,
which are a table; exact numbers live in the plots' tooltips and in that table.

A refresh only reads what the monitor already holds in memory (the sampler's ring buffer
and the request log's recent records) for the chosen window and shapes it into small
frames; it never measures anything itself. The shaping functions are pure (samples and
records in, pandas frames out) so that tests check them without Gradio;
`build_resources_tab` only lays out components and wires the timer to them.

The x axis is minutes before now (-5 .. 0), the same on every plot, so that a latency
spike lines up with the memory and CPU around it; clock times are in the tooltips and the
table. An axis of clock times would have to move its limits on every refresh, and new
limits make Gradio rebuild the plot, which drops the tooltip someone is reading.
"""

from __future__ import annotations

import functools
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import gradio as gr
import pandas as pd

from lama.stages import Stage

Sample = Mapping[str, Any]  # monitor.records.Sample, read leniently: a key may be missing or null
Record = Mapping[str, Any]  # monitor.records.RequestRecord, likewise
Point = tuple[str, float | None]  # (series, value in display units) read from one sample
Row = tuple[float, str, float]  # (ts, series, value): one point of one line

WINDOWS_S = {"last 5 min": 300, "last 15 min": 900, "last 60 min": 3600}
DEFAULT_WINDOW = "last 5 min"
REFRESH_S = 3.0
# Per series and plot: 60 minutes of 1 Hz samples would send ~20 k points every refresh;
# longer windows are bucketed down to this many, each bucket keeping its peak.
MAX_POINTS = 300
TABLE_ROWS = 50
STAGES = tuple(Stage)
# The editor's repairs: the time the user waited (click to result on screen), beside the server's.
WAITED_SERIES = "waited (editor)"
WAITED_COLUMN = "waited ms"
GB = 1e9  # decimal, as the repair summary and /healthz's gpu_mem write it
# Extra tooltip columns: Gradio always shows the value, the minutes and the series.
TOOLTIP = ["time"]

NO_GPU = "no GPU: NVML not available (or it sees no GPU)"
NO_SAMPLES = "no samples in this window yet"
MONITORING_OFF = ("**Resource monitoring is off** (the service runs with `--monitor-interval 0`): "
                  "there are no GPU, CPU or memory plots.")
NO_REQUEST_LOG = "**Request records are off**: there is no latency plot and no request table."


class SampleSource(Protocol):
    """What the tab needs of monitor.sampler.Sampler."""

    def samples(self, since: float | None = None) -> list[Sample]: ...


class RequestSource(Protocol):
    """What the tab needs of monitor.requestlog.RequestLog."""

    def recent(self, since: float | None = None, limit: int | None = None) -> list[Record]: ...


# ---------------------------------------------------------------- what each plot reads from a sample

def gpu_memory_points(sample: Sample) -> Iterator[Point]:
    """GB used per GPU as NVML sees it, and what this process's torch allocator reserved.

    Both, because NVML counts every process on the card while torch's reserved memory is
    this service's own share (and is right inside containers, where NVML's PIDs are the host's).
    """
    for gpu in sample.get("gpu") or []:
        yield f"GPU {gpu['index']} used (NVML)", _scaled(gpu.get("memory_used_bytes"), 1 / GB)
    if sample.get("torch"):
        yield "torch reserved", _scaled(sample["torch"].get("memory_reserved_bytes"), 1 / GB)


def gpu_utilization_points(sample: Sample) -> Iterator[Point]:
    """Percent busy per GPU (NVML's ratio 0..1 times 100)."""
    for gpu in sample.get("gpu") or []:
        yield f"GPU {gpu['index']}", _scaled(gpu.get("utilization_ratio"), 100)


def cpu_points(sample: Sample) -> Iterator[Point]:
    """System CPU overall and its busiest core: one saturated core (decoding, encoding)
    hides in the overall figure of a many-core box."""
    yield "overall", sample.get("cpu_percent")
    yield "peak core", sample.get("cpu_peak_core_percent")


def rss_points(sample: Sample) -> Iterator[Point]:
    """This process's resident memory in GB: a line that only climbs is a leak."""
    yield "process RSS", _scaled(sample.get("process_rss_bytes"), 1 / GB)


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


# ---------------------------------------------------------------- pure data shaping

def in_window(items: Iterable[dict[str, Any]], now: float, window_s: float) -> list[dict[str, Any]]:
    """Samples or records stamped within the last `window_s` seconds up to `now`, oldest first."""
    start = now - window_s
    return sorted((item for item in items if start <= item["ts"] <= now), key=lambda item: item["ts"])


def sample_rows(samples: Iterable[Sample], points: Callable[[Sample], Iterable[Point]]) -> list[Row]:
    """One row per sample and series; a missing value (None) is left out rather than drawn
    as zero: a sampler that could not read a GPU field did not see zero memory."""
    return [(sample["ts"], series, value)
            for sample in samples for series, value in points(sample) if value is not None]


def thin(rows: list[Row], window_s: float, max_points: int = MAX_POINTS) -> list[Row]:
    """At most `max_points` + 1 rows per series (the window's two ends fall in partial
    buckets): each time bucket keeps its highest value.

    The peak, not the mean, because peaks are what operators look for (a spike of memory
    averaged away would hide the very thing the plot is for).
    """
    counts = Counter(series for _, series, _ in rows)
    if not counts or max(counts.values()) <= max_points:
        return rows
    bucket_s = math.ceil(window_s / max_points)
    peaks: dict[tuple[str, float], Row] = {}
    for row in rows:
        ts, series, value = row
        key = (series, ts // bucket_s)
        if key not in peaks or value > peaks[key][2]:
            peaks[key] = row
    return list(peaks.values())


def plot_frame(rows: Sequence[tuple[Any, ...]], now: float, digits: int, extra: Sequence[str] = ()
               ) -> pd.DataFrame:
    """Rows (ts, series, value, *extra) in the long format the plots draw: `minutes` before
    `now` (the x axis), `time` (the clock time, for the tooltip), `series` (one line or
    colour each), `value` rounded to `digits` (what the tooltip shows), and any `extra`
    columns as text.

    The clock time is text in the server's zone, as in the table: Gradio would show a
    datetime column in a tooltip as a date without the time.
    """
    raw = pd.DataFrame(list(rows), columns=["ts", "series", "value", *extra])
    return pd.DataFrame({
        "time": raw["ts"].map(clock).astype(str),
        "minutes": ((raw["ts"] - now) / 60).astype(float).round(2),
        "series": raw["series"].astype(str),
        "value": raw["value"].astype(float).round(digits),
        **{column: raw[column].astype(str) for column in extra},
    })


def clock(ts: float) -> str:
    """'20:38:02' in the server's time zone (table_headers names it)."""
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S")


def request_label(record: Record) -> str:
    """'1280×960 crop · 200': what a tooltip needs to tell one request from another."""
    size = f"{record['width']}×{record['height']}" if record.get("width") else "undecoded"
    return " ".join(filter(None, [size, record.get("strategy")])) + f" · {record.get('status')}"


def waited_s(record: Record) -> float | None:
    """What the user of the editor waited for this repair, from the click to the result on
    screen (the page reports it after the result; None for the API and unreported repairs)."""
    return (record.get("waited") or {}).get("total")


def latency_frame(records: Sequence[Record], now: float) -> pd.DataFrame:
    """Per request its total and infer time in ms and, for the editor's repairs, the user's
    wait, with the request's label for the tooltip."""
    rows = [(record["ts"], stage, record["timings"][stage] * 1000, request_label(record))
            for record in records for stage in (Stage.TOTAL, Stage.INFER)
            if (record.get("timings") or {}).get(stage) is not None]
    rows += [(record["ts"], WAITED_SERIES, waited_s(record) * 1000, request_label(record))
             for record in records if waited_s(record) is not None]
    return plot_frame(rows, now, digits=1, extra=["request"])


def table_headers() -> list[str]:
    """Column names; the time column names the server's time zone, which the table uses."""
    return [f"time ({time.strftime('%Z') or 'local'})", "size", "status", *(f"{stage} ms" for stage in STAGES),
            WAITED_COLUMN, "error"]


def request_table(records: Sequence[Record], limit: int = TABLE_ROWS) -> pd.DataFrame:
    """The newest `limit` requests first, stage timings in ms; a stage a request never
    reached (a refused upload has no infer) is blank, not zero, and so is the user's wait
    where no page reported one (the API)."""
    rows = []
    for record in sorted(records, key=lambda record: record["ts"], reverse=True)[:limit]:
        timings = record.get("timings") or {}
        size = f"{record['width']}×{record['height']}" if record.get("width") else ""
        stages = [None if timings.get(stage) is None else round(timings[stage] * 1000, 1) for stage in STAGES]
        waited = None if waited_s(record) is None else round(waited_s(record) * 1000, 1)
        rows.append([clock(record["ts"]), size, str(record.get("status", "")),
                     *stages, waited, record.get("error") or ""])
    return pd.DataFrame(rows, columns=table_headers())


@dataclass(frozen=True)
class Snapshot:
    """Everything one refresh shows; `gpu_note` explains empty GPU plots."""

    gpu_memory: pd.DataFrame
    gpu_utilization: pd.DataFrame
    cpu: pd.DataFrame
    rss: pd.DataFrame
    latency: pd.DataFrame
    table: pd.DataFrame
    gpu_note: str | None


def snapshot(samples: Sequence[Sample], records: Sequence[Record], now: float, window_s: float) -> Snapshot:
    """The window's samples and records shaped for the plots and the table."""
    samples = in_window(samples, now, window_s)
    records = in_window(records, now, window_s)

    def frame(points: Callable[[Sample], Iterable[Point]], digits: int) -> pd.DataFrame:
        return plot_frame(thin(sample_rows(samples, points), window_s), now, digits)

    gpu_memory, gpu_utilization = frame(gpu_memory_points, 3), frame(gpu_utilization_points, 1)
    if not samples:
        gpu_note = NO_SAMPLES
    elif gpu_memory.empty and gpu_utilization.empty:
        gpu_note = NO_GPU
    else:
        gpu_note = None
    return Snapshot(gpu_memory, gpu_utilization, frame(cpu_points, 1), frame(rss_points, 3),
                    latency_frame(records, now), request_table(records), gpu_note)


# ---------------------------------------------------------------- layout and refresh

def x_lim(window_label: str) -> list[float]:
    """The x axis of every plot: the window in minutes before now."""
    return [-WINDOWS_S[window_label] / 60, 0]


def refresh(sampler: SampleSource | None, requests: RequestSource | None, window_label: str,
            now: float | None = None) -> list[Any]:
    """One timer tick: the window read from memory and shaped, in the tab's output order
    (when sampling: the GPU note, the four resource plots; then latency and table when recording).

    Every plot gets its x limits each time (the window may have changed); Gradio rebuilds
    a plot only when they differ from what it shows, so a tick just swaps the data.
    """
    now = time.time() if now is None else now
    window_s = WINDOWS_S[window_label]
    since = now - window_s
    shot = snapshot(sampler.samples(since) if sampler else [], requests.recent(since) if requests else [],
                    now, window_s)
    # gr.update rather than gr.LinePlot(...): a component built here would process its data
    # once more only to be thrown away, half the cost of a refresh.
    limits = x_lim(window_label)
    values: list[Any] = []
    if sampler is not None:
        # Without GPU readings the two GPU plots give way to one line saying why ("no GPU: ..."),
        # rather than two empty charts; they come back with the first reading.
        gpu_plots = shot.gpu_note is None
        values += [gr.update(value=shot.gpu_note or "", visible=not gpu_plots),
                   gr.update(value=shot.gpu_memory, x_lim=limits, visible=gpu_plots),
                   gr.update(value=shot.gpu_utilization, x_lim=limits, visible=gpu_plots),
                   gr.update(value=shot.cpu, x_lim=limits), gr.update(value=shot.rss, x_lim=limits)]
    if requests is not None:
        values += [gr.update(value=shot.latency, x_lim=limits), shot.table]
    return values


def _plot(label: str, y_title: str, elem_id: str, y_lim: list[float | None], tooltip: list[str] = TOOLTIP,
          kind: type[gr.LinePlot] | type[gr.ScatterPlot] = gr.LinePlot) -> gr.LinePlot | gr.ScatterPlot:
    return kind(x="minutes", y="value", color="series", label=label, x_title="minutes ago", y_title=y_title,
                x_lim=x_lim(DEFAULT_WINDOW), y_lim=y_lim, tooltip=tooltip, elem_id=elem_id,
                buttons=["fullscreen", "export"])


def build_resources_tab(tabs: gr.Tabs, sampler: SampleSource | None, requests: RequestSource | None) -> gr.Tab:
    """The Resources tab, inside `tabs` (call within its context); the refresh timer runs
    only while this tab is the selected one, so an open Repair page costs nothing.

    With no sampler (monitoring off) the tab says so and shows what the request log has.
    """
    with gr.Tab("Resources", id="resources", elem_id="resources-tab") as tab:
        with gr.Row():
            # A dropdown, as dashboards' time pickers are: it stays small beside the plots.
            window = gr.Dropdown(list(WINDOWS_S), value=DEFAULT_WINDOW, label="Time range", scale=0,
                                 min_width=200, elem_id="resources-window")
        outputs: list[gr.Component] = []
        if sampler is None:
            gr.Markdown(MONITORING_OFF, elem_id="monitoring-off")
        else:
            # Memory axes start at zero: a zoomed axis makes a 1% wobble look like a leak.
            outputs.append(gr.Markdown(visible=False, elem_id="gpu-note"))
            with gr.Row():
                outputs += [_plot("GPU memory", "GB", "plot-gpu-memory", y_lim=[0, None]),
                            _plot("GPU utilization", "%", "plot-gpu-utilization", y_lim=[0, 100])]
            with gr.Row():
                outputs += [_plot("CPU", "%", "plot-cpu", y_lim=[0, 100]),
                            _plot("Process memory (RSS)", "GB", "plot-rss", y_lim=[0, None])]
        if requests is None:
            gr.Markdown(NO_REQUEST_LOG)
        else:
            # Points, not lines: requests are separate events, and a line between two
            # requests minutes apart would draw latencies nobody measured.
            outputs += [_plot("Request latency", "ms", "plot-latency", y_lim=[0, None],
                              tooltip=[*TOOLTIP, "request"], kind=gr.ScatterPlot),
                        gr.Dataframe(headers=table_headers(), label=f"Last {TABLE_ROWS} requests (ms per stage)",
                                     interactive=False, elem_id="requests-table", max_height=400)]
        timer = gr.Timer(REFRESH_S, active=False)
    if not outputs:
        return tab
    update = functools.partial(refresh, sampler, requests)

    def on_tab_select(selected: gr.SelectData, window_label: str) -> list[Any]:
        """Start the timer when this tab comes into view, with a refresh right away rather
        than a tick later, and stop it when another tab does."""
        showing = selected.value == tab.label
        return [gr.Timer(active=showing), *(update(window_label) if showing else [gr.skip()] * len(outputs))]

    # Unqueued: a refresh takes milliseconds of reading memory; it must neither wait behind
    # repairs nor take a place in Gradio's queue, whose size is the GPU queue's capacity.
    for event in (timer.tick, window.change):
        event(update, inputs=window, outputs=outputs, queue=False, show_progress="hidden", api_visibility="private")
    tabs.select(on_tab_select, inputs=window, outputs=[timer, *outputs], queue=False, show_progress="hidden",
                api_visibility="private")
    return tab

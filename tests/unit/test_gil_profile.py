"""tools/gil_profile.py sums py-spy's raw stacks per function."""

import runpy
from types import SimpleNamespace

from support.paths import ROOT

gil_profile = SimpleNamespace(**runpy.run_path(str(ROOT / "tools" / "gil_profile.py")))

RAW = """\
<module> (app.py:1);run (asyncio/base_events.py:600);sleep (asyncio/tasks.py:643) 30
<module> (app.py:1);run (asyncio/base_events.py:600);parse (multipart.py:10) 50
_work (service/jobs.py:229);repair (lama/reference.py:80) 20
"""


def test_own_and_inclusive_samples_per_function_and_the_held_share():
    total, own, inclusive = gil_profile.profile(RAW)
    assert total == 100
    assert own["parse (multipart.py:10)"] == 50 and own["sleep (asyncio/tasks.py:643)"] == 30
    assert inclusive["run (asyncio/base_events.py:600)"] == 80 and inclusive["<module> (app.py:1)"] == 80
    text = gil_profile.report(RAW, seconds=2, rate=100, top=2)
    assert text.startswith("100 samples with the GIL held in 2 s at 100 Hz: some thread held it 50% of the time")
    assert "| 50 | 50% | parse (multipart.py:10) |" in text
    assert "repair (lama/reference.py:80)" not in text.split("with callees")[0]  # past --top 2


def test_every_threads_samples_are_read_as_threads_running_on_average():
    # As py-spy --threads writes them: the thread's id and name first.
    threads = RAW.replace("<module>", "thread (27096): MainThread;<module>").replace(
        "_work", "thread (27100): gpu-worker-0;_work")
    text = gil_profile.report(threads, seconds=1, rate=100, top=3, sampled="profile")
    assert text.startswith("100 samples of running threads in 1 s at 100 Hz: 1.00 threads running on average")
    assert "| 80 | 80% | thread (27096): MainThread |" in text  # a thread's whole share


def test_each_threads_seconds_and_where_it_spent_them():
    threads = RAW.replace("<module>", "thread (27096): MainThread;<module>").replace(
        "_work", "thread (27100): model-load_0;_work") + "<module> (app.py:1) 7\n"  # no thread: left out
    threads += "thread (27100);_find_and_load (<frozen importlib._bootstrap>:1176) 5\n"  # before its name
    per_thread = gil_profile.by_thread(threads)
    assert list(per_thread) == ["thread (27096): MainThread", "thread (27100): model-load_0"]  # most samples first
    samples, inclusive = per_thread["thread (27100): model-load_0"]
    assert samples == 25 and inclusive["repair (lama/reference.py:80)"] == 20
    assert inclusive["_find_and_load (<frozen importlib._bootstrap>:1176)"] == 5
    assert "<module> (app.py:1)" not in inclusive  # another thread's frame
    text = gil_profile.thread_report(threads, rate=100, top=2)
    assert "thread (27096): MainThread: 80 samples, 0.80 s" in text
    main_thread, model_load = text.split("model-load_0")
    assert "| 80 | 0.80 | run (asyncio/base_events.py:600) |" in main_thread  # top 2: run and <module>
    assert "parse (multipart.py:10)" not in main_thread  # 50 samples: third
    assert model_load.startswith(": 25 samples, 0.25 s")
    assert "| 20 | 0.20 | repair (lama/reference.py:80) |" in model_load

"""The service measured from outside, over HTTP, as its users reach it.

    python -m loadreport --url URL ...        the resource report (report.py): image classes, a
                                              steady stream, fault cases; report.md, plots, data.json
    python -m loadreport load --url URL ...   the load benchmark (load.py): req/s, latency, stage
                                              times and GPU busy share under 1, 4, 16 clients

It speaks to the service only through its HTTP API (/healthz, /api/v1/inpaint, /api/v1/monitor)
and imports nothing of the project (tests/unit/test_import_direction.py checks it), so it runs on
any machine that reaches the service, without torch, the model or the web stack. Its pictures
are its own (images.py), written by OpenCV as any other program would write them.
"""

"""The service measured from outside, over HTTP, as its users reach it.

    python -m loadreport --url URL ...   the resource report (report.py): image classes, a steady
                                         stream, fault cases; report.md, plots, data.json

It speaks to the service only through its HTTP API (/healthz, /api/v1/inpaint, /api/v1/monitor).
"""

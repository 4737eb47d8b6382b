"""The application: one repair end to end (decode gate, planning, admission, queue, engine, encode,
atomic save), storage and retention, GPU health and the health/readiness reports.

It speaks no HTTP and imports neither FastAPI nor Gradio: webui/ adapts it to routes and the UI,
app.py composes the parts. Modules: pipeline (RepairService), upload (RepairOptions, Decoded),
cpu_workers (the CPU steps in processes of their own), jobs (the GPU scheduler), storage
(OutputStore, Retention).
"""

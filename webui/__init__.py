"""The web layer: HTTP API (api.py) and Gradio UI (ui.py) over one RepairService."""

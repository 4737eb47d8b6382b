"""The web layer, adapters only: HTTP routes (api.py), the Gradio UI (ui.py, editor.py) and the
resources dashboard, the edge checks (edge.py, ui_guard.py) and the UI's upload cache, over one
service.pipeline.RepairService."""

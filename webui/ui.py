"""Gradio Blocks UI (placeholder: being written)."""

import gradio as gr

from webui.service import RepairOptions, RepairService


def build_ui(service: RepairService, defaults: RepairOptions) -> gr.Blocks:
    with gr.Blocks(title="LaMa inpainting") as blocks:
        gr.Markdown("placeholder")
    return blocks

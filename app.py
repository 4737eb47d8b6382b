"""The entry point: settings (configs/*.yaml + flags + environment) -> the server (webui/compose.py).

    python app.py [--host H] [--port P] [--model M] [--device D] [--precision P] [--preset fast|balanced|hd]
                  [--config FILE] [--outputs-dir DIR] [--logs-dir DIR] [--api-token T] [--auth USER:PASS]
                  [--outputs-keep-days D] [--outputs-keep-gb G] [--ui-cache-dir DIR] [--ui-cache-max-age-s S]
                  [--ui-cache-max-mb MB]
                  [--shutdown-timeout-s S] [--gpu-workers auto|N] [--cpu-workers N]
                  [--allowed-hosts NAMES] [--allowed-origins ORIGINS]
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

# Before gradio is imported: the server must start and run with no internet.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Before numpy is imported: its OpenBLAS starts a thread per core at load, and the service does
# no linear algebra in numpy (lama/resources.py counts the threads the server holds).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from webui.compose import (bound_process, build_app, make_server, setup_logging, start_kernel_helper,  # noqa: E402
                           warn_if_exposed)
from webui.server import check_address_free  # noqa: E402
from webui.settings import load_settings, parse_args  # noqa: E402

log = logging.getLogger("app")


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(parse_args(argv))
    check_address_free(settings.host, settings.port)  # before the model's seconds of loading
    setup_logging(Path(settings.logs_dir))
    warn_if_exposed(settings)
    # First: the helper's process imports and compiles beside everything below.
    kernels = start_kernel_helper(settings)
    try:
        budget = bound_process(settings)
        app = build_app(settings, kernels)
    except BaseException:
        if kernels is not None:
            kernels.stop()
        raise
    # Logged once the settings proved good: a refused start-up says its one reason alone.
    log.info("threads: at most %d (%s)", budget.total, budget.describe())
    make_server(app, settings).run()


if __name__ == "__main__":
    main()

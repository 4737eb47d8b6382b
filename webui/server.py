"""uvicorn's server with a drain in front of its graceful shutdown.

On SIGTERM (or Ctrl+C): (1) /readyz answers 503 and new repairs are refused with 503
`shutting_down`, while the port stays open, so probes and load balancers see it; (2) the repairs
in flight, API and UI, finish, for at most `timeout_s`; (3) `end_streams` closes the UI's event
streams (a browser tab's heartbeat never ends by itself); (4) then uvicorn's own shutdown: stop
listening, let responses being sent finish within what is left of the bound, run the lifespan's
shutdown (service.lifecycle stops the threads) and exit. A second signal skips the wait. Plain
uvicorn would stop listening at once (a probe gets "connection refused", not a 503) and wait for
open connections without a bound.

Before all that, `check_address_free` refuses a start whose port is taken, in one line, before the
model loads: uvicorn binds only once the application has started (seconds later on a GPU box), and
then logs "[Errno 98] error while attempting to bind" between the start-up's own lines.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
from collections.abc import Callable
from typing import Protocol

import uvicorn

log = logging.getLogger(__name__)


def check_address_free(host: str, port: int) -> None:
    """SystemExit with one line if the server could not listen on `host`:`port`: the binds
    uvicorn's asyncio server will make (every address `host` names, SO_REUSEADDR as asyncio sets
    it; an address of a family the system has turned off passed over, as asyncio passes it over,
    while another one binds), each released at once."""
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise SystemExit(f"error: cannot listen on {host}:{port}: {error.strerror}") from None
    unavailable, bound = None, False
    for family, kind, protocol, _, address in addresses:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio binds it
            try:
                probe.bind(address)
                bound = True
            except OSError as error:
                if error.errno == errno.EADDRNOTAVAIL:  # ::1 where IPv6 is off, or an address not this host's
                    unavailable = error
                    continue
                taken = " (is another server running there? stop it, or pass --port)" \
                    if error.errno == errno.EADDRINUSE else ""
                raise SystemExit(f"error: cannot listen on {host}:{port}: {error.strerror}{taken}") from None
    if not bound and unavailable is not None:
        raise SystemExit(f"error: cannot listen on {host}:{port}: {unavailable.strerror} (not an address of this host)")


class Drainable(Protocol):
    """What the server drains: service.pipeline.RepairService."""

    @property
    def in_flight(self) -> int: ...

    def start_draining(self) -> None: ...


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, service: Drainable, timeout_s: float,
                 end_streams: Callable[[], None] = lambda: None):
        super().__init__(config)
        self.service, self.timeout_s, self.end_streams = service, timeout_s, end_streams
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_started = False

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame) -> None:
        if self._drain_started or self._loop is None:
            super().handle_exit(sig, frame)  # a second signal: uvicorn's shutdown now
            return
        self._drain_started = True
        loop = self._loop
        loop.call_soon_threadsafe(lambda: loop.create_task(self._drain(sig)))

    async def _drain(self, sig: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        self.service.start_draining()
        log.info("%s: draining: /readyz answers 503, new repairs are refused; %d in flight, waiting up to %g s",
                 signal_name(sig), self.service.in_flight, self.timeout_s)
        while self.service.in_flight and loop.time() < deadline and not self.should_exit:
            await asyncio.sleep(0.05)
        if self.service.in_flight:
            log.warning("shutdown: %d repair(s) still in flight after %g s; stopping anyway",
                        self.service.in_flight, self.timeout_s)
        self.end_streams()
        self.config.timeout_graceful_shutdown = max(1.0, deadline - loop.time())
        super().handle_exit(sig, None)


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def gradio_stream_ender(app) -> Callable[[], None]:
    """Ends the UI's event streams of the Gradio app mounted in `app`: they stop when Gradio's
    App.stop_event is set (what Blocks.close does for a launched app; a mounted one has no close)."""
    def end() -> None:
        for route in app.routes:
            stop_event = getattr(getattr(route, "app", None), "stop_event", None)
            if isinstance(stop_event, asyncio.Event):
                stop_event.set()
    return end

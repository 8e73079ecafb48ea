"""`LiveView`: one display per process, kept current from a daemon thread.

The thread long-polls ``process/read`` (server-side waiting, no busy loop) and
republishes a MIME bundle (text and HTML) at most ~10 times a second, slower
for big displays, with a runtime tick every second while the process is quiet.
It stops when the process is closed, when its cell runs again
(:func:`stop_all_views` with the cell id) and at shutdown.

Where the bundle goes is the caller's ``publish`` callable: the magics pass
IPython's display functions, which in ipykernel hand every message to the
kernel's IOPub thread, so this thread never touches a socket itself. The
thread runs in a copy of the starting thread's context, so the messages carry
the parent header of the cell that started it. No IPython here.
"""

from __future__ import annotations

import contextvars
import dataclasses
import os
import threading
import time
from collections.abc import Callable

from ..client.exec_client import SyncExecClient
from ..render.html_render import view_html
from ..render.presentation import LIVE_STATES, process_runtime, view_text
from ..render.terminal import StreamDecoder, TerminalLog
from ..wire.models import ProcessInfo
from ..wire.schema import ReadResult

__all__ = ["LiveView", "Publish", "live_views", "stop_all_views"]

#: ``publish(bundle, display_id, update)``: show a new display, or update it in place.
Publish = Callable[[dict[str, str], str, bool], None]

_views: dict[str, LiveView] = {}
_views_lock = threading.Lock()


class LiveView:
    """Shows one process in one display and keeps it current (module docstring).

    ``show()`` publishes the first display (call it from the cell's thread);
    ``start()`` begins following.
    """

    max_rate = 10.0

    def __init__(
        self,
        client: SyncExecClient,
        info: ProcessInfo,
        publish: Publish,
        *,
        max_lines: int = 500,
        cell_id: str | None = None,
    ) -> None:
        self.client = client
        self.info = info
        self.process_id = info.process_id
        self.display_id = f"jupyter-exec-{info.process_id}-{os.urandom(4).hex()}"
        self.log = TerminalLog(max_lines=max_lines)
        self.cell_id = cell_id
        self.updates = 0
        self._decoder = StreamDecoder()
        self._publish = publish
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self._note = ""

    # -- lifecycle ---------------------------------------------------------------

    def show(self) -> None:
        self._publish(self._bundle(), self.display_id, False)

    def start(self) -> None:
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run,
            args=(self._follow,),
            name=f"jupyter-exec-view-{self.process_id}",
            daemon=True,
        )
        with _views_lock:
            _views[self.display_id] = self
        self._thread.start()

    def stop(self, timeout: float | None = 2.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the thread ----------------------------------------------------------------

    def _follow(self) -> None:
        try:
            self._follow_until_closed()
        except Exception as exc:
            if not self._stop.is_set():
                self._note = f" · view stopped: {exc}"
                self._render()
        finally:
            with _views_lock:
                _views.pop(self.display_id, None)

    def _follow_until_closed(self) -> None:
        last_render = time.monotonic()
        dirty = False
        for page in self.client.pages(self.process_id, self._seq, wait_ms=1000, follow=True):
            if self._stop.is_set():
                return
            if page.dropped and not self._note:
                self._note = f" · output before seq {page.first_seq} was dropped"
            if page.chunks:
                self.log.feed(self._decoder.decode_chunks(page.chunks))
                dirty = True
            self._seq = page.cursor
            if page.exited and self.info.state in LIVE_STATES:
                self.info = self._fresh_info(page)
                dirty = True
            if page.closed and not page.chunks:  # the last page
                self.info = self._fresh_info(page)
                self._render()
                return
            now = time.monotonic()
            interval = self._interval()
            if dirty and now - last_render >= interval:
                self._render()
                last_render, dirty = now, False
            elif not dirty and now - last_render >= (1.0 if self.info.state in LIVE_STATES else 5):
                self._render()  # runtime tick
                last_render = now
            if dirty:  # let output accumulate
                self._stop.wait(max(interval - (time.monotonic() - last_render), 0.05))

    def _interval(self) -> float:
        size = sum(len(line) for line in self.log.lines)
        return max(1.0 / self.max_rate, size / 200_000)

    def _fresh_info(self, result: ReadResult) -> ProcessInfo:
        infos: list[ProcessInfo] = self.client.list()
        for info in infos:
            if info.process_id == self.process_id:
                return info
        return dataclasses.replace(
            self.info,
            state="closed" if result.closed else "exited",
            exit_code=result.exit_code,
            signal=result.signal,
            exited_at=int(time.time() * 1000),
        )

    def _bundle(self) -> dict[str, str]:
        runtime = process_runtime(self.info)
        return {
            "text/plain": view_text(self.info, self.log, runtime),
            "text/html": view_html(self.info, self.log, runtime, self._note),
        }

    #: How often a running view asks for its process's ports and usage (SPEC 11).
    info_interval = 2.0
    _info_at = 0.0

    def _refresh_info(self) -> None:
        """Keep the header's state, restarts, ports and usage current while the process
        waits or runs (SPEC 11: queued, running, restarting)."""
        now = time.monotonic()
        if self.info.state not in LIVE_STATES or now - self._info_at < self.info_interval:
            return
        self._info_at = now
        for info in self.client.list():
            if info.process_id == self.process_id and info.state in LIVE_STATES:
                self.info = info

    def _render(self) -> None:
        if self._stop.is_set():
            return
        self._refresh_info()
        self._publish(self._bundle(), self.display_id, True)
        self.updates += 1


def live_views() -> list[LiveView]:
    """The views whose threads are following a process now."""
    with _views_lock:
        return list(_views.values())


def stop_all_views(cell_id: str | None = None, timeout: float = 1.0) -> None:
    """Stop live views (all, or those of the cell ``cell_id``); join up to ``timeout``.

    A stopped view publishes nothing more at once; its thread ends after its
    current read (at most about a second).
    """
    views = [v for v in live_views() if cell_id is None or v.cell_id == cell_id]
    for view in views:
        view._stop.set()
    deadline = time.monotonic() + timeout
    for view in views:
        view.stop(timeout=max(0.0, deadline - time.monotonic()))

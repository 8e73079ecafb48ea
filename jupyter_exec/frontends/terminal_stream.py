"""Following a process in a terminal (terminal IPython), where no display updates in place.

``%exec --wait`` and ``%attach`` outside a kernel copy the output to
``sys.stdout`` as it comes, through the same long-poll reads a live view uses.
"""

from __future__ import annotations

import sys
import time

from ..render.terminal import StreamDecoder
from ..wire.schema import ReadResult
from .handle import ExecProcess
from .shared import Escalation

__all__ = ["stream_to_terminal"]


def stream_to_terminal(
    handle: ExecProcess, after: int = 0, *, forward: bool = True, timeout: float | None = None
) -> ReadResult:
    """Copy output to ``sys.stdout`` until the process is closed; the last read.

    With ``forward``, Ctrl-C goes to the process (:meth:`ExecProcess.escalate`);
    without, Ctrl-C stops streaming (KeyboardInterrupt). ``timeout`` raises
    ``TimeoutError`` (the process keeps running).
    """
    decoder = StreamDecoder()
    escalation = Escalation(handle.id)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            for page in handle.pages(after, wait=1.0, follow=True):
                text = decoder.decode_chunks(page.chunks)
                if text:
                    sys.stdout.write(text)
                    sys.stdout.flush()
                after = page.cursor
                if page.closed and not page.chunks:
                    return page
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"process {handle.id} still running after {timeout}s")
        except KeyboardInterrupt:
            if not forward:
                raise
            handle.escalate(escalation)  # then follow on from `after`

"""JSON on the wire: messages in and out as UTF-8 bytes (SPEC 1, 5). No I/O.

orjson is the encoder and decoder of the hot path. Measured here (bench
notes in docs/benchmarks.md): a `process/output` notification of a 32 KiB
chunk costs 147 us with `json.dumps`, 44 us with orjson, 54 us with msgspec
and 33 us assembled around the base64 payload (below, which needs no
escaping, so nothing scans it); a 1 MiB `process/read` result 4.2 ms with
`json.dumps`, 0.17 ms with orjson, 0.52 ms with msgspec; parsing a request
2.2 us with `json.loads`, 0.37 us with orjson or msgspec. The base64 of a
32 KiB chunk: 28 us with the stdlib, 1.3 us with pybase64 (SIMD).

A transport may pass its `Framing` (a websocket frame header, a line's
newline): an output notification is then built with it in the same join, so
its 43 KB (a 32 KiB chunk in base64) are copied once between the encoder and
the socket, not once more to frame them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
from pybase64 import b64encode

from .events import Event, OutputEvent
from .schema import event_notification

__all__ = ["Framing", "encode", "encode_event", "encode_output", "frame"]


#: What a transport puts around one message of the given length: (before, after).
Framing = Callable[[int], tuple[bytes, bytes]]


def frame(message: bytes, framing: Framing | None) -> bytes:
    """A message encoded without its transport's framing, framed."""
    if framing is None:
        return message
    before, after = framing(len(message))
    return b"".join((before, message, after))


def encode(message: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(message)
    except TypeError:  # an echoed request id past 64 bits: the stdlib can
        return json.dumps(message, separators=(",", ":")).encode()


def encode_output(
    process_id: str, seq: int, stream: str, data: bytes, framing: Framing | None = None
) -> bytes:
    """`encode(event_notification(OutputEvent(...)))`, byte for byte, without the scan;
    framed by `framing` if given."""
    head = b"".join(
        (
            b'{"jsonrpc":"2.0","method":"process/output","params":{"processId":',
            orjson.dumps(process_id),
            b',"seq":',
            str(seq).encode(),
            b',"stream":"',
            stream.encode(),  # stdout, stderr or pty: nothing to escape
            b'","chunk":"',
        )
    )
    payload = b64encode(data)
    if framing is None:
        return b"".join((head, payload, b'"}}'))
    before, after = framing(len(head) + len(payload) + 3)
    return b"".join((before, head, payload, b'"}}', after))


def encode_event(event: Event) -> bytes:
    """The SPEC 5 notification of a registry event (schema.py), encoded."""
    if isinstance(event, OutputEvent):
        return encode_output(event.process_id, event.seq, event.stream, event.data)
    return encode(event_notification(event))

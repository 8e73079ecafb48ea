"""The wire encoding (codec.py): the fast paths write exactly what the stdlib would."""

from __future__ import annotations

import json

from jupyter_exec.wire.codec import encode, encode_event, event_notification
from jupyter_exec.wire.events import ClosedEvent, ExitedEvent, OutputEvent
from jupyter_exec.wire.protocol import parse_message, request_id_of


def test_output_notification_is_the_plain_json_of_the_notification():
    for event in (
        OutputEvent('a "quoted" \\ id', 7, "stdout", bytes(range(256))),
        OutputEvent("p", 1, "pty", b""),
        ExitedEvent("p", 2, 137, "SIGKILL"),
        ClosedEvent("p", 3),
    ):
        assert json.loads(encode_event(event)) == event_notification(event)


def test_an_id_past_64_bits_is_still_echoed():
    message = {"jsonrpc": "2.0", "id": 2**64, "error": {"code": -32600, "message": "m"}}
    assert json.loads(encode(message)) == message


def test_parsing_agrees_with_the_stdlib_where_orjson_differs():
    big = '{"id": 18446744073709551616, "method": "m", "params": {"x": NaN}}'
    request = parse_message(big)  # orjson refuses NaN, and makes a float of this id
    assert request.id == 2**64 and isinstance(request.id, int)
    assert request_id_of('{"id": 18446744073709551616, "method": 5}') == 2**64

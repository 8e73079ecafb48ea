"""A scripted model on loopback that speaks the Responses API as Server-Sent Events.

Codex (``wire_api = "responses"``) POSTs each turn to ``{base_url}/responses`` and
reads an SSE stream: ``response.created``, any number of
``response.output_item.done`` items, then ``response.completed``. This server
answers each POST with the next step of a script, so a test decides exactly
which tool calls Codex makes and can read what came back from each one.

A script is a list of steps. A step is a callable taking the request body (the
JSON Codex sent, whose ``input`` holds the previous tool outputs) and returning
a list of output items; the helpers below build the items. When the script is
used up the model answers with a final assistant message, which ends the turn.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Item = dict[str, Any]
Step = Callable[[dict[str, Any]], list[Item]]

_ids = itertools.count(1)


def exec_command(cmd: str, *, tty: bool = False, yield_time_ms: int = 5000, **extra: Any) -> Item:
    """A ``function_call`` item for Codex's ``exec_command`` tool."""
    arguments = {"cmd": cmd, "tty": tty, "yield_time_ms": yield_time_ms, **extra}
    return _function_call("exec_command", arguments)


def write_stdin(session_id: int | str, chars: str, *, yield_time_ms: int = 3000) -> Item:
    """A ``function_call`` item for ``write_stdin`` into an interactive session."""
    arguments = {"session_id": int(session_id), "chars": chars, "yield_time_ms": yield_time_ms}
    return _function_call("write_stdin", arguments)


def apply_patch(patch: str) -> Item:
    """A ``custom_tool_call`` item for Codex's freeform ``apply_patch`` tool."""
    return {
        "type": "custom_tool_call",
        "id": f"ctc_{next(_ids)}",
        "call_id": f"call_{next(_ids)}",
        "name": "apply_patch",
        "input": patch,
        "status": "completed",
    }


def assistant_message(text: str) -> Item:
    return {
        "type": "message",
        "role": "assistant",
        "id": f"msg_{next(_ids)}",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def _function_call(name: str, arguments: dict[str, Any]) -> Item:
    return {
        "type": "function_call",
        "id": f"fc_{next(_ids)}",
        "call_id": f"call_{next(_ids)}",
        "name": name,
        "arguments": json.dumps(arguments),
        "status": "completed",
    }


def tool_outputs(body: dict[str, Any]) -> list[str]:
    """The text of every tool output in a request's ``input``, oldest first."""
    outputs: list[str] = []
    for item in body.get("input") or []:
        if item.get("type") in ("function_call_output", "custom_tool_call_output"):
            outputs.append(_output_text(item.get("output")))
    return outputs


def last_output(body: dict[str, Any]) -> str:
    outputs = tool_outputs(body)
    return outputs[-1] if outputs else ""


def session_id_in(text: str) -> int:
    """The interactive session id that ``exec_command`` reports (``session ID N``)."""
    match = re.search(r"session ID (\d+)", text)
    if match is None:
        raise AssertionError(f"no session id in tool output: {text!r}")
    return int(match.group(1))


def _output_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, dict):  # {"content": ..., "success": ...}
        return _output_text(output.get("content"))
    if isinstance(output, list):  # content items [{"type": "input_text", "text": ...}]
        return "".join(part.get("text", "") for part in output if isinstance(part, dict))
    return json.dumps(output)


class ScriptedModel:
    """The HTTP server; ``base_url`` goes into Codex's ``config.toml``."""

    def __init__(self, steps: list[Step | list[Item]] | None = None) -> None:
        self.steps: list[Step | list[Item]] = list(steps or [])
        self.requests: list[dict[str, Any]] = []
        self.final_text = "done"
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> ScriptedModel:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ScriptedModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def script(self, steps: list[Step | list[Item]]) -> None:
        with self._lock:
            self.steps = list(steps)
            self.requests = []

    def _next_items(self, body: dict[str, Any]) -> list[Item]:
        with self._lock:
            self.requests.append(body)
            step = self.steps.pop(0) if self.steps else None
        if step is None:
            return [assistant_message(self.final_text)]
        return step(body) if callable(step) else step

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # e.g. /v1/models: nothing to list
                self._send(200, "application/json", b'{"object": "list", "data": []}')

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if not self.path.rstrip("/").endswith("/responses"):
                    self._send(404, "application/json", b'{"error": "not found"}')
                    return
                try:
                    body = json.loads(raw or b"{}")
                    items = model._next_items(body)
                except Exception as exc:  # the script failed: tell Codex, keep serving
                    items = [assistant_message(f"script error: {exc!r}")]
                self._send(200, "text/event-stream", _sse(items))

            def _send(self, status: int, content_type: str, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler


def _sse(items: list[Item]) -> bytes:
    response_id = f"resp_{next(_ids)}"
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": {"id": response_id}},
    ]
    for index, item in enumerate(items):
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    usage = {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 10,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 20,
    }
    events.append({"type": "response.completed", "response": {"id": response_id, "usage": usage}})
    return "".join(
        f"event: {event['type']}\ndata: {json.dumps(event)}\n\n" for event in events
    ).encode()

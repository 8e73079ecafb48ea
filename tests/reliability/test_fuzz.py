"""Property-based fuzzing of the protocol layer and of a live server (SPEC 1, 2, 7).

Two levels:

- `protocol`: `parse_message`, `request_id_of` and `parse_params` over random and
  malformed input (text, bytes, any JSON, huge numbers, deep nesting, wrong types,
  invalid base64, bad patterns) raise only our own `ExecError`s, never anything else.
- a live `jupyter-exec serve` over real websockets: random frames, random requests
  for every method with random params, invalid UTF-8, oversized frames, and
  interleaved handshakes on several connections. Every request gets one
  well-formed JSON-RPC response (or the connection closes cleanly with a
  websocket close code), the server never dies, and a bystander process started
  before the fuzzing, watched by a connection that stays open throughout, has
  every byte of its output afterwards.

Examples are derandomized (tests/conftest.py) and few, so the module
runs in well under a minute.
"""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from jupyter_exec.rpc import environment, fs_methods
from jupyter_exec.rpc.process_methods import PROCESS_METHODS
from jupyter_exec.wire.errors import ErrorCode, ExecError, InvalidParamsError
from jupyter_exec.wire.protocol import (
    InitializeParams,
    ListParams,
    ProcessParams,
    ReadParams,
    ResizeParams,
    SignalParams,
    StartParams,
    SubscribeParams,
    TerminateParams,
    WriteParams,
    parse_message,
    parse_params,
    request_id_of,
)
from tests.reliability.rawws import RawWebSocket
from tests.service import py, standalone

# -- strategies ----------------------------------------------------------------

huge_ints = st.one_of(
    st.integers(),
    st.sampled_from([2**53, 2**53 + 1, 2**63, 2**64, -(2**63) - 1, 10**300]),
)
floats = st.floats(allow_nan=True, allow_infinity=True)
json_scalars = st.one_of(st.none(), st.booleans(), huge_ints, floats, st.text(max_size=40))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)

FIELDS = [
    "processId", "argv", "cwd", "env", "inheritEnv", "envPolicy", "tty", "pipeStdin", "arg0",
    "size", "lifetime", "label", "afterSeq", "maxBytes", "waitMs", "untilPattern", "chunk",
    "writeId", "eof", "signal", "graceMs", "rows", "cols", "watch", "clientName",
    "resumeSessionId", "path", "recursive", "force",
]  # fmt: skip
#: Processes the fuzzer may create and act on; never the bystander.
FUZZ_IDS = ["f1", "f2", "", "x" * 129, "nope"]
field_values = st.one_of(
    json_values,
    st.sampled_from(FUZZ_IDS),
    st.sampled_from([["true"], ["echo", "hi"], ["no-such-program-xyz"], [], ["/"], [""]]),
    st.sampled_from(["interrupt", "kill", "SIGKILL", "bogus", "(a", "a{99999999999}", "=="]),
    st.text(alphabet="ABCDabcd+/=", max_size=12),  # base64-ish, mostly invalid
)
params_strategy = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=6),
    st.fixed_dictionaries(
        {"processId": st.sampled_from(FUZZ_IDS)},
        optional={k: field_values for k in ("afterSeq", "waitMs", "maxBytes", "chunk", "argv")},
    ),
)
# Mutating fs/* methods are included: the server's root is a fresh temporary directory
# and `--confine-to-root` keeps every fs path (and process cwd) inside it.

METHODS = sorted(
    [
        *PROCESS_METHODS,
        *fs_methods.FS_METHODS,
        *environment.ENVIRONMENT_METHODS,
        "initialize",
        "initialized",
        "process/unknown",
        "",
        "rpc.discover",
    ]
)
ids = st.one_of(
    huge_ints,
    st.text(max_size=20),
    floats,
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
requests = st.builds(
    lambda rid, method, params, jsonrpc, keep: {
        k: v
        for k, v in {"jsonrpc": jsonrpc, "id": rid, "method": method, "params": params}.items()
        if k in keep
    },
    ids,
    st.one_of(st.sampled_from(METHODS), st.text(max_size=20)),
    params_strategy,
    st.sampled_from(["2.0", "1.0", None]),
    st.sets(st.sampled_from(["jsonrpc", "id", "method", "params"]), min_size=1).map(
        lambda s: s | {"method"} if len(s) == 1 else s
    ),
)
frames = st.one_of(
    requests.map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=200),
    st.binary(max_size=200),
    st.sampled_from(
        [
            "[" * 50_000,
            '{"a":' * 50_000,
            '{"id": 1, "method": "process/list", "params": {"watch": tr',
            '{"id": 1e999, "method": "process/list"}',
            '{"id": ' + "9" * 5000 + ', "method": "process/list"}',
            '{"id": NaN, "method": "process/list"}',
            "[]",
            '[{"id": 1, "method": "process/list"}]',
            '{"id": 1, "result": {}}',
            '{"id": 2, "error": {"code": 1}}',
            "\x00",
            "",
            " ",
        ]
    ),
)

KNOWN_CODES = {int(c) for c in ErrorCode}

# -- protocol level --------------------------------------------------------------


@settings(max_examples=300)
@given(st.one_of(st.text(), st.binary(), frames))
def test_parse_message_raises_only_exec_errors(frame):
    try:
        request = parse_message(frame)
    except ExecError as exc:
        assert int(exc.code) in (ErrorCode.PARSE_ERROR, ErrorCode.INVALID_REQUEST)
        assert exc.message
    else:
        assert isinstance(request.method, str)
        assert request.id is None or isinstance(request.id, int | str)
    rid = request_id_of(frame)
    assert rid is None or (isinstance(rid, int | str) and not isinstance(rid, bool))


@settings(max_examples=300)
@given(json_values)
def test_any_json_value_is_a_request_or_a_clear_invalid_request(value):
    try:
        text = json.dumps(value)
    except ValueError:
        return
    try:
        request = parse_message(text)
    except ExecError as exc:
        assert exc.code in (ErrorCode.INVALID_REQUEST, ErrorCode.PARSE_ERROR)
        if isinstance(value, list):
            assert exc.message == "batch requests are not supported"
        return
    assert isinstance(value, dict) and request.method == value["method"]


def test_deep_nesting_and_huge_numbers_are_parse_or_request_errors():
    for frame, code in [
        ("[" * 200_000, ErrorCode.PARSE_ERROR),
        ('{"a":' * 200_000, ErrorCode.PARSE_ERROR),
        ('{"id": ' + "9" * 100_000 + ', "method": "m"}', ErrorCode.PARSE_ERROR),
        ('{"id": 1e999, "method": "m"}', ErrorCode.INVALID_REQUEST),
        ('{"id": -Infinity, "method": "m"}', ErrorCode.INVALID_REQUEST),
    ]:
        with pytest.raises(ExecError) as info:
            parse_message(frame)
        assert info.value.code == code


MODELS = [
    InitializeParams, StartParams, ProcessParams, ReadParams, WriteParams, SignalParams,
    TerminateParams, ResizeParams, SubscribeParams, ListParams,
]  # fmt: skip


@settings(max_examples=400)
@given(st.sampled_from(MODELS), params_strategy)
def test_parse_params_accepts_or_names_the_problem(model, params):
    try:
        parsed = parse_params(model, params)
    except InvalidParamsError as exc:
        assert exc.message and len(exc.message) < 500
        return
    for name in ("after_seq", "max_bytes", "wait_ms", "grace_ms", "rows", "cols"):
        value = getattr(parsed, name, None)
        assert value is None or (type(value) is int and 0 <= value <= 2**53)
    if isinstance(parsed, StartParams):
        assert parsed.argv and all(isinstance(a, str) for a in parsed.argv)
        assert 1 <= len(parsed.process_id) <= 128
    if isinstance(parsed, WriteParams):
        try:
            data = parsed.data()
        except InvalidParamsError:
            pass
        else:
            assert isinstance(data, bytes)
    if isinstance(parsed, SignalParams):
        try:
            parsed.signum()
        except InvalidParamsError as exc:
            assert "unknown signal" in exc.message


@settings(max_examples=300)
@given(st.text(max_size=60))
def test_until_pattern_compiles_or_is_invalid_params(pattern):
    p = ReadParams.model_validate({"processId": "x", "untilPattern": pattern})
    try:
        compiled = p.compiled_pattern()
    except InvalidParamsError as exc:
        assert "untilPattern" in exc.message
    else:
        assert isinstance(compiled, re.Pattern)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # "[[[": possible nested set
def test_pathological_patterns_are_invalid_params_not_crashes():
    for pattern in ["(" * 5000 + ")" * 5000, "a{99999999999}", "[" * 1000, "(?P<", "\\"]:
        p = ReadParams.model_validate({"processId": "x", "untilPattern": pattern})
        with pytest.raises(InvalidParamsError, match="untilPattern"):
            p.compiled_pattern()


# -- a live server -----------------------------------------------------------------

BYSTANDER = "bystander-c0ffee"
BYSTANDER_LINES = 3000
BYSTANDER_CODE = (
    "import sys, time\n"
    f"for i in range({BYSTANDER_LINES}):\n"
    "    sys.stdout.write(f'bystander line {i:05d}\\n'); sys.stdout.flush()\n"
    "    if i % 30 == 0: time.sleep(0.05)\n"
)
BYSTANDER_OUTPUT = "".join(f"bystander line {i:05d}\n" for i in range(BYSTANDER_LINES)).encode()
MAX_MESSAGE = 256 << 10


class Peer:
    """A blocking JSON-RPC peer over a real websocket."""

    def __init__(self, url: str, token: str) -> None:
        self.ws: ClientConnection = connect(
            url,
            additional_headers={"Authorization": f"Bearer {token}"},
            max_size=None,
            close_timeout=1,
        ).__enter__()
        self.ids = 0

    def call(self, method: str, params: Any = None, timeout: float = 10) -> dict[str, Any]:
        self.ids += 1
        rid = f"call-{self.ids}"
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        self.ws.send(json.dumps(msg))
        return self.until(rid, timeout)

    def until(self, rid: object, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if "method" not in msg and msg.get("id") == rid:
                return msg

    def handshake(self) -> dict[str, Any]:
        result = self.call("initialize", {"clientName": "fuzz"})
        self.ws.send(json.dumps({"jsonrpc": "2.0", "method": "initialized"}))
        return result

    def close(self) -> None:
        self.ws.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-root")
    logs = tmp_path_factory.mktemp("fuzz-logs")
    with standalone(
        "--root", str(root), "--confine-to-root", "--log-dir", str(logs), "--max-processes", "8",
        "--max-message-bytes", str(MAX_MESSAGE), "--exited-retention", "5",
        cwd=root,
    ) as server:  # fmt: skip
        observer = Peer(server.bare_url, server.token)
        observer.handshake()
        started = observer.call(
            "process/start",
            {"processId": BYSTANDER, "argv": py(BYSTANDER_CODE), "lifetime": "detached"},
        )
        assert "result" in started, started
        yield server, observer
        observer.close()


def check_response(msg: dict[str, Any]) -> None:
    assert msg.get("jsonrpc") == "2.0"
    assert ("result" in msg) != ("error" in msg), msg
    if "error" in msg:
        err = msg["error"]
        assert err["code"] in KNOWN_CODES, err
        assert isinstance(err["message"], str) and err["message"], err
        assert "Traceback" not in err["message"]


def expected_id(frame: str | bytes) -> tuple[bool, object]:
    """(expects a response with a known id, that id) for a frame we sent.

    Any JSON object with a valid id gets exactly one response carrying it, whether
    it is a good request, a bad one, or not a request at all."""
    try:
        msg = json.loads(frame)
    except (ValueError, RecursionError):
        return False, None
    if not isinstance(msg, dict) or "id" not in msg:
        return False, None
    rid = msg["id"]
    if isinstance(rid, bool) or not isinstance(rid, int | str):
        return False, None
    return True, rid


def exchange(server, sent: list[str | bytes], handshake: bool) -> None:
    """Send the frames, then a sentinel; check every response up to the sentinel."""
    peer = Peer(server.bare_url, server.token)
    try:
        if handshake:
            peer.handshake()
        waiting: list[object] = []
        for frame in sent:
            peer.ws.send(frame)
            has_id, rid = expected_id(frame)
            if has_id:
                waiting.append(rid)
        peer.ws.send(json.dumps({"id": "sentinel", "method": "process/list"}))
        deadline = time.monotonic() + 20
        seen_sentinel = False
        while not seen_sentinel or waiting:
            msg = json.loads(peer.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if "method" in msg:
                continue  # a notification (watch, auto-subscribe)
            check_response(msg)
            if msg["id"] == "sentinel":
                seen_sentinel = True
            elif msg["id"] in waiting:
                waiting.remove(msg["id"])
            else:
                assert msg["id"] is None, msg  # unattributable frames answer with id null
    except ConnectionClosed as exc:
        # The only clean close we expect here is a frame over the size limit.
        assert exc.rcvd is not None and exc.rcvd.code == 1009, exc
        assert any(len(f) > MAX_MESSAGE for f in sent)
    finally:
        peer.close()


@settings(max_examples=200)
@given(st.lists(frames, min_size=1, max_size=8), st.booleans())
def test_live_server_answers_every_frame(live, sent, handshake):
    server, _ = live
    exchange(server, sent, handshake)
    assert server.proc.poll() is None


@settings(max_examples=60)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2),
            st.sampled_from(["initialize", "initialized", "call", "resume-bogus", "resume-other"]),
        ),
        max_size=12,
    )
)
def test_interleaved_handshakes_follow_the_spec(live, steps):
    server, _ = live
    peers = [Peer(server.bare_url, server.token) for _ in range(3)]
    state = [{"session": None, "initialized": False} for _ in peers]
    try:
        for n, step in steps:
            peer, s = peers[n], state[n]
            if step == "initialized":
                peer.ws.send(json.dumps({"method": "initialized"}))
                s["initialized"] = s["session"] is not None
                continue
            if step == "call":
                msg = peer.call("process/list", {})
                if s["session"] is None:
                    assert msg["error"]["message"] == (
                        "client must call initialize before using process methods"
                    )
                elif not s["initialized"]:
                    assert msg["error"]["message"] == (
                        "client must send initialized before using process methods"
                    )
                else:
                    assert "processes" in msg["result"]
                continue
            params: dict[str, Any] = {"clientName": "h"}
            other = next((o["session"] for o in state if o["session"]), None)
            if step == "resume-bogus":
                params["resumeSessionId"] = "no-such-session"
            elif step == "resume-other" and other is not None:
                params["resumeSessionId"] = other
            msg = peer.call("initialize", params)
            check_response(msg)
            if s["session"] is not None:
                assert msg["error"]["message"] == "initialize may only be sent once per connection"
            elif "resumeSessionId" in params:
                assert msg["error"]["code"] == -32600  # unknown, or attached elsewhere
            else:
                s["session"] = msg["result"]["sessionId"]
    finally:
        for peer in peers:
            peer.close()


def test_oversized_frames_close_cleanly_and_others_go_on(live):
    server, observer = live
    for size in (MAX_MESSAGE - 64, MAX_MESSAGE + 1, 4 * MAX_MESSAGE):
        frame = json.dumps({"id": 1, "method": "process/list", "pad": "x" * size})
        peer = Peer(server.bare_url, server.token)
        try:
            peer.ws.send(frame)
            if len(frame) <= MAX_MESSAGE:
                check_response(peer.until(1))
            else:
                with pytest.raises(ConnectionClosed) as info:
                    peer.until(1)
                assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        finally:
            peer.close()
    assert "result" in observer.call("process/list", {})


def test_invalid_utf8_text_frame_closes_cleanly(live):
    server, observer = live
    raw = RawWebSocket(server.bare_url, server.token)
    assert raw.status == 101
    frame = bytes([0x81, 0x80 | 4]) + b"\x00\x00\x00\x00" + b"\xff\xfe\x80\x81"
    raw.sock.sendall(frame)  # a text frame (mask of zeros) that is not UTF-8
    payload = raw.recv_frame()  # the close frame: 1007 invalid data
    assert int.from_bytes(payload[:2], "big") == 1007
    raw.abort()
    assert "result" in observer.call("process/list", {})


def test_zz_bystander_output_is_complete(live):
    """Last in the module: the bystander, its watcher and the server survived it all."""
    server, observer = live
    read = observer.call(
        "process/read", {"processId": BYSTANDER, "waitMs": 60_000, "untilPattern": "line 02999"}
    )
    assert read["result"]["matched"] is True
    data, cursor = b"", 0
    while True:
        r = observer.call("process/read", {"processId": BYSTANDER, "afterSeq": cursor})["result"]
        assert r["firstSeq"] == 1
        if not r["chunks"]:
            break
        data += b"".join(base64.b64decode(c["chunk"]) for c in r["chunks"])
        cursor = r["chunks"][-1]["seq"]
    assert data == BYSTANDER_OUTPUT
    assert server.proc.poll() is None

"""SPEC 2 and 7: handshake order and every bad input get a clear error; nothing else is harmed."""

from __future__ import annotations

import json

from jupyter_exec.wire.errors import ErrorCode
from tests.service import RawPeer, b64, make_service, py


async def test_process_call_before_initialize(tmp_path):
    service = make_service(tmp_path)
    peer = RawPeer(service)
    msg = await peer.call("process/list", {})
    assert msg["error"] == {
        "code": -32600,
        "message": "client must call initialize before using process methods",
    }
    await peer.close()
    await service.aclose()


async def test_process_call_before_initialized_and_second_initialize(tmp_path):
    service = make_service(tmp_path)
    peer = RawPeer(service)
    peer.seen = []
    first = await peer.call("initialize", {"clientName": "t"})
    assert first["result"]["serverInfo"]["name"] == "jupyter-exec"
    assert first["jsonrpc"] == "2.0"
    early = await peer.call("process/list", {})
    assert early["error"]["message"] == "client must send initialized before using process methods"
    assert early["error"]["code"] == -32600
    again = await peer.call("initialize", {"clientName": "t"})
    assert again["error"] == {
        "code": -32600,
        "message": "initialize may only be sent once per connection",
    }
    peer.send("initialized", notify=True)
    ok = await peer.call("process/list", {})
    assert ok["result"] == {"processes": []}
    await peer.close()
    await service.aclose()


DEEP = '{"id": 11, "method": "process/read", "params": ' + "[" * 1500 + "]" * 1500 + "}"


def _deep_outcome() -> tuple[int, int | None]:
    """Python 3.13's json parses 1500 levels (a bad `params` then); older ones give up."""
    try:
        json.loads(DEEP)
    except RecursionError:
        return -32700, None
    return -32602, 11


async def test_malformed_frames_get_errors_and_the_connection_keeps_serving(tmp_path):
    service = make_service(tmp_path, max_message_bytes=4096)
    peer = RawPeer(service)
    await peer.handshake()
    await peer.call(
        "process/start",
        {
            "processId": "bystander",
            "argv": py("import time; print('alive', flush=True); time.sleep(30)"),
        },
    )

    cases = [
        ("{not json", -32700, None),
        ("[]", -32600, None),
        ('[{"id": 1, "method": "process/list"}]', -32600, None),
        ("42", -32600, None),
        ('{"id": 7, "method": 5}', -32600, 7),
        ('{"id": {"x": 1}, "method": "process/list"}', -32600, None),
        ('{"id": 8, "method": "no/such"}', -32601, 8),
        ('{"id": 9, "result": 1}', -32600, 9),
        ("[" * 100_000 + "]" * 100_000, -32600, None),  # oversized (and deeply nested)
        ('{"id": 10, "method": "process/read", "params": [1]}', -32602, 10),
        ("x" * 5000, -32600, None),
        (DEEP, *_deep_outcome()),
    ]
    for frame, code, rid in cases:
        peer.send_raw(frame)
        msg = await peer.response(rid)
        assert msg["error"]["code"] == code, (frame[:40], msg)
        assert msg["error"]["message"]
    big = await peer.call("process/list", {})
    assert [p["processId"] for p in big["result"]["processes"]] == ["bystander"]
    read = await peer.call("process/read", {"processId": "bystander", "waitMs": 5000})
    assert b"alive" in b"".join(
        __import__("base64").b64decode(c["chunk"]) for c in read["result"]["chunks"]
    )
    await peer.close()
    await service.aclose()


async def test_invalid_params_are_32602_naming_the_field(tmp_path):
    service = make_service(tmp_path)
    peer = RawPeer(service)
    await peer.handshake()
    await peer.call("process/start", {"processId": "p", "argv": ["cat"], "pipeStdin": True})
    bad = [
        ("process/start", {"processId": "x", "argv": []}, "argv"),
        ("process/start", {"processId": "x", "argv": "ls"}, "argv"),
        ("process/start", {"processId": "", "argv": ["ls"]}, "processId"),
        ("process/start", {"processId": "x" * 129, "argv": ["ls"]}, "processId"),
        ("process/start", {"processId": 5, "argv": ["ls"]}, "processId"),
        ("process/start", {"processId": "x", "argv": ["ls"], "tty": "yes"}, "tty"),
        ("process/start", {"processId": "x", "argv": ["ls"], "env": {"A": 1}}, "env"),
        (
            "process/start",
            {"processId": "x", "argv": ["ls"], "cwd": str(tmp_path / "missing")},
            "cwd",
        ),
        (
            "process/start",
            {"processId": "x", "argv": ["ls"], "cwd": str(tmp_path / "missing"), "tty": True},
            "cwd",
        ),
        (
            "process/start",
            {"processId": "x", "argv": ["no-such-program-xyz"]},
            "no-such-program-xyz",
        ),
        (
            "process/start",
            {"processId": "x", "argv": ["no-such-program-xyz"], "tty": True},
            "no-such-program-xyz",
        ),
        ("process/start", {"processId": "x", "argv": ["ls"], "lifetime": "forever"}, "lifetime"),
        ("process/read", {"processId": "p", "afterSeq": -1}, "afterSeq"),
        ("process/read", {"processId": "p", "afterSeq": 1.5}, "afterSeq"),
        ("process/read", {"processId": "p", "maxBytes": -5}, "maxBytes"),
        ("process/read", {"processId": "p", "waitMs": "10"}, "waitMs"),
        ("process/read", {"processId": "p", "waitMs": 10**30}, "waitMs"),
        ("process/read", {"processId": "p", "untilPattern": "("}, "untilPattern"),
        ("process/write", {"processId": "p", "chunk": "!!!notbase64"}, "base64"),
        ("process/signal", {"processId": "p", "signal": "SIGFOO"}, "signal"),
        ("process/resize", {"processId": "p", "rows": 0, "cols": 80}, "rows"),
        ("process/terminate", {"processId": "p", "graceMs": -1}, "graceMs"),
    ]
    for method, params, needle in bad:
        msg = await peer.call(method, params)
        assert msg.get("error", {}).get("code") == ErrorCode.INVALID_PARAMS, (method, params, msg)
        assert needle in msg["error"]["message"], (needle, msg["error"]["message"])
    # nothing was started by the bad calls, and the good process still works
    listed = await peer.call("process/list", {})
    assert [p["processId"] for p in listed["result"]["processes"]] == ["p"]
    w = await peer.call("process/write", {"processId": "p", "chunk": b64(b"ok\n")})
    assert w["result"] == {"status": "accepted"}
    await peer.close()
    await service.aclose()


async def test_unknown_process_and_duplicate_ids(tmp_path):
    service = make_service(tmp_path)
    peer = RawPeer(service)
    await peer.handshake()
    for method in (
        "process/read",
        "process/signal",
        "process/resize",
        "process/subscribe",
        "process/unsubscribe",
    ):
        params = {"processId": "ghost", "signal": "kill", "rows": 5, "cols": 5}
        msg = await peer.call(method, params)
        assert msg["error"] == {"code": -32600, "message": "unknown process id ghost"}, method
    w = await peer.call("process/write", {"processId": "ghost", "chunk": ""})
    assert w["result"] == {"status": "unknownProcess"}
    t = await peer.call("process/terminate", {"processId": "ghost"})
    assert t["result"] == {"running": False}
    await peer.call("process/start", {"processId": "a", "argv": py("import time; time.sleep(30)")})
    dup = await peer.call("process/start", {"processId": "a", "argv": ["true"]})
    assert dup["error"] == {
        "code": -32600,
        "message": "process a already exists",
        "data": {"kind": "processExists", "processId": "a"},  # typed: no text matching
    }
    other = RawPeer(service)
    await other.handshake()
    dup2 = await other.call("process/start", {"processId": "a", "argv": ["true"]})
    assert dup2["error"]["message"] == "process a already exists"  # ids are server-wide
    resize = await peer.call("process/resize", {"processId": "a", "rows": 5, "cols": 5})
    assert resize["error"] == {"code": -32600, "message": "process a is not a tty process"}
    await other.close()
    await peer.close()
    await service.aclose()


async def test_too_many_processes_is_a_clear_error_and_harms_nothing(tmp_path):
    service = make_service(tmp_path, max_processes=2)
    peer = RawPeer(service)
    await peer.handshake()
    for name in ("a", "b"):
        await peer.call(
            "process/start", {"processId": name, "argv": py("import time; time.sleep(30)")}
        )
    full = await peer.call("process/start", {"processId": "c", "argv": ["true"]})
    assert full["error"] == {
        "code": -32600,
        "message": "too many processes: 2 already running through the test front (max_processes)",
        "data": {"kind": "tooManyProcesses", "limit": 2, "front": "the test front"},
    }
    listed = await peer.call("process/list", {})
    assert {p["state"] for p in listed["result"]["processes"]} == {"running"}
    await peer.call("process/terminate", {"processId": "a", "graceMs": 100})
    await service.registry.get("a").closed.wait()
    ok = await peer.call("process/start", {"processId": "c", "argv": ["true"]})
    assert ok["result"]["processId"] == "c"
    await peer.close()
    await service.aclose()


async def test_unknown_fields_are_ignored_and_codex_fields_accepted(tmp_path, monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "leak")
    # `envPolicy` marks an agent: without agent_sandbox none it would be sandboxed
    # (tests/sandbox), which is not what this test is about.
    service = make_service(tmp_path, agent_sandbox="none")
    peer = RawPeer(service)
    await peer.handshake()
    msg = await peer.call(
        "process/start",
        {
            "processId": "codex-1",
            "argv": ["sh", "-c", "echo $FROM_SET-$FROM_ENV-${SECRET_TOKEN:-none}"],
            "metadata": {"threadId": "t", "toolCallId": "call_9"},
            "sandbox": None,
            "enforceManagedNetwork": False,
            "managedNetwork": None,
            "envPolicy": {
                "inherit": "all",
                "ignoreDefaultExcludes": False,
                "exclude": [],
                "set": {"FROM_SET": "s"},
                "includeOnly": [],
            },
            "env": {"FROM_ENV": "zq9", "PATH": "/usr/bin:/bin"},
            "futureField": {"anything": [1, 2]},
        },
    )
    assert msg["result"] == {"processId": "codex-1", "sandboxType": "none"}
    read = await peer.call("process/read", {"processId": "codex-1", "waitMs": 5000})
    await service.registry.get("codex-1").closed.wait()
    read = await peer.call("process/read", {"processId": "codex-1"})
    out = b"".join(__import__("base64").b64decode(c["chunk"]) for c in read["result"]["chunks"])
    assert out == b"s-zq9-none\n"  # default excludes drop *TOKEN*
    info = (await peer.call("process/list", {}))["result"]["processes"][0]
    assert info["label"] == "codex: call_9"
    assert "env" not in info and "zq9" not in json.dumps(info)
    await peer.close()
    await service.aclose()

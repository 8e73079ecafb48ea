"""handlers.py's output download (REST mirror, SPEC 8) across several 1-MiB pages."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from tornado.httpclient import HTTPClientError

from tests.jupyter.test_extension import open_rpc
from tests.service import NUMBERED, assert_numbered, py


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"jupyter_exec": True}, "allow_root": True}}


async def output(jp_fetch, process_id: str, **params: str) -> bytes:
    got = await jp_fetch("api", "exec", "processes", process_id, "output", params=params)
    assert got.headers["Content-Type"] == "application/octet-stream"
    return bytes(got.body)


async def run_to_close(jp_fetch, process_id: str, argv: list[str]) -> dict:
    """Start through the REST mirror; the ProcessInfo once the process is closed."""
    body = json.dumps({"processId": process_id, "argv": argv})
    assert (await jp_fetch("api", "exec", "processes", method="POST", body=body)).code == 201
    deadline = asyncio.get_running_loop().time() + 120  # a busy machine is slow
    while True:
        info = json.loads((await jp_fetch("api", "exec", "processes", process_id)).body)
        if info["state"] == "closed" or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)
    assert info["state"] == "closed" and info["exitCode"] == 0, info
    return dict(info)


async def test_download_of_more_than_2_mib_has_every_line_once(jp_fetch, jp_ws_fetch):
    info = await run_to_close(jp_fetch, "numbered", NUMBERED)

    got = await jp_fetch("api", "exec", "processes", "numbered", "output")
    whole = bytes(got.body)
    assert got.headers["X-Exec-First-Seq"] == "1"  # nothing dropped: no gap's line either
    assert len(whole) > 2 << 20
    assert_numbered(whole.decode())
    assert await output(jp_fetch, "numbered", stream="stdout") == whole
    assert await output(jp_fetch, "numbered", stream="stderr") == b""

    # From a cursor: only what follows it (the first chunk, then the download).
    rpc = await open_rpc(jp_ws_fetch)
    first = (await rpc.call("process/read", {"processId": "numbered", "maxBytes": 1}))["result"]
    chunk = first["chunks"][0]
    rest = await output(jp_fetch, "numbered", afterSeq=str(chunk["seq"]))
    assert_numbered((base64.b64decode(chunk["chunk"]) + rest).decode())
    assert await output(jp_fetch, "numbered", afterSeq=str(info["nextSeq"])) == b""
    rpc.ws.close()


@pytest.fixture
def small_logs(jp_config_dir):
    """The exec daemon's logs capped at 64 KiB (`jupyter_exec_daemon.json`, read when it
    starts: request this before `jp_fetch`, which starts the server and the daemon)."""
    settings = {"log_bytes_per_process": 64 << 10}
    (jp_config_dir / "jupyter_exec_daemon.json").write_text(json.dumps(settings))


async def test_a_download_says_where_a_retention_limit_dropped_output(small_logs, jp_fetch):
    """SPEC 6: past `log_bytes_per_process` the oldest output goes. The download does not
    pass over it in silence: a line of its own where it is missing names the seqs, and
    `X-Exec-First-Seq` is `firstSeq` (SPEC 4), as for `process/read`."""
    lines = 100_000  # about 590 KB of output, nine times the cap
    info = await run_to_close(jp_fetch, "long", py(f"for i in range({lines}): print(i)"))
    first_seq = info["firstSeq"]
    assert first_seq > 1, info
    gap = f"[jupyter-exec: output seqs 1-{first_seq - 1} dropped by a retention limit]\n"

    got = await jp_fetch("api", "exec", "processes", "long", "output")
    assert got.headers["X-Exec-First-Seq"] == str(first_seq)
    text = bytes(got.body).decode()
    assert text.startswith(gap)
    kept = text[len(gap) :]
    assert 0 < len(kept) <= 64 << 10
    # Whole chunks were dropped, not whole lines: the first line kept may be a line's end.
    after_cut = kept.split("\n", 1)[1]
    first_line = int(after_cut.split("\n", 1)[0])
    assert after_cut == "".join(f"{i}\n" for i in range(first_line, lines))

    # The gap is output of either stream; a cursor past it sees none.
    assert (await output(jp_fetch, "long", stream="stdout")).decode() == text
    assert (await output(jp_fetch, "long", stream="stderr")).decode() == gap
    past = await jp_fetch("api", "exec", "processes", "long", "output",
                          params={"afterSeq": str(first_seq - 1)})  # fmt: skip
    assert past.headers["X-Exec-First-Seq"] == str(first_seq)
    assert bytes(past.body).decode() == kept
    await jp_fetch("api", "exec", "processes", "long", method="DELETE")


async def test_download_errors_are_clear_and_harm_nothing(jp_fetch):
    body = json.dumps({"processId": "kept", "argv": ["sleep", "30"]})
    await jp_fetch("api", "exec", "processes", method="POST", body=body)
    for params, code, message in (
        ({"afterSeq": "x"}, 400, "afterSeq must be a non-negative integer"),
        ({"afterSeq": "-1"}, 400, "afterSeq must be >= 0 and stream one of stdout, stderr, pty"),
        ({"stream": "both"}, 400, "afterSeq must be >= 0 and stream one of stdout, stderr, pty"),
    ):
        with pytest.raises(HTTPClientError) as err:
            await output(jp_fetch, "kept", **params)
        assert err.value.code == code
        assert err.value.response is not None
        assert json.loads(err.value.response.body)["message"] == message
    with pytest.raises(HTTPClientError) as err:
        await output(jp_fetch, "nobody")
    assert err.value.code == 404
    info = json.loads((await jp_fetch("api", "exec", "processes", "kept")).body)
    assert info["state"] == "running"
    await jp_fetch("api", "exec", "processes", "kept", method="DELETE")


async def test_rest_mirror_shows_a_queued_process_and_its_schedule(jp_fetch):
    """SPEC 8 and 11: POST takes `queue`/`after`/`restart`; ProcessInfo carries them."""
    processes = ("api", "exec", "processes")
    first = {"processId": "slot", "argv": ["sleep", "30"], "queue": "rest"}
    body = {"processId": "waits", "argv": ["true"], "queue": "rest", "after": ["slot"]}
    body["restart"] = {"policy": "on-failure", "maxRestarts": 2}
    assert (await jp_fetch(*processes, method="POST", body=json.dumps(first))).code == 201
    made = await jp_fetch(*processes, method="POST", body=json.dumps(body))
    info = json.loads(made.body)
    assert made.code == 201 and (info["state"], info["pid"]) == ("queued", None)
    assert (info["queue"], info["after"], info["restarts"]) == ("rest", ["slot"], 0)
    assert info["restartPolicy"] == {"policy": "on-failure", "maxRestarts": 2, "delayMs": 1000}
    bad = {"processId": "bad", "argv": ["true"], "after": ["nobody"]}
    with pytest.raises(HTTPClientError) as refused:
        await jp_fetch(*processes, method="POST", body=json.dumps(bad))
    assert refused.value.code == 400
    await jp_fetch(*processes, "waits", method="DELETE")  # never started: ended, removed
    await jp_fetch(*processes, "slot", method="DELETE")
    assert json.loads((await jp_fetch(*processes)).body) == []

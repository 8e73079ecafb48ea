"""SPEC 10 through the `mcp` SDK's own client, over stdio and over streamable HTTP."""

from __future__ import annotations

import asyncio
import re
import shlex
import urllib.error
import urllib.request

import pytest

from tests.magics.jupyter_process import clean_env
from tests.service import NUMBERED, assert_numbered, free_port

from .conftest import mcp_session, stdio_session, text_of

both = pytest.mark.parametrize("transport", ["stdio", "http"])

TOOLS = {
    "run_command",
    "start_process",
    "read_output",
    "send_input",
    "signal_process",
    "terminate_process",
    "list_processes",
    "wait_process",
}


@both
async def test_run_command_and_list(server, transport):
    async with mcp_session(server, transport) as s:
        assert {t.name for t in (await s.list_tools()).tools} == TOOLS
        r = await s.call_tool("run_command", {"command": "echo out; echo err >&2; exit 3"})
        assert not r.is_error
        sc = r.structured_content
        assert sc["exit_code"] == 3 and sc["running"] is False and sc["truncated"] is False
        assert sc["output"] == "out\nerr\n" and "exit code: 3" in text_of(r)
        pid = sc["process_id"]
        listed = await s.call_tool("list_processes", {})
        rows = {p["process_id"]: p for p in listed.structured_content["processes"]}
        assert rows[pid]["exit_code"] == 3 and pid in text_of(listed)
        # An ordinary process of the registry: the REST mirror lists it.
        rest = {p["processId"]: p for p in server.request("GET", "api/exec/processes")}
        assert rest[pid]["label"].startswith("mcp: echo out") and rest[pid]["exitCode"] == 3


@both
async def test_large_output_is_bounded_to_head_and_tail(server, transport):
    async with mcp_session(server, transport) as s:
        r = await s.call_tool("run_command", {"command": "seq 1 200000"})
        sc, text = r.structured_content, text_of(r)
        assert sc["exit_code"] == 0 and sc["truncated"] is True
        assert text.startswith("1\n2\n3\n") and "199999\n200000\n" in text
        assert len(sc["output"]) < 21_000
        total = sum(len(f"{i}\n") for i in range(1, 200001))
        assert sc["omitted_bytes"] > 0 and len(sc["output"].encode()) < total
        note = next(line for line in text.splitlines() if "bytes left out" in line)
        assert f"{sc['omitted_bytes']} bytes left out" in note and "after_seq=" in note
        # The named cursor gives back exactly what follows the head.
        after = int(note.split("after_seq=")[1].split(")")[0])
        more = await s.call_tool(
            "read_output", {"process_id": sc["process_id"], "after_seq": after, "max_chars": 200}
        )
        head_end = sc["output"].split("\n[...")[0]
        assert more.structured_content["truncated"] is True
        assert (head_end + more.structured_content["output"]).startswith(head_end)


@both
async def test_run_command_timeout_leaves_it_running(server, transport):
    async with mcp_session(server, transport) as s:
        r = await s.call_tool(
            "run_command",
            {"command": "echo started; sleep 30", "timeout_seconds": 0.5},
        )
        sc = r.structured_content
        assert sc["running"] is True and sc["exit_code"] is None and sc["output"] == "started\n"
        assert f"still running as {sc['process_id']}" in text_of(r)
        pid = sc["process_id"]
        again = await s.call_tool("read_output", {"process_id": pid})
        assert again.structured_content["running"] is True
        stop = await s.call_tool("terminate_process", {"process_id": pid})
        assert stop.structured_content["exit_code"] == 143 and not stop.is_error


@both
async def test_start_process_wait_for_then_read_and_signal(server, transport):
    async with mcp_session(server, transport) as s:
        script = "echo booting; sleep 0.3; echo 'Listening on 8123'; sleep 30"
        r = await s.call_tool(
            "start_process",
            {"command": script, "wait_for": "Listening on \\d+", "wait_seconds": 20},
        )
        sc = r.structured_content
        assert sc["matched"] is True and sc["running"] is True
        assert sc["output"] == "booting\nListening on 8123\n"
        pid = sc["process_id"]
        signalled = await s.call_tool("signal_process", {"process_id": pid, "signal": "interrupt"})
        assert not signalled.is_error
        done = await s.call_tool(
            "read_output",
            {"process_id": pid, "after_seq": sc["next_seq"] - 1, "wait_seconds": 20},
        )
        ended = done.structured_content
        while ended["running"]:
            await asyncio.sleep(0.1)
            ended = (await s.call_tool("read_output", {"process_id": pid})).structured_content
        assert ended["exit_code"] == 130 and ended["signal"] == "SIGINT"


@both
async def test_send_input_to_a_python_repl(server, transport):
    async with mcp_session(server, transport) as s:
        r = await s.call_tool(
            "start_process",
            {"command": "python3 -i -q", "process_id": f"repl-{transport}", "wait_for": ">>> "},
        )
        assert r.structured_content["matched"] is True
        answer = await s.call_tool(
            "send_input",
            {"process_id": f"repl-{transport}", "text": "print(6 * 7)", "wait_seconds": 10},
        )
        assert "42" in answer.structured_content["output"]
        assert answer.structured_content["running"] is True
        bye = await s.call_tool(
            "send_input",
            {"process_id": f"repl-{transport}", "text": "", "eof": True, "wait_seconds": 10},
        )
        assert not bye.is_error
        end = await s.call_tool(
            "read_output",
            {"process_id": f"repl-{transport}", "after_seq": 2**40, "wait_seconds": 10},
        )
        assert end.structured_content["exit_code"] == 0


@both
async def test_tty_output_is_rendered_as_a_terminal_shows_it(server, transport):
    async with mcp_session(server, transport) as s:
        script = r"printf 'progress 10%%\rprogress 99%%\rdone        \n\033[31mred\033[0m\n'"
        r = await s.call_tool("start_process", {"command": script, "tty": True})
        out = r.structured_content["output"]
        assert out.splitlines() == ["done", "red"], out


@both
async def test_bad_arguments_are_tool_errors_and_the_session_lives_on(server, transport):
    async with mcp_session(server, transport) as s:
        cases = [
            (
                "read_output",
                {"process_id": "no-such-process"},
                "unknown process id no-such-process",
            ),
            ("terminate_process", {"process_id": "no-such-process"}, "unknown process id"),
            (
                "signal_process",
                {"process_id": "no-such-process", "signal": "kill"},
                "unknown process",
            ),
            (
                "start_process",
                {"command": "true", "wait_for": "(unclosed"},
                "wait_for is not a valid regular expression",
            ),
            (
                "run_command",
                {"command": "true", "cwd": "/no/such/dir"},
                "cwd '/no/such/dir' does not exist",
            ),
            ("run_command", {"command": "true", "timeout_seconds": -1}, "timeout_seconds"),
            ("run_command", {}, "command"),
            ("run_command", {"command": "   "}, "command is empty"),
            ("wait_process", {"process_ids": ["no-such-process"]}, "unknown process id"),
            ("wait_process", {"process_ids": []}, "process_ids"),
            ("wait_process", {"process_ids": ["x"], "timeout_seconds": -1}, "timeout_seconds"),
        ]
        for tool, args, expected in cases:
            r = await s.call_tool(tool, args)
            assert r.is_error, (tool, args)
            assert expected in text_of(r), (tool, text_of(r))
        done = await s.call_tool("run_command", {"command": "sleep 0; echo fine"})
        assert done.structured_content["output"] == "fine\n"
        pid = done.structured_content["process_id"]
        r = await s.call_tool("signal_process", {"process_id": pid, "signal": "bogus"})
        assert r.is_error and "unknown signal 'bogus'" in text_of(r)
        r = await s.call_tool("read_output", {"process_id": pid, "until_pattern": "[z-a]"})
        assert r.is_error and "until_pattern is not a valid regular expression" in text_of(r)
        r = await s.call_tool("send_input", {"process_id": pid, "text": "x"})
        assert r.is_error and "does not take input" in text_of(r)
        assert not (await s.call_tool("list_processes", {})).is_error


def test_http_endpoint_refuses_without_a_token(server):
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
    for headers in ({}, {"Authorization": "token wrong"}):
        req = urllib.request.Request(
            server.url + "api/exec/mcp",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", **headers},
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=30)
        assert info.value.code in (401, 403)


async def test_stdio_embedded_when_asked_runs_processes_itself(tmp_path):
    env = clean_env(tmp_path)  # an empty runtime dir: no server to find
    notices = tmp_path / "stderr.txt"
    async with stdio_session(["mcp", "--embedded"], env, notices) as s:
        r = await s.call_tool("run_command", {"command": "echo embedded"})
        assert r.structured_content["output"] == "embedded\n"
    said = notices.read_text()
    assert "asked for with --embedded; processes run in this process and end with it" in said
    assert not list(tmp_path.glob("jupyter-exec-*"))  # no daemon was started


async def test_stdio_with_an_unreachable_server_answers_tool_errors(tmp_path):
    args = ["mcp", "--url", f"http://127.0.0.1:{free_port()}/", "--token", "x"]
    async with stdio_session(args, clean_env(tmp_path), tmp_path / "stderr.txt") as s:
        for _ in range(2):  # each call tries again; the session stays up
            r = await s.call_tool("list_processes", {})
            assert r.is_error and "cannot reach the jupyter-exec server" in text_of(r)


@both
async def test_read_output_until_pattern_and_until_idle(server, transport):
    async with mcp_session(server, transport) as s:
        script = "sleep 0.3; echo one; echo two; sleep 0.2; echo three; sleep 30"
        r = await s.call_tool("start_process", {"command": script, "wait_seconds": 0})
        pid = r.structured_content["process_id"]
        first = await s.call_tool(
            "read_output", {"process_id": pid, "until_pattern": "tw.", "wait_seconds": 20}
        )
        assert first.structured_content["matched"] is True
        assert first.structured_content["output"].startswith("one\n")
        cursor = first.structured_content["next_seq"] - 1
        quiet = await s.call_tool(
            "read_output",
            {"process_id": pid, "after_seq": 0, "wait_seconds": 20, "until_idle_seconds": 2},
        )
        assert quiet.structured_content["output"] == "one\ntwo\nthree\n"
        assert quiet.structured_content["running"] is True and cursor >= 1
        await s.call_tool("terminate_process", {"process_id": pid})


async def test_read_output_pages_through_more_than_2_mib(server):
    """An agent keeps each head and reads on from the cursor its note names: every line once."""
    async with mcp_session(server, "http") as s:
        done = (
            await s.call_tool("run_command", {"command": shlex.join(NUMBERED)})
        ).structured_content
        assert done["exit_code"] == 0 and done["truncated"] is True
        text, cursor, calls = "", 0, 0
        while True:
            args = {"process_id": done["process_id"], "after_seq": cursor, "max_chars": 1_000_000}
            page = (await s.call_tool("read_output", args)).structured_content
            calls += 1
            if not page["truncated"]:
                text += page["output"]
                break
            head, note = page["output"].split("\n[... ", 1)
            text += head
            cursor = int(re.search(r"after_seq=(\d+)\) \.\.\.\]", note).group(1))
        assert_numbered(text)
        assert calls >= 3 and page["next_seq"] > cursor + 1


async def test_wait_process_answers_after_the_exit_not_before(server):
    async with mcp_session(server, "stdio") as s:
        slow = await s.call_tool(
            "start_process", {"command": "sleep 1.5; echo done; exit 4", "wait_seconds": 0}
        )
        quick = await s.call_tool("run_command", {"command": "echo quick"})
        ids = [slow.structured_content["process_id"], quick.structured_content["process_id"]]
        early = await s.call_tool("wait_process", {"process_ids": ids, "timeout_seconds": 0.2})
        assert not early.is_error
        first, second = early.structured_content["processes"]
        assert first["running"] is True and first["exit_code"] is None
        assert second == {"process_id": ids[1], "running": False, "exit_code": 0,
                          "signal": None, "output_tail": "quick\n"}  # fmt: skip
        started = asyncio.get_running_loop().time()
        r = await s.call_tool("wait_process", {"process_ids": ids, "timeout_seconds": 30})
        assert asyncio.get_running_loop().time() - started > 0.5  # it waited for the exit
        first = r.structured_content["processes"][0]
        assert first["exit_code"] == 4 and first["output_tail"] == "done\n"
        assert f"== {ids[0]}: exit code: 4" in text_of(r)
        listed = await s.call_tool("list_processes", {})
        row = next(p for p in listed.structured_content["processes"] if p["process_id"] == ids[0])
        assert row["origin"] == {"kind": "agent", "name": "mcp (MCP)"}  # the SDK client's name


async def test_start_process_waits_for_its_port_and_list_processes_tells_the_cost(server):
    (server.root_dir / "mcp-served.txt").write_text("hi")
    async with mcp_session(server, "http") as s:
        r = await s.call_tool(
            "start_process",
            {"command": "exec python3 -m http.server 0 --bind 127.0.0.1", "wait_for_port": True,
             "wait_seconds": 30},
        )  # fmt: skip
        assert not r.is_error, text_of(r)
        [port] = r.structured_content["ports"]
        assert port["url"] == f"/proxy/{port['port']}/" and port["url"] in text_of(r)
        link = urllib.request.Request(
            server.url + port["url"].lstrip("/"),
            headers={"Authorization": f"token {server.token}"},
        )
        page = await asyncio.to_thread(lambda: urllib.request.urlopen(link, timeout=30).read())
        assert b"mcp-served.txt" in page
        pid = r.structured_content["process_id"]
        listed = await s.call_tool("list_processes", {})
        row = next(p for p in listed.structured_content["processes"] if p["process_id"] == pid)
        # An agent's process is sandboxed (agent_sandbox): its server listens in the sandbox's
        # network namespace, reached through a host port (docs/sandbox.md); the usage counts
        # the sandbox's two supervisors besides python.
        assert row["ports"] == [port] and row["usage"]["processes"] == 3
        assert row["usage"]["rss_bytes"] > 1 << 20
        # Streamable HTTP here is stateless: no clientInfo is kept to name the agent by.
        assert row["origin"] == {"kind": "agent", "name": "MCP client"}
        await s.call_tool("terminate_process", {"process_id": pid})


async def test_start_process_restarts_queues_and_waits_for_dependencies(server):
    async with mcp_session(server, "http") as s:
        flaky = await s.call_tool(
            "start_process",
            {"command": "echo run; exit 3", "process_id": "mcp-flaky", "restart": "on-failure",
             "max_restarts": 2, "restart_delay_ms": 20, "wait_seconds": 0},
        )  # fmt: skip
        assert not flaky.is_error, text_of(flaky)
        r = await s.call_tool("wait_process", {"process_ids": ["mcp-flaky"]})
        assert r.structured_content["processes"][0]["exit_code"] == 3
        assert r.structured_content["processes"][0]["output_tail"] == "run\nrun\nrun\n"
        # A queue of one: the second waits, and says so at once.
        for name in ("mcp-q1", "mcp-q2"):
            started = await s.call_tool(
                "start_process",
                {"command": "sleep 30", "process_id": name, "queue": "mcp-slot", "wait_seconds": 0},
            )
            assert not started.is_error, text_of(started)
        sc = started.structured_content
        assert (sc["state"], sc["queue"], sc["running"]) == ("queued", "mcp-slot", False)
        assert text_of(started).startswith("queued mcp-q2 (queue mcp-slot)")
        after = await s.call_tool(
            "start_process", {"command": "echo no", "process_id": "mcp-after", "after": ["mcp-q1"]}
        )
        assert text_of(after).startswith("queued mcp-after (after mcp-q1)")
        rows = {
            p["process_id"]: p
            for p in (await s.call_tool("list_processes", {})).structured_content["processes"]
        }
        assert rows["mcp-flaky"]["restarts"] == 2
        assert rows["mcp-flaky"]["restart_policy"] == {
            "policy": "on-failure", "max_restarts": 2, "delay_ms": 20
        }  # fmt: skip
        assert (rows["mcp-q2"]["state"], rows["mcp-q2"]["pid"]) == ("queued", None)
        assert (rows["mcp-after"]["queue"], rows["mcp-after"]["after"]) == (None, ["mcp-q1"])
        stopped = await s.call_tool("terminate_process", {"process_id": "mcp-q2"})
        assert text_of(stopped) == "mcp-q2 was queued: it ends without starting"
        await s.call_tool("terminate_process", {"process_id": "mcp-q1"})
        ended = await s.call_tool("wait_process", {"process_ids": ["mcp-after"]})
        assert "== mcp-after: never started" in text_of(ended)
        failed = next(
            p
            for p in (await s.call_tool("list_processes", {})).structured_content["processes"]
            if p["process_id"] == "mcp-after"
        )
        assert "mcp-q1" in failed["failure"] and failed["exit_code"] is None


async def test_bad_scheduling_arguments_are_tool_errors_and_nothing_starts(server):
    async with mcp_session(server, "http") as s:
        before = (await s.call_tool("list_processes", {})).structured_content["processes"]
        for args, expected in [
            ({"restart": "sometimes"}, "restart"),
            ({"max_restarts": 2}, "max_restarts needs restart='on-failure' or restart='always'"),
            ({"restart_delay_ms": 5}, "restart_delay_ms needs restart="),
            ({"restart": "always", "restart_delay_ms": -1}, "restart_delay_ms"),
            ({"restart": "always", "max_restarts": -1}, "max_restarts"),
            ({"queue": ""}, "queue"),
            ({"after": ["nosuch"]}, "unknown process id 'nosuch'"),
            ({"after": ["mcp-bad"]}, "the process itself"),
        ]:
            r = await s.call_tool(
                "start_process", {"command": "true", "process_id": "mcp-bad", **args}
            )
            assert r.is_error and expected in text_of(r), (args, text_of(r))
        after = (await s.call_tool("list_processes", {})).structured_content["processes"]
        assert len(after) == len(before)

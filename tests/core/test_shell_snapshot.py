"""Shell snapshots (`process/start` `shellSnapshot`, core/shell_snapshot.py) with real shells.

Each profile here appends a line to ``$HOME/sourced.log`` whenever it is
sourced, so a test counts how often the profile ran; the behaviour checked is
what Codex 0.171's own server did with the same profile (docs/codex.md), which
tests/codex/test_differential_shell.py compares side by side.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from jupyter_exec.core import shell_snapshot
from tests.core.shell_profile import BASHRC, PROFILE, SHOW
from tests.sandbox.harness import needs_sandbox, outside_tmp, run
from tests.service import RawPeer, connected

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    (path / ".bash_profile").write_text(PROFILE)
    (path / ".bashrc").write_text(BASHRC)
    return path


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    (path / "a-file").write_text("")
    return path


def snapshot(
    scope: str = "scope-1", name: str = "bash", path: str = "/bin/bash"
) -> dict[str, object]:
    return {"scopeId": scope, "shell": {"name": name, "path": path}}


def sourced(home: Path) -> list[str]:
    """What was sourced since the last call."""
    log = home / "sourced.log"
    lines = log.read_text().split() if log.exists() else []
    log.write_text("")
    return lines


async def bash(peer: RawPeer, home: Path, work: Path, snap: object, **params: object) -> str:
    env = {"HOME": str(home), "PATH": os.environ["PATH"], "CALLER": "c1"}
    env.update(params.pop("env", {}))  # type: ignore[call-overload]
    outcome = await run(
        peer, ["/bin/bash", "-lc", params.pop("command", SHOW)], cwd=str(work), env=env,
        shellSnapshot=snap, **params,
    )  # fmt: skip
    assert "result" in outcome.started, outcome.started
    return outcome.output


async def test_the_profile_runs_once_per_scope_and_its_state_is_replayed(
    tmp_path: Path, home: Path, work: Path
) -> None:
    async with connected(tmp_path) as peer:
        first = await bash(peer, home, work, snapshot())
        # As Codex's server: the login profile, the .bashrc it sources, then .bashrc again
        # (the interactive startup file); none of it on the scope's next command.
        assert sourced(home) == ["profile", "bashrc", "bashrc"]
        ours = os.umask(0o22)
        os.umask(ours)
        replayed = f"FP=profile-value FR=rc-value CALLER=c1 pwd={work} umask={ours:04o} opts=fhBc\n"
        assert first.startswith(replayed), first  # the cwd and umask stay the command's
        assert "greet x\nalias hi='echo alias-hi'\n*\n0\n" in first  # function, alias, noglob
        assert "profile-noise" not in first
        assert await bash(peer, home, work, snapshot()) == first
        assert sourced(home) == []
        listed = (await peer.call("process/list", {}))["result"]["processes"]
        assert [p["argv"] for p in listed] == [["/bin/bash", "-lc", SHOW]] * 2  # as asked
        assert await bash(peer, home, work, snapshot("scope-2")) == first  # another scope
        assert sourced(home) == ["profile", "bashrc", "bashrc"]
        plain = await bash(peer, home, work, None)  # no snapshot: a login shell, as asked
        assert sourced(home) == ["profile", "bashrc"]
        assert plain.startswith(
            "profile-noise\nFP=profile-value FR=rc-value CALLER=c1 pwd=/ umask=0027"
        )


async def test_what_the_request_names_wins_over_the_snapshot(
    tmp_path: Path, home: Path, work: Path
) -> None:
    async with connected(tmp_path) as peer:
        env = {"FROM_PROFILE": "asked"}
        assert (await bash(peer, home, work, snapshot(), env=env)).startswith(
            "FP=asked FR=rc-value"
        )
        second = await bash(peer, home, work, snapshot(), env={"CALLER": "c2"})
        assert second.startswith("FP=profile-value FR=rc-value CALLER=c2 ")  # same scope, new env
        assert sourced(home) == ["profile", "bashrc", "bashrc"]  # not captured again
        tty = await bash(peer, home, work, snapshot(), tty=True)  # a tty command replays it too
        assert tty.startswith("FP=profile-value") and sourced(home) == []
        term = await bash(peer, home, work, snapshot(), tty=True, command='echo "$TERM"')
        assert term == "xterm-256color\n"  # SPEC 4's TERM for a tty, not the snapshot's


async def test_a_managed_proxy_variables_are_not_replayed(
    tmp_path: Path, home: Path, work: Path
) -> None:
    """As Codex's server: a snapshot taken under a managed network proxy forgets that
    proxy's variables, so a later command of the scope gets only its own."""
    with (home / ".bashrc").open("a") as rc:
        rc.write("export http_proxy=http://from-profile NO_PROXY=x\n")
    async with connected(tmp_path) as peer:
        show = 'echo "$HTTP_PROXY|$http_proxy|$NO_PROXY|$CODEX_NETWORK_PROXY_ACTIVE|$FROM_RC"'
        env = {"CODEX_NETWORK_PROXY_ACTIVE": "1", "HTTP_PROXY": "http://asked"}
        first = await bash(peer, home, work, snapshot(), command=show, env=env)
        assert first == "http://asked|||1|rc-value\n"  # what the request names stays
        assert await bash(peer, home, work, snapshot(), command=show) == "||||rc-value\n"


async def test_a_large_state_travels_whole(tmp_path: Path, home: Path, work: Path) -> None:
    """Over `CHUNK_BYTES` of multi-byte text: several chunks, no character split."""
    wide = "é" * (shell_snapshot.CHUNK_BYTES * 3 // 4)  # 2 bytes each: 1.5 chunks
    with (home / ".bashrc").open("a") as rc:
        rc.write(f"wide() {{ echo {wide}; }}\n")
    async with connected(tmp_path) as peer:
        for _ in range(2):
            out = await bash(peer, home, work, snapshot(), command="wide | sha256sum")
            assert out.split()[0] == hashlib.sha256(f"{wide}\n".encode()).hexdigest()
        assert sourced(home) == ["profile", "bashrc", "bashrc"]


@pytest.mark.parametrize("prefix", ["", "a", "ab"])
def test_the_state_is_cut_between_characters(prefix: str) -> None:
    state = prefix + "€" * shell_snapshot.CHUNK_BYTES  # 3 bytes each: a cut could fall inside
    chunks = shell_snapshot._chunks(state)
    sizes = [len(chunk.encode()) for chunk in chunks]
    assert "".join(chunks) == state and len(chunks) == 3 + (prefix != "")
    assert all(
        shell_snapshot.CHUNK_BYTES - 3 < size <= shell_snapshot.CHUNK_BYTES for size in sizes[:-1]
    )


async def test_starts_at_once_share_one_capture(tmp_path: Path, home: Path, work: Path) -> None:
    async with connected(tmp_path) as peer:
        env = {"HOME": str(home), "PATH": os.environ["PATH"]}
        ids = [
            peer.send("process/start", {"processId": f"p{n}", "argv": ["/bin/bash", "-lc", SHOW],
                                        "cwd": str(work), "env": env, "shellSnapshot": snapshot()})
            for n in range(3)
        ]  # fmt: skip
        for request_id in ids:
            assert "result" in await peer.response(request_id, timeout=30)
        for n in range(3):
            read = {"processId": f"p{n}", "waitMs": 10000, "untilPattern": "\n0\n"}
            assert (await peer.call("process/read", read))["result"]["matched"]
        assert sourced(home) == ["profile", "bashrc", "bashrc"]


async def test_a_scope_includes_the_cwd_and_the_env_policy(
    home: Path, work: Path, tmp_path: Path
) -> None:
    async with connected(tmp_path) as peer:
        await bash(peer, home, work, snapshot())
        await bash(peer, home, tmp_path, snapshot())
        policy = {"inherit": "all", "exclude": ["FROM_RC"], "includeOnly": [], "set": {},
                  "ignoreDefaultExcludes": True}  # fmt: skip
        filtered = await bash(peer, home, work, snapshot(), envPolicy=policy)
        assert sourced(home) == ["profile", "bashrc", "bashrc"] * 3
        assert filtered.startswith("FP=profile-value FR= ")  # the policy's exclude holds


async def test_snapshots_are_bounded_per_session(tmp_path: Path, home: Path, work: Path) -> None:
    async with connected(tmp_path) as peer:
        for n in range(shell_snapshot.MAX_SNAPSHOTS + 1):
            await bash(peer, home, work, snapshot(f"s{n}"), command="true")
        assert len(sourced(home)) == 3 * (shell_snapshot.MAX_SNAPSHOTS + 1)
        await bash(peer, home, work, snapshot(f"s{shell_snapshot.MAX_SNAPSHOTS}"), command="true")
        assert sourced(home) == []  # the newest is kept
        await bash(peer, home, work, snapshot("s0"), command="true")
        assert len(sourced(home)) == 3  # the oldest was let go: captured again


async def test_a_failed_capture_runs_the_command_as_asked_and_is_retried_a_few_times(
    tmp_path: Path, home: Path, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with connected(tmp_path) as peer:
        monkeypatch.setattr(shell_snapshot, "MAX_CAPTURE_BYTES", 64)  # every capture is too big
        monkeypatch.setattr(shell_snapshot, "RETRY_SECONDS", 1.0)
        capture, command = ["profile", "bashrc", "bashrc"], ["profile", "bashrc"]
        outputs = []
        for pause in (0, 0, 1.1, 1.1, 1.1):  # the second start comes within the backoff
            await asyncio.sleep(pause)
            outputs.append(await bash(peer, home, work, snapshot(), command="echo $FROM_PROFILE"))
        assert outputs == ["profile-noise\nprofile-value\n"] * 5  # each ran as a login shell
        # attempts 1 (first start), 2 and 3 (after the backoff), then none: 3 at most
        assert sourced(home) == [*capture, *command, *command, *capture, *command, *capture,
                                 *command, *command]  # fmt: skip


async def test_a_missing_shell_is_the_start_own_error(tmp_path: Path, work: Path) -> None:
    async with connected(tmp_path) as peer:
        missing = str(tmp_path / "no-such-bash")
        bad = await run(peer, [missing, "-lc", "true"], cwd=str(work),
                        shellSnapshot=snapshot(path=missing))  # fmt: skip
        assert bad.started["error"]["code"] == -32602 and "no-such-bash" in str(bad.started)
        fine = await run(peer, ["echo", "fine"], cwd=str(work))
        assert fine.output == "fine\n"


async def test_a_capture_over_time_is_stopped_and_the_command_runs(
    tmp_path: Path, home: Path, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with connected(tmp_path) as peer:
        monkeypatch.setattr(shell_snapshot, "CAPTURE_TIMEOUT", 0.3)
        (home / ".bashrc").write_text(
            BASHRC + '[ -n "$SLOW" ] && sleep 0.6 && echo late >> "$HOME/sourced.log"\n'
        )
        out = await bash(peer, home, work, snapshot(), command="echo ran", env={"SLOW": "1"})
        assert out == "profile-noise\nran\n"
        # the capture was killed before it wrote `late`; the command's own startup wrote it
        assert sourced(home) == ["profile", "bashrc", "profile", "bashrc", "late"]


BAD = [
    ({"scopeId": "", "shell": {"name": "bash", "path": "/bin/bash"}}, "-lc",
     "shell snapshot scope must be non-empty and at most 256 bytes"),
    ({"scopeId": "é" * 129, "shell": {"name": "bash", "path": "/bin/bash"}}, "-c",
     "shell snapshot scope must be non-empty and at most 256 bytes"),
    ({"scopeId": "s", "shell": {"name": "fish", "path": "/bin/bash"}}, "-lc",
     "shell snapshots are unsupported for shell `fish`"),
    ({"scopeId": "s"}, "-lc", "invalid shellSnapshot.shell"),
    ({"scopeId": 5, "shell": {"name": "bash", "path": "/bin/bash"}}, "-lc",
     "invalid shellSnapshot.scopeId"),
    ("abc", "-lc", "invalid shellSnapshot"),
]  # fmt: skip


@pytest.mark.parametrize(("snap", "flag", "message"), BAD, ids=[m for _, _, m in BAD])
async def test_bad_snapshots_are_invalid_params_and_harm_nothing(
    tmp_path: Path, home: Path, work: Path, snap: object, flag: str, message: str
) -> None:
    async with connected(tmp_path) as peer:
        env = {"HOME": str(home), "PATH": os.environ["PATH"]}
        bad = await run(
            peer, ["/bin/bash", flag, "echo x"], cwd=str(work), env=env, shellSnapshot=snap
        )
        assert bad.started["error"]["code"] == -32602 and message in bad.started["error"]["message"]
        assert (await peer.call("process/list", {}))["result"]["processes"] == []
        assert await bash(peer, home, work, snapshot(), command="echo fine") == "fine\n"


@pytest.mark.parametrize(
    ("argv", "snap", "each"),
    [
        (["/bin/bash", "-c", "echo $FROM_PROFILE."], snapshot(name="fish"), []),  # not -lc
        (["/bin/bash", "-lc", "echo $FROM_PROFILE."], snapshot(path="/usr/bin/bash"),
         ["profile", "bashrc"]),
        (["/bin/bash", "-lc"], snapshot(), []),  # no command
    ],
    ids=["not-lc", "other-shell-path", "no-command"],
)  # fmt: skip
async def test_a_command_the_snapshot_does_not_fit_runs_as_asked(
    tmp_path: Path, home: Path, work: Path, argv: list[str], snap: object, each: list[str]
) -> None:
    async with connected(tmp_path) as peer:
        env = {"HOME": str(home), "PATH": os.environ["PATH"]}
        outcome = await run(peer, argv, cwd=str(work), env=env, shellSnapshot=snap)
        plain = await run(peer, argv, cwd=str(work), env=env)
        assert outcome.output == plain.output and outcome.exit_code == plain.exit_code
        assert sourced(home) == each * 2  # no capture: only each command's own startup


async def test_sh_and_its_env_file(tmp_path: Path, home: Path, work: Path) -> None:
    async with connected(tmp_path) as peer:
        (home / ".profile").write_text('echo sh-profile >> "$HOME/sourced.log"\nexport P=1\n')
        (home / ".shrc").write_text('echo shrc >> "$HOME/sourced.log"\nexport R=2\nset -o noglob\n')
        env = {"HOME": str(home), "PATH": os.environ["PATH"], "ENV": "$HOME/.shrc"}
        snap = snapshot(name="sh", path="/bin/sh")
        for _ in range(2):
            out = await run(peer, ["/bin/sh", "-lc", "echo P=$P R=$R *"], cwd=str(work), env=env,
                            shellSnapshot=snap)  # fmt: skip
            assert out.output == "P=1 R=2 *\n", out
        assert sourced(home) == ["sh-profile", "shrc"]  # once: the login profile, then $ENV


async def test_the_capture_runs_in_the_command_sandbox(
    tmp_path: Path, home: Path, work: Path
) -> None:
    async with connected(tmp_path) as peer:
        needs_sandbox()
        with outside_tmp() as outside:
            (home / ".bashrc").write_text(BASHRC + f'echo planted > "{outside}/planted"\n')
            out = await bash(peer, home, work, snapshot(), command="echo $FROM_RC",
                             sandbox="workspace-write")  # fmt: skip
            assert out == "rc-value\n"
            assert not (outside / "planted").exists()  # its profile ran sandboxed, as the command
            await bash(peer, home, work, snapshot(), command="true")
            assert (outside / "planted").exists()  # another scope (no sandbox): captured unboxed

"""What a sandbox allows and denies, for real processes, on tty and pipe children (SPEC 4).

Each denial is checked beside the same attempt without a sandbox (or with the
network on), so that a test whose attempt could never succeed would fail.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from jupyter_exec.core.sandbox import private_tmp_mountpoint

from .harness import outside_tmp, run, session

pytestmark = pytest.mark.timeout(120)
TTY = pytest.mark.parametrize("tty", [False, True], ids=["pipe", "tty"])


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


WRITES = 'echo in > inside.txt; echo out > "$1/outside.txt"; echo t > "$TMPDIR/t.txt"; echo done'


@TTY
async def test_workspace_write_writes_in_its_cwd_and_tmp_only(
    tmp_path: Path, work: Path, tty: bool
) -> None:
    async with session(tmp_path) as peer:
        with outside_tmp() as outside:
            argv = ["bash", "-c", WRITES, "sh", str(outside)]
            free = await run(peer, argv, cwd=str(work), tty=tty)
            assert free.sandbox_type == "none" and (outside / "outside.txt").exists()
            (outside / "outside.txt").unlink()

            boxed = await run(peer, argv, cwd=str(work), tty=tty, sandbox="workspace-write")
            assert boxed.sandbox_type == "linuxSeccomp", boxed
            assert (work / "inside.txt").read_text() == "in\n"
            assert not (outside / "outside.txt").exists()
            assert "Permission denied" in boxed.output and "done" in boxed.output
            assert boxed.exit_code == 0 and boxed.sandbox_denied is False  # the last command won


@TTY
async def test_read_only_writes_only_a_private_tmp(tmp_path: Path, work: Path, tty: bool) -> None:
    async with session(tmp_path) as peer:
        probe = tmp_path / "ro-probe"  # under /tmp, writable in workspace-write
        script = f"echo in > inside.txt; echo p > {probe}; echo t > $TMPDIR/t && cat $TMPDIR/t"
        boxed = await run(peer, ["bash", "-c", script], cwd=str(work), tty=tty, sandbox="read-only")
        assert not (work / "inside.txt").exists() and not probe.exists()
        assert boxed.output.count("Permission denied") == 2 and "t\n" in boxed.output
        # Private: what it wrote in its tmp is gone, and was never in the shared directory.
        assert os.listdir(private_tmp_mountpoint()) == []


@TTY
async def test_no_sandbox_reaches_the_hosts_loopback(tmp_path: Path, tty: bool) -> None:
    async with session(tmp_path) as peer:
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen(8)
            port = server.getsockname()[1]
            code = (
                "import socket\n"
                f"try: socket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
                "except OSError as e: print(type(e).__name__, e); raise SystemExit(1)\n"
                "print('CONNECTED')\n"
            )
            argv = [sys.executable, "-c", code]
            free = await run(peer, argv, tty=tty, sandbox=None)
            assert "CONNECTED" in free.output, free
            # With the network on, its loopback is its own (core/sandbox_net.py): refused.
            on = await run(
                peer, argv, tty=tty, sandbox={"mode": "workspace-write", "network": True}
            )
            assert "ConnectionRefusedError" in on.output, on
            off = {"mode": "workspace-write", "network": False}
            denied = await run(peer, argv, tty=tty, sandbox=off)
            assert "PermissionError [Errno 13] Permission denied" in denied.output, denied
            assert denied.exit_code == 1 and denied.sandbox_denied is True


@TTY
async def test_descendants_inherit_the_sandbox(tmp_path: Path, work: Path, tty: bool) -> None:
    """A grandchild that left the session and the process group is still confined."""
    async with session(tmp_path) as peer:
        with outside_tmp() as outside:
            target = outside / "from-grandchild.txt"
            grandchild = f"import os; os.setsid(); open({str(target)!r}, 'w').write('x')"
            code = (
                "import subprocess, sys\n"
                f"r = subprocess.run([sys.executable, '-c', {grandchild!r}], capture_output=True)\n"
                "print('grandchild exit', r.returncode, r.stderr.decode().strip().splitlines()[-1:])\n"
            )
            boxed = await run(peer, [sys.executable, "-c", code], cwd=str(work), tty=tty,
                              sandbox="workspace-write")  # fmt: skip
            assert "grandchild exit 1" in boxed.output and "PermissionError" in boxed.output
            assert not target.exists()
            free = await run(peer, [sys.executable, "-c", code], cwd=str(work), tty=tty)
            assert "grandchild exit 0" in free.output and target.exists()


async def test_sandbox_denied_only_for_failures_that_read_like_refusals(
    tmp_path: Path, work: Path
) -> None:
    async with session(tmp_path) as peer:
        box = {"cwd": str(work), "sandbox": "read-only"}
        assert (await run(peer, ["true"], **box)).sandbox_denied is False
        assert (await run(peer, ["bash", "-c", "exit 3"], **box)).sandbox_denied is False
        assert (await run(peer, ["bash", "-c", "no-such-program"], **box)).sandbox_denied is False
        assert (await run(peer, ["bash", "-c", "touch x"], **box)).sandbox_denied is True
        # The same refusal words from an unsandboxed process are its own business.
        said = await run(peer, ["bash", "-c", "echo Permission denied; exit 1"], cwd=str(work))
        assert said.sandbox_denied is False


async def test_the_process_list_shows_each_sandbox(tmp_path: Path, work: Path) -> None:
    async with session(tmp_path) as peer:
        await run(peer, ["true"], cwd=str(work), sandbox={"mode": "read-only", "network": False})
        await run(peer, ["true"], cwd=str(work), sandbox="workspace-write")
        await run(peer, ["true"], cwd=str(work))
        listed = (await peer.call("process/list", {}))["result"]["processes"]
        sandboxes = [p["sandbox"] for p in listed]
        assert sandboxes[0] == {"mode": "read-only", "network": False, "writableRoots": []}
        assert sandboxes[1]["mode"] == "workspace-write" and sandboxes[1]["network"] is True
        assert (
            str(work) in sandboxes[1]["writableRoots"] and "/tmp" in sandboxes[1]["writableRoots"]
        )
        assert sandboxes[2] is None


async def test_protected_paths_stay_read_only_and_in_place(
    tmp_path: Path, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Codex's `.git` entries, and Jupyter's config even when it lies in the workspace."""
    async with session(tmp_path) as peer:
        (work / ".git").mkdir()
        config = work / "home" / ".jupyter"
        monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(config))  # created, then protected
        codex_like = {
            "permissions": {
                "type": "managed",
                "network": "restricted",
                "file_system": {
                    "type": "restricted",
                    "entries": [
                        {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"},
                        {"path": {"type": "special", "value": {"kind": "project_roots"}},
                         "access": "write"},
                        {"path": {"type": "special", "value": {"kind": "project_roots",
                                                               "subpath": ".git"}},
                         "access": "read", "missing_path_behavior": "skip"},
                    ],
                },
            },
            "workspaceRoots": [work.as_uri()],
        }  # fmt: skip
        script = (
            "echo ok > file.txt; echo x > .git/hooks-post; echo y > home/.jupyter/jupyter_server_config.py;"
            " mv home moved; mv .git git2; ls -d home/.jupyter .git"
        )
        boxed = await run(peer, ["bash", "-c", script], cwd=str(work), sandbox=codex_like)
        assert (work / "file.txt").exists()
        assert not (work / ".git" / "hooks-post").exists()
        assert not (config / "jupyter_server_config.py").exists() and config.is_dir()
        assert boxed.output.count("Read-only file system") == 2, boxed.output
        assert boxed.output.count("Device or resource busy") == 2, boxed.output  # pinned
        assert (work / ".git").is_dir() and (work / "home").is_dir()


async def test_a_write_grant_on_root_keeps_devices_carve_outs_and_hidden_dirs(
    tmp_path: Path, work: Path
) -> None:
    """Codex's `linuxRootWritePreservesDevices` and `linuxApprovedRootWritePreservesRestrictions`:
    what its own server did with this object (recorded in docs/sandbox.md), checked here."""
    async with session(tmp_path) as peer:
        (work / ".git").mkdir()
        entry = {"path": {"type": "special", "value": {"kind": "root"}}, "access": "write"}
        git = {"path": {"type": "special", "value": {"kind": "project_roots", "subpath": ".git"}},
               "access": "read", "missing_path_behavior": "skip"}  # fmt: skip
        codex_like = {
            "permissions": {"type": "managed", "network": "restricted",
                            "file_system": {"type": "restricted", "entries": [entry, git]}},
            "workspaceRoots": [work.as_uri()],
        }  # fmt: skip
        runtime = os.environ["JUPYTER_RUNTIME_DIR"]
        with outside_tmp() as outside:
            script = (
                f'exec 2>&1; echo o > "{outside}/o.txt"; echo n > /dev/null && echo null-ok;'
                " head -c 3 /dev/urandom | wc -c; head -c 2 /dev/zero | wc -c;"
                f' ls -A "{runtime}" | wc -l; echo g > .git/x; echo r > "{runtime}/planted";'
                f" {sys.executable} -c \"import socket; socket.create_connection(('127.0.0.1', 9))\""
            )
            boxed = await run(peer, ["bash", "-c", script], cwd=str(work), sandbox=codex_like)
            assert boxed.sandbox_type == "linuxSeccomp", boxed
            assert (outside / "o.txt").read_text() == "o\n"  # the grant holds outside the workspace
        assert "null-ok\n3\n2\n0\n" in boxed.output, boxed.output  # devices work; runtime empty
        assert not (work / ".git" / "x").exists() and "Read-only file system" in boxed.output
        assert not (Path(runtime) / "planted").exists()
        assert "PermissionError" in boxed.output  # the network stays off

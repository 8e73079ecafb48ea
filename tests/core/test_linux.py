"""Linux only: every way in refuses another OS at start-up with one clear sentence."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import jupyter_exec
from jupyter_exec.core.linux import linux_refusal, require_linux
from jupyter_exec.daemon import server
from jupyter_exec.frontends import cli
from jupyter_exec.transports import serve
from jupyter_exec.wire.errors import JupyterExecError, UnsupportedPlatformError

MESSAGE = (
    "runs on Linux only (it needs pidfd, splice, SO_PEERCRED, Landlock and /proc), not on darwin"
)


@pytest.fixture
def darwin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")


def test_linux_passes() -> None:
    assert sys.platform.startswith("linux")
    assert linux_refusal("this test") is None
    require_linux("this test")  # no error


def test_another_os_is_refused_by_the_check(darwin: None) -> None:
    assert linux_refusal("this test") == f"this test {MESSAGE}"
    with pytest.raises(UnsupportedPlatformError) as caught:
        require_linux("this test")
    assert str(caught.value) == f"this test {MESSAGE}"
    assert isinstance(caught.value, JupyterExecError)


def test_the_server_extension_and_the_magics_refuse_to_load(darwin: None) -> None:
    with pytest.raises(UnsupportedPlatformError, match="the jupyter-exec server extension runs"):
        jupyter_exec._jupyter_server_extension_points()
    with pytest.raises(UnsupportedPlatformError, match="%load_ext jupyter_exec runs on Linux"):
        jupyter_exec.load_ipython_extension(object())  # never touched: refused before


def test_the_cli_and_the_standalone_server_say_so_and_exit_2(
    darwin: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.main(["ps"]) == 2
    assert capsys.readouterr().err == f"jupyter-exec {MESSAGE}\n"
    assert cli.main(["serve", "--root", str(tmp_path)]) == 2  # its subcommands too
    assert capsys.readouterr().err == f"jupyter-exec {MESSAGE}\n"
    assert serve.main(["--listen", "stdio", "--root", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"jupyter-exec serve {MESSAGE}\n"


def test_the_daemon_answers_its_starter_with_the_reason(
    darwin: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    runtime = tmp_path / "runtime"
    assert server.main([str(runtime)]) == 1
    assert capsys.readouterr().out == f"error: the jupyter-exec daemon {MESSAGE}\n"
    assert not runtime.exists()  # refused before it made anything

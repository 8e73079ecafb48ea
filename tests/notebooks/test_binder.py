"""binder/postBuild installs jupyter-exec, panel included, into a fresh environment.

What Binder (repo2docker) does, minus conda: a fresh venv gets the pip
packages of binder/environment.yml, then binder/postBuild runs in a clean copy
of the repository (the files git would check out: no node_modules, no built
panel), with that venv first on PATH. Afterwards both halves are installed and
enabled without any `jupyter ... enable` by hand. Needs node/npm, as the
environment.yml's `nodejs` provides on Binder; takes a couple of minutes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BINDER = REPO / "binder"


def environment_pip_packages() -> list[str]:
    spec = yaml.safe_load((BINDER / "environment.yml").read_text())
    for dep in spec["dependencies"]:
        if isinstance(dep, dict) and "pip" in dep:
            return [str(p) for p in dep["pip"]]
    return []


def test_binder_files() -> None:
    spec = yaml.safe_load((BINDER / "environment.yml").read_text())
    conda = [d for d in spec["dependencies"] if isinstance(d, str)]
    assert any(d.startswith("nodejs") for d in conda), "the panel build needs node"
    assert any(d.startswith("python") for d in conda)
    assert "jupyterlab" in " ".join(environment_pip_packages())
    assert os.access(BINDER / "postBuild", os.X_OK)
    assert os.access(BINDER / "run-lab.sh", os.X_OK)


def checkout_copy(dest: Path) -> Path:
    """The files a fresh clone has (tracked, plus new files not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, check=True, capture_output=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.mark.timeout(900)
def test_postbuild_installs_into_a_fresh_venv(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to copy from")
    assert shutil.which("npm"), (
        "node/npm is needed to build the panel (Binder: nodejs in environment.yml)"
    )
    repo = checkout_copy(tmp_path / "repo")
    assert not (repo / "jupyter_exec" / "labextension").exists()  # really built from source

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_dir = venv / "bin"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JUPYTER", "JPY_", "VIRTUAL_ENV", "PYTHON", "PIP_"))
    }
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        # Only the venv's own Jupyter paths count, not this machine's user config.
        JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
        JUPYTER_DATA_DIR=str(tmp_path / "jupyter-data"),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )

    def run(*cmd: str) -> str:
        done = subprocess.run(
            cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-6000:]}"
        return done.stdout

    run(str(bin_dir / "python"), "-m", "pip", "install", "-q", *environment_pip_packages())
    run("bash", str(repo / "binder" / "postBuild"))

    assert (venv / "etc/jupyter/jupyter_server_config.d/jupyter_exec.json").is_file()
    assert (venv / "share/jupyter/labextensions/jupyter-exec/package.json").is_file()
    servers = run(str(bin_dir / "jupyter"), "server", "extension", "list")
    plain = re.sub(r"\x1b\[[0-9;]*m", "", servers)
    assert re.search(r"jupyter_exec enabled", plain), servers
    assert re.search(r"jupyter_exec \S+ OK", plain), servers  # imported and validated
    labs = run(str(bin_dir / "jupyter"), "labextension", "list")
    line = re.sub(r"\x1b\[[0-9;]*m", "", labs)
    assert re.search(r"jupyter-exec v\S+ enabled OK", line), labs
    assert str(venv) in labs  # installed into this environment, not found elsewhere
    run(str(bin_dir / "python"), "-c", "import jupyter_exec.frontends.magics, tqdm, ipykernel")

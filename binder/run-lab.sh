#!/usr/bin/env bash
# `make run`: JupyterLab with jupyter-exec on this machine, opened at notebook 1.
# Local counterpart of the Binder setup in this directory. Listens on 127.0.0.1
# only, with a fresh random token; prints the URL to open. Ctrl-C stops it.
#   JUPYTER=path/to/venv/bin/jupyter  PORT=8888  binder/run-lab.sh
set -euo pipefail
cd "$(dirname "$0")/.."
JUPYTER=${JUPYTER:-.venv/bin/jupyter}
PORT=${PORT:-8888}
NOTEBOOK=notebooks/01-getting-started.ipynb
BIN=$(cd "$(dirname "$JUPYTER")" && pwd)
# As if the environment were activated: kernels, terminals and %exec commands
# find its `python` and `jupyter-exec` first.
export PATH="$BIN:$PATH"
TOKEN=$("$BIN/python" -c 'import secrets; print(secrets.token_hex(24))')

args=(
  lab
  --ServerApp.ip=127.0.0.1
  "--ServerApp.port=$PORT"
  "--ServerApp.root_dir=$PWD"
  "--IdentityProvider.token=$TOKEN"
  "--LabApp.default_url=/lab/tree/$NOTEBOOK"
)
[ "$(id -u)" = 0 ] && args+=(--allow-root)  # containers and CI machines often run as root
# Open a browser only where there is a screen to show it on.
if [ -z "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && [ "$(uname)" != Darwin ]; then
  args+=(--no-browser)
fi

# Jupyter logs its URL with the token masked (and moves the port up if $PORT is taken):
# print that URL in full once.
"$JUPYTER" "${args[@]}" 2>&1 | {
  shown=
  while IFS= read -r line; do
    printf '%s\n' "$line"
    if [ -z "$shown" ] && [[ $line == *http://127.0.0.1:*"?token="* ]]; then
      shown=yes  # Jupyter masks a token it was given; print the full URL once
      url=${line##* }
      printf '\n  jupyter-exec is running. Open this URL (Ctrl-C to stop):\n\n    %s\n\n' \
        "${url%%\?token=*}?token=$TOKEN"
    fi
  done
}

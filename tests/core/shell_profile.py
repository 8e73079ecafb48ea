"""The login profile the shell-snapshot tests source (tests/core/test_shell_snapshot.py
and, side by side with Codex's server, tests/codex/test_differential_shell.py).

The profile appends a line to ``$HOME/sourced.log`` whenever it is sourced, so a
test counts how often it ran; `SHOW` prints what a snapshot must carry over.
"""

PROFILE = """echo profile >> "$HOME/sourced.log"
export FROM_PROFILE=profile-value
alias hi='echo alias-hi'
greet() { echo "greet $1"; }
set -o noglob
umask 027
cd /
echo profile-noise
[ -f "$HOME/.bashrc" ] && . "$HOME/.bashrc"
"""
BASHRC = 'echo bashrc >> "$HOME/sourced.log"\nexport FROM_RC=rc-value\n'
SHOW = (
    'echo "FP=$FROM_PROFILE FR=$FROM_RC CALLER=$CALLER pwd=$(pwd) umask=$(umask) opts=$-";'
    " greet x; alias; echo *; env | grep -c SNAPSHOT_STATE"
)

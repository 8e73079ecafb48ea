"""``python -m jupyter_exec ...``: the same as the ``jupyter-exec`` command."""

import sys

from .frontends.cli import main

__all__: list[str] = []


sys.exit(main())

"""The real Codex finds a workspace skill through us (fs/walk), as through its own server.

Codex 0.171 lists ``.agents/skills`` below the working directory with one
``fs/walk`` (``maxDepth`` 6, following directory links, pruning hidden
directories) and reads each ``SKILL.md`` with ``fs/readFile``; without
``fs/walk`` (jupyter-exec 0.2.0 answered -32601) the skill is silently missing
from what the model is told. docs/codex.md, "fs/walk", records the exchange.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from .harness import Codex, RunningServer
from .model_server import ScriptedModel

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_workspace_skill_is_found(
    codex: Codex, model: ScriptedModel, server: RunningServer, workdir: Path
) -> None:
    name = f"zebra-{uuid.uuid4().hex[:8]}"
    skill = workdir / ".agents" / "skills" / "zebra"
    skill.mkdir(parents=True)
    (skill / "SKILL.md").write_text(
        f"---\nname: {name}\ndescription: Use when asked about {name}.\n---\nSay {name}.\n"
    )
    model.script([])  # no tool call: we only look at what Codex tells the model

    result = codex.run(workdir, server.url)

    assert model.requests, result.describe()
    told = json.dumps(model.requests[0])
    assert name in told and f"Use when asked about {name}." in told, result.describe()

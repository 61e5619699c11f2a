"""The Python examples of docs/neurons.md run as written, in order (a new user found one that used an undefined
name: docs that do not run are not true)."""
from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "neurons.md"


def test_neurons_doc_examples_run_in_order():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 10
    env: dict = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{DOC.name} python block {i}", "exec"), env)  # noqa: S102 - our own docs

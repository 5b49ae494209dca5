"""Every Python example of docs/EXTENDING.md runs as written (in a fresh interpreter, so
that what the examples register does not leak into other tests; each as its own module)."""

import json
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "EXTENDING.md"
RUNNER = """
import json, sys, traceback, types
failed = []
for i, block in enumerate(json.loads(sys.stdin.read())):
    module = sys.modules[f"example_{i}"] = types.ModuleType(f"example_{i}")
    try:
        exec(compile(block, f"EXTENDING.md block {i}", "exec"), module.__dict__)
    except Exception:
        failed.append(traceback.format_exc())
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 5
    result = subprocess.run(
        [sys.executable, "-c", RUNNER], input=json.dumps(blocks), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]

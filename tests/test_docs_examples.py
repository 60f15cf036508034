"""The worked examples of docs/extending.md run as written, and the README keeps its contract.

Each ``## `` section of the page is one example: its titled code blocks
(```` ```python title="x.py" ````) are files written to a fresh folder, its other Python blocks
run there in order. All sections run in one subprocess (one import of RecBole), each in its own
folder and namespace, so an example's registrations cannot leak into this test process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
EXTENDING = REPO_ROOT / "docs" / "extending.md"
README = REPO_ROOT / "README.md"

FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
TITLE = re.compile(r'title="([^"]+)"')

# Runs one section given as JSON on stdin in the working folder: writes its files, then runs
# its code as a script would run (the folder on the Python path).
RUNNER = textwrap.dedent(
    """
    import json, os, sys
    section = json.load(sys.stdin)
    for path, text in section["files"].items():
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    sys.path.insert(0, os.getcwd())
    code = compile("\\n".join(section["code"]), "docs/extending.md", "exec")
    exec(code, {"__name__": "__main__"})
    """
)


def doc_sections(text: str) -> dict[str, dict]:
    """``{heading: {"files": {title: text}, "code": [python block, ...]}}`` of each ``## ``
    section that holds a code block."""
    sections = {}
    for chunk in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        heading = chunk.splitlines()[0].strip()
        files, code = {}, []
        for language, info, body in FENCE.findall(chunk):
            title = TITLE.search(info)
            if title:
                files[title.group(1)] = body
            elif language == "python":
                code.append(body)
        if files or code:
            sections[heading] = {"files": files, "code": code}
    return sections


def test_doc_sections_reads_titled_files_and_python_blocks():
    text = (
        'intro\n## One\n```python title="m.py"\nX = 1\n```\n'
        "```bash\necho no\n```\n```python\nimport m\n```\n```python\nassert m.X == 1\n```\n"
        "## Two\nprose only\n"
    )
    assert doc_sections(text) == {
        "One": {"files": {"m.py": "X = 1\n"}, "code": ["import m\n", "assert m.X == 1\n"]}
    }


@pytest.fixture(scope="module")
def example_results(tmp_path_factory) -> dict[str, str]:
    """Runs every section in its own process (a metric, say, must be registered before a
    process's first run), all at once: ``{heading: "ok" or the output of the failure}``."""
    sections = doc_sections(EXTENDING.read_text(encoding="utf-8"))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.pop("RECBOLE_MOE_RAW_DATA", None)
    procs = {}
    for heading, section in sections.items():
        folder = tmp_path_factory.mktemp("extending")
        procs[heading] = subprocess.Popen(
            [sys.executable, "-c", RUNNER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=folder,
            env=env,
            text=True,
        )
        procs[heading].stdin.write(json.dumps(section))
        procs[heading].stdin.close()
    results = {}
    for heading, proc in procs.items():
        output = proc.stdout.read()
        results[heading] = "ok" if proc.wait(timeout=600) == 0 else output[-4000:]
    return results


@pytest.mark.parametrize(
    "section",
    ["Add a model", "Add a dataset preset", "Add a metric", "Add a benchmark protocol"],
)
def test_extending_example_runs(example_results, section):
    assert section in example_results, f"docs/extending.md has no section '{section}'"
    assert example_results[section] == "ok", example_results[section]


def test_readme_is_short_and_keeps_its_two_commands():
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 250
    commands = re.findall(r"^```bash\n(.*?)\n```", text, flags=re.MULTILINE | re.DOTALL)
    assert commands[:2] == [
        "bash install.sh && python3 run_recbole_moe.py --model HyMoERec --dataset ml-100k "
        "--train_objective=sequence --train_batch_size=64",
        "bash install.sh --editable && python3 -m pytest -q tests",
    ]
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "bash install.sh --editable" in ci and "python3 -m pytest -q tests" in ci
    # No commit hashes: a word of 7-40 hex digits with at least one letter and one digit.
    hashes = [
        w
        for w in re.findall(r"\b[0-9a-f]{7,40}\b", text)
        if re.search(r"[a-f]", w) and re.search(r"\d", w)
    ]
    assert hashes == []


def test_readme_links_point_to_existing_files():
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t]
    assert local, "the README links to the docs"
    missing = [t for t in local if not (REPO_ROOT / t).exists()]
    assert missing == []

"""Every command in the README and the docs runs as written (issue #15).

The fenced blocks tagged ``sh``, ``bash``, ``shell`` or ``console`` in README.md, docs/*.md and
examples/*/README.md are read as a user copies them: every line that calls the command line
(``carbonscaler ...``, ``.venv/bin/carbonscaler ...`` or ``python -m carbonscaler ...``; in a
``console`` block, the ``$ `` lines) runs in bash, in a working folder that holds a copy of the
repository's ``examples/`` and nothing else, and must exit with 0. Other lines (``make``,
``pip``, ``curl``, ``kubectl``...) are left to CI and to the reader; ``NAME=value`` lines are
kept for the commands after them. ``python`` blocks run as scripts in the same folder. The
commands of one page run in order, in one folder, so a later command may use a file an earlier
one wrote (``profile.csv``), as the reader's would.

Two markers, an HTML comment on the line before a block's fence, say what the test cannot do:

* ``<!-- not-run: REASON -->``: the block is not run (it needs a cluster, the network, a
  running server, or minutes); the reason is shown in the test's skips.
* ``<!-- needs-shared: FILE ... -->``: the block reads files the reader downloads (the text says
  where from); the test copies each FILE, found by name in the project's shared data folder,
  into the working folder. ``<!-- needs-shared -->`` alone: the block reads that folder through
  ``$CARBONSCALER_SHARED`` (developer docs). Either way the test exports the variable, and skips
  the block where the folder is absent.

Without these markers nothing may depend on the shared folder: the working folder has none
beside it, and ``$CARBONSCALER_SHARED`` is removed from the commands' environment.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import REPO, SHARED, SHARED_ENV

pytestmark = pytest.mark.integration

SHELL_LANGUAGES = frozenset({"sh", "bash", "shell", "console"})
COMMAND_TIMEOUT_S = 120
MAX_NOT_RUN = 5

# The ways the docs call the command line; each is run as the installed `carbonscaler`.
_PREFIX = re.compile(
    r"^(?P<env>(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*)"
    r"(?:(?:\./)?\.venv/bin/carbonscaler|carbonscaler"
    r"|(?:(?:\./)?\.venv/bin/)?python3? -m carbonscaler)(?=\s|$)"
)
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*$")
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER = re.compile(r"^<!--\s*(?P<kind>not-run|needs-shared)\s*:?\s*(?P<value>.*?)\s*-->$")


def doc_files() -> list[Path]:
    docs = sorted((REPO / "docs").glob("*.md"))
    examples = sorted((REPO / "examples").glob("*/README.md"))
    return [REPO / "README.md", *docs, *examples]


@dataclass
class Block:
    """One fenced block: where it is, its language, its lines and its marker."""

    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    lines: list[tuple[int, str]]  # (line number, text)
    not_run: str | None = None
    needs_shared: list[str] | None = None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


@dataclass
class Command:
    line: int
    text: str  # as written, continuation lines joined


@dataclass
class Page:
    path: Path
    blocks: list[Block] = field(default_factory=list)


def parse_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, each with the marker comment before it."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence = match["fence"]
        info = match["info"].strip().split()
        block = Block(path, i + 1, info[0].lower() if info else "", [])
        previous = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = _MARKER.match(previous)
        if marker:
            if marker["kind"] == "not-run":
                block.not_run = marker["value"]
            else:
                block.needs_shared = marker["value"].split()
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            block.lines.append((i + 1, lines[i]))
            i += 1
        blocks.append(block)
        i += 1
    return blocks


def _logical_lines(block: Block) -> Iterator[tuple[int, str]]:
    """Lines with their backslash continuations joined, from the line they start on."""
    start, parts = 0, []
    for number, text in block.lines:
        if not parts:
            start = number
        stripped = text.rstrip()
        if stripped.endswith("\\"):
            parts.append(stripped[:-1])
            continue
        parts.append(stripped)
        yield start, " ".join(part.strip() for part in parts)
        parts = []
    if parts:
        yield start, " ".join(part.strip() for part in parts)


def commands(block: Block) -> list[Command]:
    """The command-line calls (and the variable assignments they may use) of a shell block."""
    found = []
    for number, text in _logical_lines(block):
        if block.language == "console":
            if not text.startswith("$ "):
                continue  # output shown after a command
            text = text[2:]
        text = text.strip()
        if _PREFIX.match(text) or _ASSIGNMENT.match(text):
            found.append(Command(number, text))
    return found


def is_command(text: str) -> bool:
    return bool(_PREFIX.match(text.strip().removeprefix("$ ")))


PAGES = [Page(path, parse_blocks(path)) for path in doc_files()]
RUNNABLE = [
    page
    for page in PAGES
    if any(
        (b.language in SHELL_LANGUAGES and any(is_command(c.text) for c in commands(b)))
        or b.language == "python"
        for b in page.blocks
    )
]


def _carbonscaler() -> list[str]:
    """How the working folder's commands call the installed command line."""
    script = Path(sys.executable).with_name("carbonscaler")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "carbonscaler"]


def _environment(home: Path, shared: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != SHARED_ENV}
    if shared:
        env[SHARED_ENV] = str(SHARED)
    # The learned forecaster's model cache, in the test's folder.
    env["CARBONSCALER_CACHE"] = str(home / "cache")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["NO_COLOR"] = "1"
    return env


def _shell_script(assignments: list[str], command: str) -> str:
    call = " ".join(f'"{part}"' for part in _carbonscaler())
    body = _PREFIX.sub(lambda m: f"{m['env']}carbonscaler", command, count=1)
    return "\n".join(
        [
            "set -euo pipefail",
            f'carbonscaler() {{ {call} "$@"; }}',
            *assignments,
            body,
        ]
    )


def _working_copy(tmp_path: Path) -> Path:
    """A folder with the repository's examples, as a fresh clone has them, and no ../shared."""
    work = tmp_path / "clone"
    shutil.copytree(
        REPO / "examples",
        work / "examples",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "runs", "*-run"),
    )
    return work


def _copy_shared(names: list[str], work: Path) -> None:
    for name in names:
        found = sorted(SHARED.rglob(name))
        assert found, f"{name} is not in the shared data folder {SHARED}"
        shutil.copy(found[0], work / name)


def _run(args: list[str], work: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a command in its own process group; on a timeout the whole group is stopped (a
    server a block should have marked not-run must not outlive the test)."""
    with subprocess.Popen(
        args,
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            stderr += f"\n(stopped after {COMMAND_TIMEOUT_S} s: mark the block not-run?)"
        return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def _failure(where: str, command: str, done: subprocess.CompletedProcess[str]) -> str:
    tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-12:])
    return f"{where}: exit {done.returncode}: {command}\n{tail}"


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: str(p.path.relative_to(REPO)))
def test_doc_commands_run_as_written(page: Page, tmp_path: Path) -> None:
    work = _working_copy(tmp_path)
    failures: list[str] = []
    skipped: list[str] = []
    ran = 0
    for block in page.blocks:
        if block.language not in SHELL_LANGUAGES | {"python"}:
            continue
        if block.not_run is not None:
            continue
        if block.needs_shared is not None:
            if not (SHARED / "traces").is_dir():
                skipped.append(f"{block.where} (needs the shared data folder {SHARED})")
                continue
            _copy_shared(block.needs_shared, work)
        env = _environment(tmp_path, shared=block.needs_shared is not None)
        if block.language == "python":
            script = tmp_path / f"block_{block.line}.py"
            script.write_text("\n".join(text for _, text in block.lines) + "\n")
            done = _run([sys.executable, str(script)], work, env)
            ran += 1
            if done.returncode != 0:
                failures.append(_failure(block.where, "python block", done))
            continue
        assignments: list[str] = []
        for command in commands(block):
            if _ASSIGNMENT.match(command.text):
                assignments.append(command.text)
                continue
            done = _run(["bash", "-c", _shell_script(assignments, command.text)], work, env)
            ran += 1
            if done.returncode != 0:
                where = f"{page.path.relative_to(REPO)}:{command.line}"
                failures.append(_failure(where, command.text, done))
    assert not failures, "\n\n".join(failures)
    if skipped and not ran:
        pytest.skip("; ".join(skipped))


def test_command_blocks_are_tagged_and_markers_explained() -> None:
    """A command hidden in an untagged block would never run; a marker needs a reason and a
    block after it."""
    problems = []
    for page in PAGES:
        for block in page.blocks:
            calls = [n for n, text in block.lines if is_command(text)]
            if calls and block.language not in SHELL_LANGUAGES:
                problems.append(
                    f"{block.where}: a command in a block tagged {block.language or 'nothing'!r}"
                    " (tag it sh or console, so the test runs it)"
                )
            if block.not_run == "":
                problems.append(f"{block.where}: not-run needs a reason")
            for number, text in block.lines:
                if block.not_run is None and is_command(text) and "../shared" in text:
                    problems.append(
                        f"{page.path.relative_to(REPO)}:{number}: reads ../shared, which a "
                        "clone does not have"
                    )
        text = page.path.read_text(encoding="utf-8").splitlines()
        fences = {b.line - 1 for b in page.blocks}
        for number, line in enumerate(text, 1):
            if _MARKER.match(line.strip()):
                after = next((j for j in range(number, len(text)) if text[j].strip()), len(text))
                if after not in fences:
                    problems.append(
                        f"{page.path.relative_to(REPO)}:{number}: marker not right before a block"
                    )
    assert problems == []


def test_not_run_blocks_are_few() -> None:
    """The blocks the test does not run stay few: each is a decision, with its reason."""
    not_run = [f"{b.where}: {b.not_run}" for p in PAGES for b in p.blocks if b.not_run is not None]
    assert len(not_run) <= MAX_NOT_RUN, "\n".join(not_run)


def test_the_parser_reads_what_a_reader_copies(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n"
        "<!-- not-run: needs a cluster -->\n"
        "```sh\ncarbonscaler operator\n```\n\n"
        "```console\n$ carbonscaler traces list   # a comment\noutput line\n"
        "$ .venv/bin/carbonscaler plan --zone DE \\\n    --start 2020-06-01\n```\n\n"
        "```bash\nmake test\nS=x\npython -m carbonscaler --version\n"
        "X=1 carbonscaler --help\n```\n"
    )
    blocks = parse_blocks(page)
    assert [b.language for b in blocks] == ["sh", "console", "bash"]
    assert blocks[0].not_run == "needs a cluster"
    assert [c.text for c in commands(blocks[1])] == [
        "carbonscaler traces list   # a comment",
        ".venv/bin/carbonscaler plan --zone DE --start 2020-06-01",
    ]
    assert [c.line for c in commands(blocks[1])] == [9, 11]
    assert [c.text for c in commands(blocks[2])] == [
        "S=x",
        "python -m carbonscaler --version",
        "X=1 carbonscaler --help",
    ]
    script = _shell_script(["S=x"], "X=1 .venv/bin/carbonscaler --help")
    assert script.endswith("S=x\nX=1 carbonscaler --help")
    assert not is_command("carbonscalerx --help") and not is_command("pip install carbonscaler")

"""README.md says what works: its Quick start comes first, and its classic examples run.

Each classic example is run as written, in a subprocess, with one change: its port 9999
becomes 0, and the test reads the port bound from the line the example prints. Each runs
twice, as written (``import netserve as socketserver``) and on the standard library
(``import socketserver``), since the README promises the code is the stdlib's.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

NETSERVE_IMPORT = "import netserve as socketserver"
STDLIB_IMPORT = "import socketserver"
CLASSIC_SECTION = "The classic reverse-string server"

STARTUP_TIMEOUT = 15.0
IO_TIMEOUT = 5.0
EXIT_TIMEOUT = 5.0


def read_readme() -> str:
    return README.read_text(encoding="utf-8")


def sections(text: str) -> list[tuple[str, str]]:
    """``(heading, body)`` for each ``## `` section, in order."""
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    return list(zip(parts[1::2], parts[2::2], strict=True))


def section(heading: str) -> str:
    found = [body for title, body in sections(read_readme()) if title.strip() == heading]
    assert len(found) == 1, f"README.md needs exactly one '## {heading}' section"
    return found[0]


def code_blocks(text: str, language: str | None = None) -> list[str]:
    blocks = re.findall(r"^```(\w*)\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)
    return [code for lang, code in blocks if language is None or lang == language]


def classic_examples() -> dict[str, str]:
    blocks = code_blocks(section(CLASSIC_SECTION), "python")
    assert len(blocks) == 2, f"the classic section should show two python blocks: {blocks}"
    by_kind = {}
    for code in blocks:
        kind = "serve_forever" if "serve_forever()" in code else "handle_request"
        by_kind[kind] = code
    assert set(by_kind) == {"handle_request", "serve_forever"}
    return by_kind


# --- the Quick start -----------------------------------------------------------------------


def test_quick_start_is_the_first_section() -> None:
    text = read_readme()
    head, _, _ = text.partition("\n## ")
    lines = head.strip().splitlines()
    assert lines[0] == "# netserve"
    intro = " ".join(line.strip() for line in lines[1:] if line.strip())
    assert intro.endswith("."), "one sentence after the title"
    assert intro.count(". ") == 0, f"one sentence after the title, not: {intro!r}"
    assert "" not in [line.strip() for line in lines[2:]], "a single paragraph"
    assert sections(text)[0][0] == "Quick start"


def test_quick_start_has_exactly_make_run_and_make_test() -> None:
    commands = [
        line.strip()
        for block in code_blocks(section("Quick start"))
        for line in block.splitlines()
        if line.strip()
    ]
    assert commands == ["make run", "make test"]


def test_makefile_has_the_quick_start_targets() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run:", makefile, flags=re.MULTILINE)
    assert re.search(r"^test:", makefile, flags=re.MULTILINE)
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    dry_run = subprocess.run(
        [make, "-n", "run", "test"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert dry_run.returncode == 0, dry_run.stderr
    assert "netserve" in dry_run.stdout
    assert "pytest" in dry_run.stdout
    assert "mypy --strict src" in dry_run.stdout


# --- the classic examples, run for real ----------------------------------------------------


class Example:
    """One README example running in a subprocess, its stdout read line by line."""

    def __init__(self, code: str, directory: Path) -> None:
        script = directory / "example.py"
        script.write_text(code)
        self.proc = subprocess.Popen(
            [sys.executable, str(script)],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},  # the print arrives at once
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def port(self) -> int:
        """The port from the example's ``serving on port N`` line."""
        try:
            line = self._lines.get(timeout=STARTUP_TIMEOUT)
        except queue.Empty:
            pytest.fail(f"the example printed nothing in {STARTUP_TIMEOUT} s")
        if line is None:
            pytest.fail(f"the example exited: {self.communicate()}")
        match = re.fullmatch(r"serving on port (\d+)\n", line)
        assert match, line
        return int(match[1])

    def communicate(self) -> tuple[int | None, str]:
        """Wait for the exit; the exit code (None if it did not exit) and the stderr."""
        try:
            self.proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            return None, ""
        assert self.proc.stderr is not None
        return self.proc.returncode, self.proc.stderr.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(EXIT_TIMEOUT)
        self._reader.join(EXIT_TIMEOUT)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture(params=[NETSERVE_IMPORT, STDLIB_IMPORT], ids=["netserve", "stdlib"])
def library(request: pytest.FixtureRequest) -> str:
    return str(request.param)


RunExample = Callable[[str], Example]


@pytest.fixture
def run_example(tmp_path: Path, library: str) -> Iterator[RunExample]:
    started: list[Example] = []

    def start(kind: str) -> Example:
        code = classic_examples()[kind]
        assert code.startswith(NETSERVE_IMPORT + "\n"), "the example imports netserve first"
        assert code.count("9999") == 1, "the test replaces the one port in the example"
        code = code.replace(NETSERVE_IMPORT, library, 1).replace("9999", "0")
        example = Example(code, tmp_path)
        started.append(example)
        return example

    yield start
    for example in started:
        example.close()


def ask(port: int, message: bytes) -> bytes:
    """Send *message*, return everything the server sends until it closes."""
    with socket.create_connection(("localhost", port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(message)
        reply = b""
        for _ in range(1024):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        return reply


def test_classic_example_handle_request(run_example: RunExample) -> None:
    example = run_example("handle_request")
    port = example.port()
    assert ask(port, b"hello\n") == b"olleh\n"
    code, stderr = example.communicate()
    assert code == 0, f"handle_request() serves one client and the script ends: {stderr}"


def test_classic_example_serve_forever(run_example: RunExample) -> None:
    example = run_example("serve_forever")
    port = example.port()
    assert ask(port, b"hello\n") == b"olleh\n"
    assert ask(port, b"netserve") == b"evresten\n"
    example.proc.send_signal(signal.SIGINT)  # Ctrl-C
    code, stderr = example.communicate()
    assert code == 0, f"Ctrl-C ends serve_forever() and the script: {stderr}"
    assert "Traceback" not in stderr


def test_classic_examples_differ_only_in_how_they_serve() -> None:
    examples = classic_examples()
    handle_request, serve_forever = examples["handle_request"], examples["serve_forever"]
    head = handle_request.split("HOST, PORT")[0]
    assert serve_forever.startswith(head), "both examples share the handler, as written"
    assert "self.request.recv(1024)" in head
    assert "TCPServer((HOST, PORT), ReverseHandler)" in handle_request
    assert "ThreadingTCPServer((HOST, PORT), ReverseHandler)" in serve_forever

"""Run the shared benchmark (``../shared/bench``) with netserve plugged in beside its peers.

    python tools/bench.py                                  # the default matrix, 5 rounds
    python tools/bench.py --workloads pingpong-50 --peers threading \\
        --server pool='netserve.demo:ReverseHandler --threads 64'

Each ``--server NAME='HANDLER ARGS'`` becomes ``netserve serve HANDLER ARGS`` on the port the
bench chooses. netserve runs from a copy of ``src/`` taken when this starts, so editing the
tree during a run (the editable install would pick the edits up) cannot mix two versions into
one table. Results go to ``bench-results/<time>/`` (``results.md``: the tables and ratios).

The machines this runs on are shared and noisy: compare servers within one run, with several
rounds (``--repeat``), and quote ratios, never absolute rates across runs.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: Where the shared bench lives unless NETSERVE_BENCH says otherwise.
DEFAULT_BENCH = REPO.parent / "shared" / "bench"

#: netserve's entries when none are given: every serving mode, on the bench's line protocol.
DEFAULT_SERVERS = (
    "ns-line=netserve.demo:ReverseLineHandler",
    "ns-async=netserve.demo:AsyncReverseHandler",
    "ns-pool=netserve.demo:ReverseHandler --threads 64",
    "ns-2w=netserve.demo:ReverseHandler --workers 2",
    "ns-line-2w=netserve.demo:ReverseLineHandler --workers 2",
)
DEFAULT_PEERS = "c-limit,threading,uvloop-protocol"
DEFAULT_WORKLOADS = "pingpong-50,pingpong-500,oneshot-50,hold-5000"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--server",
        action="append",
        metavar="NAME='HANDLER ARGS'",
        help="a netserve entry (repeatable); default: the demo handlers in every mode",
    )
    parser.add_argument("--peers", default=DEFAULT_PEERS, help="the bench's servers to run too")
    parser.add_argument("--workloads", default=DEFAULT_WORKLOADS)
    parser.add_argument("--repeat", type=int, default=5, help="rounds (medians are reported)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per cell")
    parser.add_argument("--out", type=Path, help="default: bench-results/<time>")
    parser.add_argument("--python", default=sys.executable, help="the Python that runs netserve")
    return parser.parse_args(argv)


def find_bench() -> Path:
    bench = Path(os.environ.get("NETSERVE_BENCH", DEFAULT_BENCH))
    if not (bench / "run.sh").is_file():
        raise SystemExit(f"no benchmark at {bench} (set NETSERVE_BENCH to its folder)")
    return bench


def _literal(text: str) -> str:
    """*text* as one word of a matrix.py command template (split like a shell line, after
    ``str.format`` fills in ``{port}``)."""
    return shlex.quote(text).replace("{", "{{").replace("}", "}}")


def server_options(specs: list[str], python: str, src_copy: Path) -> list[str]:
    """``--server`` options for matrix.py: each runs netserve from *src_copy*."""
    options = []
    for spec in specs:
        name, sep, handler_args = spec.partition("=")
        if not sep or not name or not handler_args.strip():
            raise SystemExit(f"--server: expected NAME='HANDLER ARGS', got {spec!r}")
        words = ["env", f"PYTHONPATH={src_copy}", python, "-m", "netserve", "serve"]
        words += shlex.split(handler_args)
        command = " ".join(_literal(word) for word in words)
        options += ["--server", f"{name}={command} --bind 127.0.0.1:{{port}} --log-level warning"]
    return options


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    bench = find_bench()
    specs = args.server or list(DEFAULT_SERVERS)
    out = args.out or REPO / "bench-results" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="netserve-bench-") as tmp:
        src_copy = Path(tmp) / "src"
        shutil.copytree(REPO / "src", src_copy)
        names = [spec.partition("=")[0] for spec in specs]
        only = ",".join([p for p in args.peers.split(",") if p] + names)
        command = [
            "bash",
            str(bench / "run.sh"),  # sets the bench up (where it may write) and runs matrix.py
            *server_options(specs, args.python, src_copy),
            "--only",
            only,
            "--workloads",
            args.workloads,
            "--repeat",
            str(args.repeat),
            "--duration",
            str(args.duration),
            "--out",
            str(out),
        ]
        status = subprocess.run(command, cwd=bench).returncode
    print(f"results: {out / 'results.md'}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

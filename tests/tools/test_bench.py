"""tools/bench.py: how netserve entries become the shared bench's ``--server`` options."""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path
from types import ModuleType

import pytest

BENCH_SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "bench.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("netserve_tools_bench", BENCH_SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_entry_serves_its_handler_from_the_copy_on_the_bench_port(tmp_path: Path) -> None:
    bench = load_bench()
    options = bench.server_options(
        ["pool=netserve.demo:ReverseHandler --threads 64"], "/venv/bin/python", tmp_path
    )
    assert options == [
        "--server",
        f"pool=env PYTHONPATH={tmp_path} /venv/bin/python -m netserve serve"
        " netserve.demo:ReverseHandler --threads 64"
        " --bind 127.0.0.1:{port} --log-level warning",
    ]


def test_paths_with_spaces_and_braces_stay_one_word_each(tmp_path: Path) -> None:
    bench = load_bench()
    copy = tmp_path / "a {b} c"
    [_, option] = bench.server_options(
        ["x=mod:Handler --name 'two words'"], "/my venv/python", copy
    )
    template = option.partition("=")[2]
    words = shlex.split(template.format(port=1234))  # what matrix.py does with it
    assert words[:4] == ["env", f"PYTHONPATH={copy}", "/my venv/python", "-m"]
    assert words[6:] == [
        "mod:Handler",
        "--name",
        "two words",
        "--bind",
        "127.0.0.1:1234",
        "--log-level",
        "warning",
    ]


@pytest.mark.parametrize("spec", ["no-equals-sign", "=netserve.demo:X", "name=  "])
def test_a_malformed_entry_is_refused_with_the_expected_form(spec: str, tmp_path: Path) -> None:
    bench = load_bench()
    with pytest.raises(SystemExit, match="NAME='HANDLER ARGS'"):
        bench.server_options([spec], "python", tmp_path)


def test_every_default_entry_names_an_importable_demo_handler() -> None:
    bench = load_bench()
    import netserve.demo

    for spec in bench.DEFAULT_SERVERS:
        handler_args = spec.partition("=")[2]
        module, _, cls = handler_args.split()[0].partition(":")
        assert module == "netserve.demo", spec
        assert hasattr(netserve.demo, cls), spec

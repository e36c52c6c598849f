"""CPython's own ``Lib/test/test_socketserver.py``, run against netserve.

In a subprocess, netserve is put in ``sys.modules['socketserver']`` before the test module is
imported, so the stdlib's tests exercise netserve (and the swap cannot leak into other tests).
A small driver runs unittest there and writes a JSON summary, which is what is checked here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

#: The one stdlib test that cannot pass: it wants classes whose ``__module__`` is
#: ``'socketserver'``, and netserve's report ``'netserve'``.
EXPECTED_TO_FAIL = {"test.test_socketserver.MiscTestCase.test_all"}

#: The stdlib module has 27 tests in 3.11; fewer than this means it was not really run.
MIN_TESTS = 20

DRIVER = textwrap.dedent(
    """
    import json
    import sys
    import unittest

    import netserve

    summary_path = sys.argv[1]
    sys.modules["socketserver"] = netserve
    try:
        import test.test_socketserver as module
    except (ImportError, unittest.SkipTest) as exc:
        with open(summary_path, "w") as f:
            json.dump({"skip": f"test.test_socketserver cannot be imported: {exc!r}"}, f)
        sys.exit(0)

    suite = unittest.defaultTestLoader.loadTestsFromModule(module)
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=2).run(suite)
    summary = {
        "uses_netserve": module.socketserver is netserve,
        "ran": result.testsRun,
        "failures": {test.id(): text for test, text in result.failures},
        "errors": {test.id(): text for test, text in result.errors},
        "unexpected_successes": [test.id() for test in result.unexpectedSuccesses],
        "skipped": {test.id(): reason for test, reason in result.skipped},
    }
    with open(summary_path, "w") as f:
        json.dump(summary, f)
    """
)


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("stdlib_suite")
    driver = workdir / "driver.py"
    driver.write_text(DRIVER)
    summary_path = workdir / "summary.json"
    proc = subprocess.run(
        [sys.executable, str(driver), str(summary_path)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=50,
    )
    if not Path(summary_path).exists():
        pytest.fail(
            f"the driver wrote no summary (exit {proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    data: dict[str, Any] = json.loads(summary_path.read_text())
    if "skip" in data:
        pytest.skip(data["skip"])
    data["output"] = proc.stderr
    return data


def test_stdlib_tests_run_against_netserve(summary: dict[str, Any]) -> None:
    assert summary["uses_netserve"] is True
    assert summary["ran"] >= MIN_TESTS, summary["output"][-3000:]


def test_stdlib_tests_pass_except_module_name_check(summary: dict[str, Any]) -> None:
    broken = {**summary["failures"], **summary["errors"]}
    unexpected = {test: text for test, text in broken.items() if test not in EXPECTED_TO_FAIL}
    assert not unexpected, "\n\n".join(f"{test}:\n{text}" for test, text in unexpected.items())
    assert summary["unexpected_successes"] == []


def test_stdlib_tests_are_not_skipped_for_lack_of_features(summary: dict[str, Any]) -> None:
    # Unix sockets and fork exist here: a skip would mean netserve lacks something the
    # stdlib test looks for.
    assert summary["skipped"] == {}

#!/usr/bin/env bash
# Run the test suite on every Python >= 3.11 found (python3.N on PATH, pyenv's versions),
# each in its own venv (.venv-pythons/<version>); or on the interpreters given as arguments.
# TEST_PYTHONS_SKIP="3.11.7 ..." leaves those versions out (CI: the one `make test` ran).
set -uo pipefail
cd "$(dirname "$0")/.."
candidates=("$@")
if [ ${#candidates[@]} -eq 0 ]; then
  for n in 11 12 13 14 15; do candidates+=("python3.$n"); done
  pyenv_root=$(pyenv root 2> /dev/null || echo "$HOME/.pyenv")
  candidates+=("$pyenv_root"/versions/3.*/bin/python3)
fi
declare -A seen=()
for version in ${TEST_PYTHONS_SKIP:-}; do seen[$version]=skipped; done
failed=()
for python in "${candidates[@]}"; do
  version=$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3]) if sys.version_info >= (3, 11) else sys.exit(1)' 2> /dev/null) || continue
  [ -n "${seen[$version]:-}" ] && continue
  seen[$version]=1
  venv=.venv-pythons/$version
  echo "== Python $version ($python)"
  if [ ! -f "$venv/.installed" ] || [ pyproject.toml -nt "$venv/.installed" ]; then
    { "$python" -m venv "$venv" && "$venv/bin/python" -m pip install -q -e '.[test]' &&
      touch "$venv/.installed"; } || { failed+=("$version (install)"); continue; }
  fi
  "$venv/bin/pytest" -q -p no:cacheprovider
  status=$?
  [ $status -eq 2 ] && { echo "interrupted" >&2; exit 130; }  # Ctrl-C: stop, not next
  [ $status -eq 0 ] || failed+=("$version")
done
tested=()
for version in "${!seen[@]}"; do [ "${seen[$version]}" = 1 ] && tested+=("$version"); done
if [ ${#seen[@]} -eq 0 ]; then echo "no Python >= 3.11 found" >&2; exit 1; fi
echo "== tested: ${tested[*]:-none} (left out: ${TEST_PYTHONS_SKIP:-none})"
if [ ${#failed[@]} -gt 0 ]; then echo "failed: ${failed[*]}" >&2; exit 1; fi

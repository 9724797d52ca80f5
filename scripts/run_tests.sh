#!/usr/bin/env bash
# The default test run (CI and `make test`): everything except GPU and slow tests, Triton kernels
# through Triton's interpreter. pytest's exit code 5 (no test collected) counts as a failure here:
# a run that tests nothing must not pass silently.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check . || exit 1
.venv/bin/python -m pytest -m "not gpu and not slow" "$@"
rc=$?
if [[ $rc -eq 5 ]]; then echo "no tests were collected" >&2; exit 1; fi
exit $rc

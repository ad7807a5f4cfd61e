#!/usr/bin/env bash
# The test suite: set up, lint, run every test. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks
# one worker per core (pytest-xdist; each worker takes its share of the cores, see tests/conftest.py); the longest
# tests train small models for a few hundred steps, so the suite is bound by arithmetic and scales with cores.
# At most 8 workers (each holds torch and a model in memory); MMFUSION_TEST_WORKERS=0 runs everything in this
# process, MMFUSION_TEST_WORKERS=N uses N.
exec .venv/bin/python -m pytest -n "${MMFUSION_TEST_WORKERS:-auto}" --maxprocesses 8 --dist worksteal "$@"

#!/usr/bin/env bash
# The main job: set up, train on the built-in asynchronous benchmark, print the comparison table.
# Extra arguments go to `mmfusion bench` (e.g. --seeds 1111 1112 1113). Finished runs are reused.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/mmfusion bench --models lf_lstm --data synthetic --seeds 1111 --out runs/demo "$@"

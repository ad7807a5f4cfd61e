#!/usr/bin/env bash
# The main job: set up, train MEA and the late-fusion baseline on the built-in asynchronous benchmark, print the
# comparison table with the Bayes-optimal ceiling. Extra arguments go to `mmfusion bench`
# (e.g. --seeds 1111 1112 1113). Finished runs are reused; an interrupted demo continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/mmfusion bench --models mea,lf_lstm --data synthetic --seeds 1111 \
  --out "${MMFUSION_DEMO_OUT:-runs/demo}" "$@"

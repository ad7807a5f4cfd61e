#!/usr/bin/env bash
# Create or refresh the project's virtual environment (.venv, or $MMFUSION_VENV).
# torch: if the environment has none, install $MMFUSION_TORCH (default torch==2.13.0, a CPU build where that wheel
# is available); users with their own torch build can install it first, or set MMFUSION_TORCH.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${MMFUSION_VENV:-.venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.mmfusion-installed"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import mmfusion" 2>/dev/null; then
  exit 0
fi
echo "setup: installing mmfusion into $VENV" >&2
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q "${MMFUSION_TORCH:-torch==2.13.0}" \
    || echo "setup: ${MMFUSION_TORCH:-torch==2.13.0} not available here; pip will choose a torch build" >&2
fi
"$VENV/bin/python" -m pip install -q -e ".[dev,video,media,tune]"
echo "$want" > "$stamp"

#!/usr/bin/env bash
# Installs the keras-posenc wheel into a fresh virtual environment with ONE
# backend (JAX by default) and runs smoke.py there: import, a layer call,
# .keras save/load. `make test` runs the JAX case (tests/wheel/test_wheel.py);
# this script runs any backend by hand (minutes on a cold pip cache).
#
# Usage: tests/wheel/smoke_install.sh [BACKEND_REQUIREMENT] [KERAS_BACKEND]
#   tests/wheel/smoke_install.sh                      # "jax[cpu]", jax
#   tests/wheel/smoke_install.sh "torch==2.13.0" torch
# Needs the `build` package in the calling Python (the dev extra has it);
# PYTHON selects that Python (default: .venv/bin/python, else python3).
set -euo pipefail

requirement="${1:-jax[cpu]}"
backend="${2:-jax}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "=== building the wheel from a copy of the checkout's files ($work)"
mkdir "$work/source"
(cd "$root" && git ls-files --cached --others --exclude-standard -z \
    | xargs -0 -I{} cp --parents {} "$work/source/" 2>/dev/null || true)
SECONDS=0
"$python" -m build --wheel --no-isolation --outdir "$work/dist" "$work/source" >/dev/null
wheel="$(ls "$work"/dist/*.whl)"
echo "built $(basename "$wheel") in ${SECONDS}s"

echo "=== fresh venv with $requirement only"
SECONDS=0
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip
"$work/venv/bin/python" -m pip install --quiet "$wheel" "$requirement"
echo "installed in ${SECONDS}s"

echo "=== smoke test"
cd "$work"
KERAS_BACKEND="$backend" TF_CPP_MIN_LOG_LEVEL=3 \
    "$work/venv/bin/python" "$root/tests/wheel/smoke.py"

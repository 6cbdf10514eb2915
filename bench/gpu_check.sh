#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py) with only the GPU machine's python3, from the repository root.
#
#   bench/gpu_check.sh fetch     here, once: the wheels the GPU machine lacks (pydantic and its
#                                needs, captum for lime), for CPython 3.12 x86-64, into .whl/
#   bench/gpu_check.sh [ARGS]    there: installs .whl/ into /tmp/site when present, runs the check
#
# The device tool's command line: `bench/gpu_check.sh` with carry [".whl"] (see bench/gpu_check.py).
set -euo pipefail
cd "$(dirname "$0")/.."
# Versions of pyproject.toml (pydantic, captum) and of what they need that the GPU image lacks
# (pydantic needs typing-extensions>=4.16, newer than the image may hold; /tmp/site comes first).
WHEELS=(pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
  captum==0.9.0)
if [ "${1:-}" = fetch ]; then
  rm -rf .whl && mkdir -p .whl
  "${PYTHON:-.venv/bin/python}" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl "${WHEELS[@]}"
  ls -l .whl
  exit 0
fi
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
exec python3 bench/gpu_check.py "$@"

#!/usr/bin/env bash
# One-shot set-up: a virtual environment in .venv with erc and its test tools installed.
# Safe to run again: an up-to-date environment installs nothing. When pyproject.toml or
# constraints.txt change, .venv is built afresh (a package the old pins left behind, such as a
# CUDA torchvision beside a CPU torch, would break imports); extras installed by hand go with it.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
stamp=.venv/.erc-setup-stamp
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  rm -rf .venv
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt torch
  .venv/bin/python -m pip install -q -c constraints.txt -e '.[test]'
  echo "$want" > "$stamp"
fi

#!/usr/bin/env bash
# Create .venv and install seqmamba from this checkout (editable), with a CPU build of PyTorch on
# machines without an NVIDIA GPU. Re-running is cheap: nothing is reinstalled unless pyproject.toml
# or the requested extras changed.
#   scripts/setup.sh [EXTRAS]     e.g. scripts/setup.sh app,test
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-app}"
venv="${SEQMAMBA_VENV:-.venv}"
python="${PYTHON:-python3}"

# The browser test drives Debian's chromium (the `test` extra brings Playwright's Python package);
# a fresh CI machine lacks it, so install it there when we may.
if [[ ",$extras," == *,test,* && "${CI:-}" == "true" && $EUID -eq 0 ]] && ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
stamp="$venv/.seqmamba-installed-$(cat pyproject.toml requirements/*.txt | sha1sum | cut -c1-12)-${extras//,/_}"
if [[ -f "$stamp" ]]; then exit 0; fi

pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "${pip[@]}" torch                              # CUDA build from PyPI
  else
    # CPU-only machine: a pinned CPU build (PIP_INDEX_URL / PIP_EXTRA_INDEX_URL may point at
    # PyTorch's CPU index; an unpinned torch from PyPI is the multi-GB CUDA build).
    "${pip[@]}" -r requirements/cpu.txt
  fi
fi
"${pip[@]}" -e ".[${extras}]"
# Our top-level packages first on the import path, even where another distribution is named "kernels".
"$venv/bin/python" scripts/install_import_guard.py >/dev/null
rm -f "$venv"/.seqmamba-installed-*
touch "$stamp"

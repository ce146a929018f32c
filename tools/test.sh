#!/usr/bin/env bash
# Command (2) of the README: install the test dependencies into .venv and run the whole suite.
# Works on a fresh clone with no stdin (CI=true); safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian tools the tests use: systemd-analyze verifies systemd/edged.service; mender-artifact
# builds a real Mender artifact for the Update Module test.
need=""
command -v systemd-analyze >/dev/null 2>&1 || need="$need systemd"
command -v mender-artifact >/dev/null 2>&1 || need="$need mender-artifact"
if [ -n "$need" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
  else
    echo "tools/test.sh: missing Debian packages:$need (install them with apt-get)" >&2
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
.venv/bin/python tools/fetch_models.py --dest models
exec .venv/bin/python -m pytest "$@"

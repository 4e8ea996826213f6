#!/usr/bin/env bash
# Sets up ./.venv with the pinned stack (plus test tools with --test) and, where Debian's apt is
# available, Fashion-MNIST's original IDX files (package dataset-fashion-mnist), so nothing has
# to be downloaded from a dataset hub. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -c 'import sys; assert (3, 10) <= sys.version_info[:2] < (3, 12), "need Python 3.10 or 3.11 (tensorflow-privacy 0.9.0)"'
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
.venv/bin/python -m pip install -q -c constraints.txt -e ".${extras}"

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) ||
      echo "note: could not install dataset-fashion-mnist; tensorflow-datasets will download the data"
  else
    echo "note: dataset-fashion-mnist not installed; tensorflow-datasets will download the data"
  fi
fi
.venv/bin/python -c 'import dpdfd_tf; print("dpdfd_tf", dpdfd_tf.__version__, "ready")' 2>/dev/null

#!/usr/bin/env bash
# GPU protocol (issue #15, item 4), one command on a bare GPU machine: Python with torch, torchvision and
# scikit-learn, plus pydantic (the library validates its configs with it; see below when it is missing).
#
#   cp cifar10-jpeg.tar.gz bench/data/        # bench/data/ is ignored by git; or pass --data-root DIR
#   bash bench/gpu.sh                         # ~8 min on one H100/H200: table on stdout, bench/results/gpu.json
#   bash bench/gpu.sh --tiny --device cpu     # the same path on the CPU in under a minute (the test suite's check)
#
# Options go to bench/gpu_protocol.py (--epochs, --width, --methods, --compile, --budget-s, --out; see --help).
# No pydantic on the machine and no network: on a machine with network, for the GPU machine's Python version
# and platform, fetch the wheels into bench/data/wheels/, for example
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d bench/data/wheels pydantic
# and this script unpacks them into bench/data/pylib/ and puts that on PYTHONPATH (no pip, nothing installed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=bench/data/wheels
PYLIB=bench/data/pylib

tiny=0
for arg in "$@"; do [[ $arg == --tiny ]] && tiny=1; done

if ! "$PY" -c "import torch, torchvision, sklearn" 2>/dev/null; then
    echo "gpu.sh: $PY lacks torch, torchvision or scikit-learn; they are the protocol's requirements" >&2
    exit 2
fi
if ! "$PY" -c "import pydantic" 2>/dev/null; then
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        echo "gpu.sh: pydantic not installed; unpacking the wheels of $WHEELS into $PYLIB"
        mkdir -p "$PYLIB"
        for whl in "$WHEELS"/*.whl; do "$PY" -m zipfile -e "$whl" "$PYLIB"; done
        export PYTHONPATH="$PWD/$PYLIB${PYTHONPATH:+:$PYTHONPATH}"
        "$PY" -c "import pydantic" || { echo "gpu.sh: the wheels in $WHEELS do not import here" >&2; exit 2; }
    else
        echo "gpu.sh: the library needs pydantic and $PY has none; put its wheels in $WHEELS (see the header)" >&2
        exit 2
    fi
fi
if [[ $tiny == 0 ]] && ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu.sh: torch sees no CUDA device; run with --tiny --device cpu for the CPU check" >&2
    exit 2
fi
export UNLEARNING_CACHE=${UNLEARNING_CACHE:-$PWD/bench/data/cache}
exec "$PY" -m bench.gpu_protocol "$@"

#!/usr/bin/env bash
# The test command of the README: installs npasr with its test, weight and reference extras into
# the active Python environment, then runs pytest (CI's bounded subset: everything not marked slow).
#   bash scripts/test.sh            # what CI runs
#   bash scripts/test.sh -m slow    # the long real-size tests, run by hand before resolving an issue
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e '.[models,test,reference]'
# openai-whisper is the reference for parity tests; --no-deps keeps its CUDA-only triton out.
python -m pip install -q --no-deps 'openai-whisper==20250625'
exec python -m pytest "$@"

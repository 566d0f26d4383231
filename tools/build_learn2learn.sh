#!/usr/bin/env bash
# Build learn2learn 0.2.0 from its source archive for this Python, cache the wheel, install it.
#
# Why: learn2learn's newest release ships only as an sdist whose Cython-generated C
# files do not compile on Python >= 3.11 (`longintrepr.h: No such file or directory`,
# upstream issue #413). Regenerating them with a current Cython fixes the build.
# Needs only PyPI (no GitHub) and a C compiler with the Python headers.
#
# Usage: tools/build_learn2learn.sh [PYTHON] [WHEEL_DIR]
#   PYTHON     interpreter of the target environment (default: .venv/bin/python)
#   WHEEL_DIR  wheel cache (default: .wheels); a cached wheel for this Python is reused
# Environment: CONSTRAINTS (default: constraints.txt when present) pins torch while
# installing learn2learn's runtime needs.
set -euo pipefail

PY=${1:-.venv/bin/python}
WHEELS=${2:-.wheels}
VERSION=0.2.0
CONSTRAINTS=${CONSTRAINTS:-constraints.txt}
# What `import learn2learn` needs at run time. learn2learn's metadata also lists gsutil
# (only its QuickDraw downloader shells out to it) and qpth (only MetaOptNet's SVM head,
# imported lazily): both are left out, so the wheel is installed with --no-deps.
RUNTIME_DEPS=(numpy scipy "gym>=0.14" requests tqdm)

case "$PY" in
    */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;;  # absolute: we cd below
    *) PY=$(command -v "$PY") ;;
esac

pip_quiet() { "$PY" -m pip --disable-pip-version-check -q "$@"; }
constraint_args=()
[ -f "$CONSTRAINTS" ] && constraint_args=(-c "$CONSTRAINTS")

tag=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
mkdir -p "$WHEELS"
WHEELS=$(cd "$WHEELS" && pwd)
wheel=$(ls "$WHEELS"/learn2learn-"$VERSION"-"$tag"-*.whl 2>/dev/null | head -n 1 || true)

if [ -z "$wheel" ]; then
    start=$(date +%s)
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    echo "building learn2learn $VERSION for $tag from source (about 30 s) ..." >&2
    pip_quiet install "cython>=3" "setuptools>=64" wheel
    # --no-build-isolation: preparing the sdist's metadata in an isolated env would build
    # setuptools itself from source under --no-binary :all: (minutes); ours is current.
    pip_quiet download --no-binary :all: --no-deps --no-build-isolation \
        "learn2learn==$VERSION" -d "$work"
    tar -xzf "$work/learn2learn-$VERSION.tar.gz" -C "$work"
    src="$work/learn2learn-$VERSION"
    rm -f "$src"/learn2learn/data/*.c
    (cd "$src" && "$PY" -m cython -3 learn2learn/data/*.pyx)
    (cd "$src" && "$PY" -m pip --disable-pip-version-check -q wheel --no-deps \
        --no-build-isolation -w "$WHEELS" .)
    wheel=$(ls "$WHEELS"/learn2learn-"$VERSION"-"$tag"-*.whl | head -n 1)
    echo "built $(basename "$wheel") in $(($(date +%s) - start)) s" >&2
fi

pip_quiet install "${constraint_args[@]}" "${RUNTIME_DEPS[@]}"
pip_quiet install --no-deps "$wheel"
"$PY" -c 'import learn2learn; print("learn2learn", learn2learn.__version__)' 2>/dev/null

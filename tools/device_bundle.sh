#!/usr/bin/env bash
# Prepare .device/ (ignored by git) for a GPU machine that has no package registry.
#
# The lent GPU machines run their own Python (3.12) with torch, numpy, typer, rich, pyyaml,
# pillow, matplotlib, scipy, requests, tqdm and cloudpickle, but reach no registry. This
# script, run here where PyPI is reachable, puts beside the checkout what fewnorm and the
# benchmarks need on top of that image:
#   .device/wheels/  pydantic and its parts, platformdirs, gym and gym-notices (for
#                    learn2learn's import), and learn2learn 0.2.0 built for that Python
#                    (tools/build_learn2learn.sh: it ships no wheel for Python >= 3.11)
#   .device/data/omniglot/  the two small Omniglot zips, copied from ../shared/datasets
# Then, on the GPU machine, tools/device_suite.sh installs them into /tmp/site and runs
# the CUDA benchmarks. Pass `.device` as the device call's carry path.
#
# Usage: tools/device_bundle.sh [PYTHON_VERSION]   (default 3.12, the GPU image's)
# Environment: PYENV_ROOT (default ~/.pyenv) to find that Python for the learn2learn build;
# SHARED_DATA (default ../shared/datasets).
set -euo pipefail
cd "$(dirname "$0")/.."

PYVER=${1:-3.12}
TAG=cp${PYVER/./}
OUT=.device
SHARED_DATA=${SHARED_DATA:-../shared/datasets}
# Pure-Python wheels and the one compiled part (pydantic-core); versions as the project's
# own install resolves them, so the GPU run imports what CI tests.
PINS=(
    "pydantic==$(.venv/bin/python -c 'import pydantic; print(pydantic.VERSION)')"
    "pydantic-core==$(.venv/bin/python -c 'import pydantic_core; print(pydantic_core.__version__)')"
    "annotated-types==$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("annotated-types"))')"
    "typing-inspection==$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("typing-inspection"))')"
    "platformdirs==$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("platformdirs"))')"
    "gym==0.26.2"
    "gym-notices==0.0.8"
)

if [ ! -x .venv/bin/python ]; then
    echo "error: run 'make install' first (the pins are read from .venv)" >&2
    exit 2
fi
for zip in images_background_small1.zip images_background_small2.zip; do
    if [ ! -f "$SHARED_DATA/omniglot/$zip" ]; then
        echo "error: $SHARED_DATA/omniglot/$zip not found; set SHARED_DATA to the folder holding omniglot/" >&2
        exit 2
    fi
done

rm -rf "$OUT"
mkdir -p "$OUT/wheels" "$OUT/data/omniglot"
platforms=()
for n in 17 27 28 34; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
# pydantic-core is compiled: its wheel for that Python and Linux. The rest is pure Python
# (gym ships only an sdist): wheels built or fetched here serve any Python.
.venv/bin/python -m pip --disable-pip-version-check -q download --no-deps --only-binary=:all: \
    --python-version "$PYVER" --implementation cp "${platforms[@]}" --platform manylinux2014_x86_64 \
    -d "$OUT/wheels" "${PINS[1]}"
.venv/bin/python -m pip --disable-pip-version-check -q wheel --no-deps -w "$OUT/wheels" \
    "${PINS[0]}" "${PINS[@]:2}"

# learn2learn is compiled (Cython): build it with that Python, in a throw-away venv.
python_bin=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$PYVER"*/bin/python3 2>/dev/null | head -n 1 || true)
[ -z "$python_bin" ] && python_bin=$(command -v "python$PYVER" || true)
if [ -z "$python_bin" ]; then
    echo "error: no Python $PYVER here to build learn2learn with; install it (pyenv install $PYVER)" >&2
    exit 2
fi
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
"$python_bin" -m venv "$build/venv"
# The build script ends by importing learn2learn, which needs torch: not in this venv, and
# not needed to build. The wheel is what counts.
CONSTRAINTS=/dev/null tools/build_learn2learn.sh "$build/venv/bin/python" .wheels >"$build/log" 2>&1 || true
if ! cp .wheels/learn2learn-0.2.0-"$TAG"-*.whl "$OUT/wheels/" 2>/dev/null; then
    echo "error: learn2learn did not build for $TAG:" >&2
    grep -v "^WARNING: Location" "$build/log" | tail -n 5 >&2
    exit 1
fi

cp "$SHARED_DATA"/omniglot/images_background_small{1,2}.zip "$OUT/data/omniglot/"
echo "$OUT: $(du -sh "$OUT" | cut -f1) ($(ls "$OUT/wheels" | wc -l) wheels for $TAG, Omniglot small zips)"

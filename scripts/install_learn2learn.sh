#!/usr/bin/env bash
# Build and install learn2learn 0.2.0 on Python >= 3.11.
#
# Why: the sdist on PyPI ships Cython-generated C files made by an old Cython that
# do not compile against the CPython 3.11 headers, so `pip install learn2learn`
# fails. Regenerating the C files with a current Cython fixes the build.
#
# Usage: bash scripts/install_learn2learn.sh [python]   (default: the `python` on PATH)
set -euo pipefail

PY="${1:-python}"
# Absolute path without resolving symlinks (a venv's python is a symlink to the base one).
if [[ "$PY" == */* ]]; then PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"; fi
VERSION="0.2.0"

if "$PY" -c "import learn2learn, sys; sys.exit(learn2learn.__version__ != '$VERSION')" 2>/dev/null; then
    echo "learn2learn $VERSION is already installed for $PY"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$PY" -m pip install --quiet "cython>=3.0" setuptools wheel
"$PY" -m pip download --quiet --no-deps --no-binary :all: "learn2learn==$VERSION" -d "$work"
tar -xzf "$work/learn2learn-$VERSION.tar.gz" -C "$work"
src="$work/learn2learn-$VERSION"

# Drop the stale generated C files; build_ext re-cythonizes the .pyx sources.
rm -f "$src"/learn2learn/data/*.c
(cd "$src" && "$PY" setup.py --quiet build_ext)

# Install the package itself (now with fresh C files), then its declared runtime needs.
"$PY" -m pip install --quiet --no-deps --no-build-isolation "$src"
"$PY" -m pip install --quiet numpy scipy requests tqdm gsutil "gym>=0.14.0" "qpth>=0.0.15" torch torchvision
"$PY" -c "import learn2learn; print('learn2learn', learn2learn.__version__, 'installed')"

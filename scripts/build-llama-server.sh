#!/usr/bin/env bash
# Build the C++ llama-server used by the end-to-end tier (tests/e2e/).
#
# The llama.cpp sources come from the llama-cpp-python source package on PyPI
# (vendor/llama.cpp inside the sdist), so the build is pinned to one version.
# The binary is cached outside the repository; a second run prints the cached
# path and exits at once.
#
# Environment:
#   LLAMA_CACHE_DIR   cache root (default: $HOME/.cache/llm-proxy)
#   PYTHON            python used for `pip download` (default: /work/venv/bin/python
#                     if present, else python3)
#   JOBS              parallel build jobs (default: 2)
#
# The last line printed is the binary's path.
set -euo pipefail

VERSION=0.3.36
CACHE_ROOT="${LLAMA_CACHE_DIR:-$HOME/.cache/llm-proxy}"
# A portable x86-64 build (AVX2/FMA/F16C), not -march=native: a native build on a CPU that reports AMX
# uses AMX tiles, and where the kernel or sandbox does not grant them the server dies loading a model.
FLAVOR=portable-avx2
DEST_DIR="$CACHE_ROOT/llama-server-$VERSION-$FLAVOR"
BIN="$DEST_DIR/llama-server"
JOBS="${JOBS:-2}"

if [ -x "$BIN" ]; then
    echo "$BIN"
    exit 0
fi

if [ -z "${PYTHON:-}" ]; then
    if [ -x /work/venv/bin/python ]; then PYTHON=/work/venv/bin/python; else PYTHON=python3; fi
fi

for tool in cmake make cc c++ tar; do
    command -v "$tool" >/dev/null 2>&1 || { echo "error: '$tool' is required" >&2; exit 1; }
done

mkdir -p "$DEST_DIR"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/llama-server-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

echo "downloading llama-cpp-python==$VERSION sources into $WORK" >&2
"$PYTHON" -m pip download --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$WORK" >&2

SDIST="$(ls "$WORK"/llama_cpp_python-"$VERSION".tar.gz "$WORK"/llama-cpp-python-"$VERSION".tar.gz 2>/dev/null | head -n1 || true)"
[ -n "$SDIST" ] || { echo "error: sdist not found in $WORK" >&2; ls -l "$WORK" >&2; exit 1; }
tar -xzf "$SDIST" -C "$WORK"
SRC="$(find "$WORK" -maxdepth 4 -type d -path '*/vendor/llama.cpp' | head -n1)"
[ -n "$SRC" ] || { echo "error: vendor/llama.cpp not found in $SDIST" >&2; exit 1; }

echo "configuring $SRC" >&2
cd "$SRC"
cmake -B build \
    -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_SERVER=ON \
    -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
    -DCMAKE_BUILD_TYPE=Release >&2
echo "building llama-server with -j$JOBS (about 10 minutes on 2 cores)" >&2
cmake --build build --target llama-server -j"$JOBS" >&2

BUILT="$SRC/build/bin/llama-server"
[ -x "$BUILT" ] || BUILT="$(find "$SRC/build" -type f -name llama-server -perm -u+x | head -n1)"
[ -n "$BUILT" ] && [ -x "$BUILT" ] || { echo "error: llama-server binary not produced" >&2; exit 1; }

# Copy atomically so a concurrent run never sees a half-written binary.
cp "$BUILT" "$BIN.tmp.$$"
chmod 755 "$BIN.tmp.$$"
mv -f "$BIN.tmp.$$" "$BIN"
"$BIN" --version >&2 2>&1 || true
echo "$BIN"

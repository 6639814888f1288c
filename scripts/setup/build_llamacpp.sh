#!/usr/bin/env bash
# Build llama.cpp's CPU tools (llama-bench, llama-lookup, llama-cli, llama-simple, llama-quantize,
# llama-tokenize) from the sources vendored in the PyPI sdist of llama-cpp-python, for the peer comparison
# (python -m scripts.peer_compare) and the engine profile (python -m scripts.profile engine). Nothing of llama.cpp
# is committed: everything lands in the git-ignored .llamacpp/.
#
#   nice -n 10 bash scripts/setup/build_llamacpp.sh            # ~15-30 min on 2 shared cores
#   LLAMACPP_DIR=/elsewhere bash scripts/setup/build_llamacpp.sh
set -euo pipefail
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DIR="${LLAMACPP_DIR:-$ROOT/.llamacpp}"
JOBS="${JOBS:-2}"
mkdir -p "$DIR"
cd "$DIR"
if [ ! -d src ]; then
  # only this package as an sdist (its build tools may come as wheels: pip prepares its metadata)
  pip download --no-deps --no-binary llama-cpp-python "llama-cpp-python==$VERSION" -d sdist
  tar -xzf sdist/llama_cpp_python-"$VERSION".tar.gz
  mv "llama_cpp_python-$VERSION/vendor/llama.cpp" src
  rm -rf "llama_cpp_python-$VERSION"
fi
cmake -S src -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_OPENMP=ON
cmake --build build -j "$JOBS" --target llama-bench llama-lookup llama-simple llama-quantize llama-tokenize
ls -l build/bin
echo "llama.cpp tools in $DIR/build/bin"

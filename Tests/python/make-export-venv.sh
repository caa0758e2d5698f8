#!/usr/bin/env bash
# Creates the venv ExportTests checks dtrain's exports in: torch (CPU code only), transformers,
# PEFT and gguf from PyPI, and llama-cpp-python built from its sdist (needs a C/C++ compiler;
# pip fetches CMake and Ninja itself). Usage: make-export-venv.sh VENV
set -euo pipefail
VENV="$1"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# torch's wheel names its CUDA libraries as dependencies; its CPU code needs none of them.
"$VENV/bin/pip" install -q --no-deps torch==2.15.0
"$VENV/bin/pip" install -q filelock typing-extensions sympy networkx jinja2 fsspec numpy "setuptools>=77"
"$VENV/bin/pip" install -q transformers==5.24.0 peft gguf
# A machine without g++ builds it with the Swift toolchain's clang.
if ! command -v c++ >/dev/null 2>&1; then
    CLANG="$(dirname "$(command -v swift)")/clang"
    export CC="$CLANG" CXX="$CLANG++"
fi
"$VENV/bin/pip" install -q --no-binary llama-cpp-python llama-cpp-python
"$VENV/bin/python" -c "import torch, transformers, peft, gguf, llama_cpp"

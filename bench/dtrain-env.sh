# Sourced by the comparison scripts: the demo model, a release build of dtrain, and the CPU and
# BLAS setting the figures were measured with (on stderr, beside them). Sets MODEL and DTRAIN.
MODEL="$(bash launch/fetch-model.sh)"
swift build -c release >&2
DTRAIN="$(swift build -c release --show-bin-path)/dtrain"
grep -m1 "model name" /proc/cpuinfo >&2
echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}" >&2

// The IO module: GGUF, safetensors, HDF5, exports.
import CHDF5

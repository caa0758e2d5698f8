// zlib's inflateInit2 is a macro (it passes ZLIB_VERSION and sizeof(z_stream)); Swift cannot
// import function-like macros, so it is exposed as a static inline function.
#pragma once
#include <zlib.h>

/// Starts inflating gzip or zlib data (header detected automatically: windowBits 15 + 32).
static inline int dtrain_inflate_init_auto(z_stream *stream) { return inflateInit2(stream, 15 + 32); }

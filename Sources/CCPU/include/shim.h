// The CPU's vector units (CPUID, XGETBV) and OpenBLAS's kernel set, chosen before any product.
//
// OpenBLAS picks its kernels in its own library constructor, from its table of CPU models. When
// it does not know a model it falls back to far slower ones (Debian 12's 0.3.21 runs its SSE3
// "Prescott" kernels on Intel Emerald Rapids). dtrain's constructor (dtrain_cpu.c) runs right after
// OpenBLAS's, in every process that links it (dtrain, its ranks under mpirun or srun, the
// tests), and switches OpenBLAS to the widest kernel set the CPU and the operating system
// support, unless the user named one with OPENBLAS_CORETYPE.
#pragma once
#include <stdint.h>

/// Vector levels, in increasing order: what the CPU (and OS) can run, and what a kernel set uses.
enum {
    DTRAIN_VEC_SCALAR = 0,  // no vector unit this code knows (or not x86-64)
    DTRAIN_VEC_SSE = 1,     // 128-bit
    DTRAIN_VEC_AVX = 2,     // 256-bit, no FMA
    DTRAIN_VEC_AVX2 = 3,    // 256-bit with FMA (x86-64-v3)
    DTRAIN_VEC_AVX512 = 4,  // 512-bit: AVX-512 F, CD, BW, VL, DQ (x86-64-v4 and what skylake-avx512 code needs)
};

/// What the CPU has, read once at load.
typedef struct {
    char vendor[13];
    char brand[49];
    uint32_t family, model, stepping;
    int sse3, avx, fma, avx2, avx512f, avx512cd, avx512bw, avx512vl, avx512dq, avx512bf16, amx;
    /// The OS saves the YMM (AVX) and ZMM/opmask (AVX-512) state: without it the units can't be used.
    int osAVX, osAVX512;
    /// The highest DTRAIN_VEC_* level usable here.
    int level;
} dtrain_cpu_features;

/// The load-time decision about OpenBLAS's kernels.
typedef struct {
    /// The kernels OpenBLAS picked by itself (or was told by the user, or the test hook forced).
    char openblasChose[32];
    /// The kernels running now.
    char running[32];
    /// OPENBLAS_CORETYPE as the process found it ("" when unset).
    char userCoretype[32];
    /// The kernel set dtrain asked for ("" when it kept OpenBLAS's choice).
    char switchedTo[32];
    /// 1 when DTRAIN_TEST_BLAS_FALLBACK forced OpenBLAS's own choice (the test hook).
    int forcedByTestHook;
    /// 0 when the switch was needed but failed (the entry points are missing: a BLAS built
    /// without dynamic kernel selection, or not OpenBLAS).
    int switchWorked;
} dtrain_blas_selection;

const dtrain_cpu_features *dtrain_cpu(void);
const dtrain_blas_selection *dtrain_blas_selection_made(void);

/// The DTRAIN_VEC_* level of an OpenBLAS kernel set name ("Haswell", "SkylakeX", ...), any case.
int dtrain_blas_kernel_level(const char *name);

/// The kernel set dtrain asks for at a vector level ("Cooperlake" with AVX512_BF16, "SkylakeX",
/// "Haswell", "Sandybridge"), or "" below AVX.
const char *dtrain_blas_kernels_for_level(int level, int bf16);

/// Switches OpenBLAS to the named kernel set in this process; returns 1 when it now runs them.
/// Not safe while a product runs on another thread: call it before any, or between them.
int dtrain_blas_switch(const char *name);

/// Has OpenBLAS pick its kernels again from the environment as it is (OPENBLAS_CORETYPE, or its
/// own detection); returns 0 when this BLAS cannot.
int dtrain_blas_reinit(void);

/// The name of the kernels OpenBLAS runs now ("unknown" when it is not OpenBLAS).
const char *dtrain_blas_running(void);

/// Dropout's mask for one row of `count` elements keyed `key` (dtrain_dropout.c): ceil(count/32)
/// words, bit j of word w set when element 32w + j is kept, i.e. when its 16-bit draw is at least
/// `threshold`. The draw of lane i (0..<16) of word w is lowbias32(fold(key) ^ (16w + i) * 0x9E3779B9);
/// its low half is element 32w + i's, its high half element 32w + 16 + i's (CounterRandom.dropoutDraw).
/// Only on a CPU with the width's instructions (x86-64).
void dtrain_dropout_mask_row_avx512(uint32_t *bits, long count, uint64_t key, uint32_t threshold);
void dtrain_dropout_mask_row_avx2(uint32_t *bits, long count, uint64_t key, uint32_t threshold);

/// Asks for the cache line holding `p` ahead of its use: a streamed matrix's next rows, which the
/// hardware prefetcher does not foresee when several short rows are read side by side.
static inline void dtrain_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }

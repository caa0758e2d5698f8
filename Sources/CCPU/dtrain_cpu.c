// CPU feature detection and the load-time choice of OpenBLAS's kernels (see include/shim.h).
#define _GNU_SOURCE
#include "shim.h"

#include <ctype.h>
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static int cpuid(uint32_t leaf, uint32_t subleaf, uint32_t r[4]) {
    unsigned int max = __get_cpuid_max(leaf & 0x80000000u, 0);
    r[0] = r[1] = r[2] = r[3] = 0;
    if (max < leaf) return 0;
    __cpuid_count(leaf, subleaf, r[0], r[1], r[2], r[3]);
    return 1;
}

static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static void detect(dtrain_cpu_features *f) {
    uint32_t r[4];
    cpuid(0, 0, r);
    memcpy(f->vendor, &r[1], 4); memcpy(f->vendor + 4, &r[3], 4); memcpy(f->vendor + 8, &r[2], 4);
    f->vendor[12] = 0;
    if (cpuid(0x80000004u, 0, r)) {
        for (uint32_t i = 0; i < 3; i++) { cpuid(0x80000002u + i, 0, r); memcpy(f->brand + 16 * i, r, 16); }
        f->brand[48] = 0;
    }
    cpuid(1, 0, r);
    uint32_t base = (r[0] >> 8) & 0xF, ext = (r[0] >> 20) & 0xFF;
    f->family = base == 0xF ? base + ext : base;
    f->model = ((r[0] >> 4) & 0xF) | ((base == 0x6 || base == 0xF) ? ((r[0] >> 16) & 0xF) << 4 : 0);
    f->stepping = r[0] & 0xF;
    f->sse3 = (r[2] >> 0) & 1;
    f->fma = (r[2] >> 12) & 1;
    f->avx = (r[2] >> 28) & 1;
    int osxsave = (r[2] >> 27) & 1;
    uint64_t xcr0 = osxsave ? xgetbv0() : 0;
    f->osAVX = (xcr0 & 0x6) == 0x6;             // XMM and YMM state
    f->osAVX512 = f->osAVX && (xcr0 & 0xE0) == 0xE0;  // opmask, ZMM0-15 upper halves, ZMM16-31
    cpuid(7, 0, r);
    f->avx2 = (r[1] >> 5) & 1;
    f->avx512f = (r[1] >> 16) & 1;
    f->avx512dq = (r[1] >> 17) & 1;
    f->avx512cd = (r[1] >> 28) & 1;
    f->avx512bw = (r[1] >> 30) & 1;
    f->avx512vl = (r[1] >> 31) & 1;
    f->amx = (r[3] >> 24) & 1;  // AMX-TILE
    cpuid(7, 1, r);
    f->avx512bf16 = (r[0] >> 5) & 1;
    f->level = DTRAIN_VEC_SCALAR;
    if (f->sse3) f->level = DTRAIN_VEC_SSE;
    if (f->avx && f->osAVX) f->level = DTRAIN_VEC_AVX;
    if (f->level == DTRAIN_VEC_AVX && f->avx2 && f->fma) f->level = DTRAIN_VEC_AVX2;
    if (f->level == DTRAIN_VEC_AVX2 && f->osAVX512 && f->avx512f && f->avx512cd && f->avx512bw && f->avx512vl &&
        f->avx512dq)
        f->level = DTRAIN_VEC_AVX512;
}
#else
static void detect(dtrain_cpu_features *f) { strcpy(f->vendor, "unknown"); f->level = DTRAIN_VEC_SCALAR; }
#endif

static dtrain_cpu_features features;
static dtrain_blas_selection selection;

const dtrain_cpu_features *dtrain_cpu(void) { return &features; }
const dtrain_blas_selection *dtrain_blas_selection_made(void) { return &selection; }

int dtrain_blas_kernel_level(const char *name) {
    static const struct { const char *name; int level; } table[] = {
        {"sapphirerapids", DTRAIN_VEC_AVX512}, {"cooperlake", DTRAIN_VEC_AVX512}, {"skylakex", DTRAIN_VEC_AVX512},
        {"haswell", DTRAIN_VEC_AVX2}, {"zen", DTRAIN_VEC_AVX2},
        {"sandybridge", DTRAIN_VEC_AVX}, {"bulldozer", DTRAIN_VEC_AVX}, {"piledriver", DTRAIN_VEC_AVX},
        {"steamroller", DTRAIN_VEC_AVX}, {"excavator", DTRAIN_VEC_AVX},
    };
    char lower[32];
    size_t n = 0;
    for (; name[n] && n < sizeof lower - 1; n++) lower[n] = (char)tolower((unsigned char)name[n]);
    lower[n] = 0;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(lower, table[i].name) == 0) return table[i].level;
    // Every other OpenBLAS x86 kernel set (Prescott, Core2, Penryn, Nehalem, Barcelona, ...) is SSE.
    return (strcmp(lower, "unknown") == 0 || n == 0) ? DTRAIN_VEC_SCALAR : DTRAIN_VEC_SSE;
}

const char *dtrain_blas_kernels_for_level(int level, int bf16) {
    switch (level) {
    case DTRAIN_VEC_AVX512: return bf16 ? "Cooperlake" : "SkylakeX";
    case DTRAIN_VEC_AVX2: return "Haswell";
    case DTRAIN_VEC_AVX: return "Sandybridge";
    default: return "";
    }
}

const char *dtrain_blas_running(void) {
    char *(*corename)(void) = (char *(*)(void))dlsym(RTLD_DEFAULT, "openblas_get_corename");
    const char *name = corename ? corename() : NULL;
    return name ? name : "unknown";
}

static void copyName(char dst[32], const char *src) {
    strncpy(dst, src, 31);
    dst[31] = 0;
}

int dtrain_blas_switch(const char *name) {
    // OpenBLAS's dynamic-architecture entry points: quit forgets the current table, init picks
    // one again, reading OPENBLAS_CORETYPE with getenv, and sets its blocking parameters.
    void (*quit)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit");
    void (*init)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init");
    if (!quit || !init || !name[0]) return 0;
    const char *before = getenv("OPENBLAS_CORETYPE");
    char saved[64] = {0};
    if (before) strncpy(saved, before, sizeof saved - 1);
    setenv("OPENBLAS_CORETYPE", name, 1);
    quit();
    init();
    // The environment is left as the process found it, so child processes decide for themselves.
    if (before) setenv("OPENBLAS_CORETYPE", saved, 1); else unsetenv("OPENBLAS_CORETYPE");
    return strcasecmp(dtrain_blas_running(), name) == 0;
}

int dtrain_blas_reinit(void) {
    void (*quit)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit");
    void (*init)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init");
    if (!quit || !init) return 0;
    quit();
    init();
    return 1;
}

// Runs after OpenBLAS's own constructor: the executable's (and the test bundle's) constructors
// run after those of the libraries they depend on.
__attribute__((constructor)) static void dtrain_choose_blas_kernels(void) {
    detect(&features);
    const char *user = getenv("OPENBLAS_CORETYPE");
    copyName(selection.userCoretype, user ? user : "");
    // Test hook: behave as if OpenBLAS had picked these (lesser) kernels by itself.
    const char *forced = getenv("DTRAIN_TEST_BLAS_FALLBACK");
    if (forced && forced[0] && !(user && user[0])) selection.forcedByTestHook = dtrain_blas_switch(forced);
    copyName(selection.openblasChose, dtrain_blas_running());
    copyName(selection.running, selection.openblasChose);
    selection.switchWorked = 1;
    if (user && user[0]) return;  // the user's choice stands (a warning says when it is below the CPU's)
    if (dtrain_blas_kernel_level(selection.openblasChose) >= features.level) return;
    const char *best = dtrain_blas_kernels_for_level(features.level, features.avx512bf16);
    if (!best[0]) return;
    copyName(selection.switchedTo, best);
    selection.switchWorked = 0;
    // Seen once in a full test run: the first re-initialisation did not take (the process kept
    // OpenBLAS's fallback), the next one did. A few tries cost microseconds.
    for (int attempt = 0; attempt < 3 && !selection.switchWorked; attempt++) selection.switchWorked = dtrain_blas_switch(best);
    // A name OpenBLAS cannot force makes it fall back to a set of its own choosing: go back to
    // the one it had (a forced test-hook set is named; otherwise the environment decides).
    if (!selection.switchWorked && !dtrain_blas_switch(selection.openblasChose)) dtrain_blas_reinit();
    copyName(selection.running, dtrain_blas_running());
}

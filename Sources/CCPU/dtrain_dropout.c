// Dropout's mask words, one function per vector width (see include/shim.h). These are in C for
// one instruction Swift cannot name: a vector comparison's lanes as the bits of an integer
// (AVX-512's compare-into-mask, AVX2's movemask). Written in Swift, the same words took a
// reduction tree of some 75 instructions per word.
#include "shim.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define DTRAIN_WEYL 0x9E3779B9u

__attribute__((target("avx512f")))
void dtrain_dropout_mask_row_avx512(uint32_t *bits, long count, uint64_t key, uint32_t threshold) {
    const __m512i folded = _mm512_set1_epi32((int)(uint32_t)(key ^ (key >> 32)));
    const __m512i laneWeyl = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                                _mm512_set1_epi32((int)DTRAIN_WEYL));
    const __m512i t = _mm512_set1_epi32((int)threshold), low = _mm512_set1_epi32(0xFFFF);
    const __m512i m1 = _mm512_set1_epi32(0x7FEB352D), m2 = _mm512_set1_epi32((int)0x846CA68Bu);
    for (long w = 0; w < (count + 31) / 32; w++) {
        __m512i x = _mm512_xor_si512(folded, _mm512_add_epi32(laneWeyl, _mm512_set1_epi32((int)((uint32_t)(16 * w) * DTRAIN_WEYL))));
        x = _mm512_mullo_epi32(_mm512_xor_si512(x, _mm512_srli_epi32(x, 16)), m1);
        x = _mm512_mullo_epi32(_mm512_xor_si512(x, _mm512_srli_epi32(x, 15)), m2);
        x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
        uint32_t lo = _mm512_cmpge_epu32_mask(_mm512_and_si512(x, low), t);
        uint32_t hi = _mm512_cmpge_epu32_mask(_mm512_srli_epi32(x, 16), t);
        bits[w] = lo | hi << 16;
    }
}

__attribute__((target("avx2")))
void dtrain_dropout_mask_row_avx2(uint32_t *bits, long count, uint64_t key, uint32_t threshold) {
    const __m256i folded = _mm256_set1_epi32((int)(uint32_t)(key ^ (key >> 32)));
    const __m256i weyl = _mm256_set1_epi32((int)DTRAIN_WEYL);
    const __m256i lane0 = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), weyl);
    const __m256i lane1 = _mm256_mullo_epi32(_mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15), weyl);
    // Draws and threshold are both at most 2^16, so a signed comparison against threshold - 1
    // (AVX2 has no unsigned one) is draw >= threshold.
    const __m256i t1 = _mm256_set1_epi32((int)threshold - 1), low = _mm256_set1_epi32(0xFFFF);
    const __m256i m1 = _mm256_set1_epi32(0x7FEB352D), m2 = _mm256_set1_epi32((int)0x846CA68Bu);
    for (long w = 0; w < (count + 31) / 32; w++) {
        const __m256i step = _mm256_set1_epi32((int)((uint32_t)(16 * w) * DTRAIN_WEYL));
        uint32_t word = 0;
        for (int half = 0; half < 2; half++) {
            __m256i x = _mm256_xor_si256(folded, _mm256_add_epi32(half ? lane1 : lane0, step));
            x = _mm256_mullo_epi32(_mm256_xor_si256(x, _mm256_srli_epi32(x, 16)), m1);
            x = _mm256_mullo_epi32(_mm256_xor_si256(x, _mm256_srli_epi32(x, 15)), m2);
            x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
            uint32_t lo = (uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_and_si256(x, low), t1)));
            uint32_t hi = (uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_srli_epi32(x, 16), t1)));
            word |= lo << (8 * half) | hi << (16 + 8 * half);
        }
        bits[w] = word;
    }
}
#endif

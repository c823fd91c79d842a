// The arithmetic limit a kernel is measured against (benchmark support): multiply-adds per second of the
// instruction its tier multiplies with, run on this core in independent register-only chains — the same
// instruction mix as a kernel's inner loop (the product and the add into the accumulator), no loads, no epilogue.
// Measured, not computed from a datasheet: it folds in the clock under load and how the core executes the vector
// width (Zen 4 splits a 512-bit vpmaddwd in two, Zen 5 does not).
#include <string.h>
#include <time.h>
#include "kiln_kernel_checks.h"

#if defined(__x86_64__)
#include <immintrin.h>

enum { CHAINS = 12 };

static double seconds_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// Each probe runs `rounds` rounds of CHAINS independent accumulator chains and returns multiply-adds per second.
// An accumulator is also the product's first operand, so no product can be hoisted out of the loop; the empty asm
// hides the values from the compiler (else it would see twelve equal chains and compute one) and, after the loop,
// makes every chain's result needed.
#define KILN_PEAK_PROBE(name, features, vector, constraint, zero, step, macs_per_step) \
    __attribute__((target(features))) static double name(long rounds) { \
        vector acc[CHAINS], b = zero; \
        for (int k = 0; k < CHAINS; k++) { acc[k] = zero; __asm__ volatile("" : constraint(acc[k])); } \
        double start = seconds_now(); \
        for (long r = 0; r < rounds; r++) { \
            __asm__ volatile("" : constraint(b)); \
            _Pragma("clang loop unroll(full)") for (int k = 0; k < CHAINS; k++) acc[k] = step; \
        } \
        double elapsed = seconds_now() - start; \
        for (int k = 0; k < CHAINS; k++) __asm__ volatile("" : constraint(acc[k])); \
        return (double)rounds * CHAINS * (macs_per_step) / elapsed; \
    }

KILN_PEAK_PROBE(peak_vpmaddwd_ymm, "avx2", __m256i, "+x", _mm256_set1_epi16(1),
                _mm256_add_epi32(acc[k], _mm256_madd_epi16(acc[k], b)), 16)
KILN_PEAK_PROBE(peak_vpmaddubsw_ymm, "avx2", __m256i, "+x", _mm256_set1_epi16(1),
                _mm256_add_epi16(acc[k], _mm256_maddubs_epi16(acc[k], b)), 32)
KILN_PEAK_PROBE(peak_vpdpbusd_ymm, "avx2,avxvnni", __m256i, "+x", _mm256_set1_epi16(1),
                _mm256_dpbusd_avx_epi32(acc[k], acc[k], b), 32)
KILN_PEAK_PROBE(peak_vpmaddwd_zmm, "avx512f,avx512bw", __m512i, "+v", _mm512_set1_epi16(1),
                _mm512_add_epi32(acc[k], _mm512_madd_epi16(acc[k], b)), 32)
KILN_PEAK_PROBE(peak_vpmaddubsw_zmm, "avx512f,avx512bw", __m512i, "+v", _mm512_set1_epi16(1),
                _mm512_add_epi16(acc[k], _mm512_maddubs_epi16(acc[k], b)), 64)
KILN_PEAK_PROBE(peak_vpdpbusd_zmm, "avx512f,avx512bw,avx512vnni", __m512i, "+v", _mm512_set1_epi16(1),
                _mm512_dpbusd_epi32(acc[k], acc[k], b), 64)

typedef struct {
    const char *instruction;
    double (*probe)(long rounds);
    int isa;  // the kiln_isa that guarantees the instruction
} peak_probe;

static const peak_probe probes[] = {
    {"vpmaddwd ymm", peak_vpmaddwd_ymm, KILN_ISA_AVX2},        {"vpmaddubsw ymm", peak_vpmaddubsw_ymm, KILN_ISA_AVX2},
    {"vpdpbusd ymm", peak_vpdpbusd_ymm, KILN_ISA_AVXVNNI},     {"vpmaddwd zmm", peak_vpmaddwd_zmm, KILN_ISA_AVX512BW},
    {"vpmaddubsw zmm", peak_vpmaddubsw_zmm, KILN_ISA_AVX512BW}, {"vpdpbusd zmm", peak_vpdpbusd_zmm, KILN_ISA_AVX512VNNI},
};

/// The probe for a kernel: the instruction its inner loop multiplies with (-1: none, e.g. the scalar kernels).
static int probe_for(const kiln_kernel_info *kernel) {
    int narrow = strcmp(kernel->family, "qu8s8_igemm_narrow") == 0;
    int multiplies = narrow || strcmp(kernel->family, "qu8s8_igemm") == 0 || strcmp(kernel->family, "qu8s8_dwconv3x3") == 0
                     || strcmp(kernel->family, "qu8s8_dwconv") == 0;
    if (!multiplies) return -1;
    switch (kernel->isa) {
    case KILN_ISA_AVX2: return narrow ? 1 : 0;
    case KILN_ISA_AVXVNNI: return 2;
    case KILN_ISA_AVX512BW: return narrow ? 4 : 3;
    case KILN_ISA_AVX512VNNI: return 5;
    default: return -1;
    }
}

double kiln_kernel_limit(const kiln_kernel_info *kernel, const char **instruction) {
    static double measured[sizeof(probes) / sizeof(probes[0])];
    int p = probe_for(kernel);
    if (p < 0 || !kiln_cpu_supports(probes[p].isa)) return 0;
    if (measured[p] == 0) {
        // Best of 5 runs of about 20 ms, after a warm-up run that also sizes them.
        long rounds = 1 << 16;
        double rate = probes[p].probe(rounds);
        rounds = (long)(0.02 * rate / (CHAINS * 16.0)) + 1;
        for (int r = 0; r < 5; r++) {
            double next = probes[p].probe(rounds);
            if (next > measured[p]) measured[p] = next;
        }
    }
    *instruction = probes[p].instruction;
    return measured[p];
}
#else
double kiln_kernel_limit(const kiln_kernel_info *kernel, const char **instruction) {
    (void)kernel;
    (void)instruction;
    return 0;
}
#endif

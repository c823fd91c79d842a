// Kernel tables: the variant of each op for an ISA, falling back to the portable one.
#include "kiln_kernels.h"

kiln_qu8s8_igemm_fn kiln_qu8s8_igemm_for(int isa) {
#if defined(__x86_64__)
    switch (isa) {
    case KILN_ISA_AVX512VNNI: return kiln_qu8s8_igemm_8x32c4__avx512vnni;
    case KILN_ISA_AVXVNNI: return kiln_qu8s8_igemm_4x16c4__avxvnni;
    case KILN_ISA_AVX2: return kiln_qu8s8_igemm_2x16c4__avx2;
    default: break;
    }
#elif defined(__aarch64__)
    if (isa == KILN_ISA_NEONDOT) return kiln_qu8s8_igemm_1x16c4__neondot;
#endif
    (void)isa;
    return kiln_qu8s8_igemm_1x16c4__scalar;
}

kiln_qu8s8_dwconv3x3_fn kiln_qu8s8_dwconv3x3_for(int isa) {
#if defined(__x86_64__)
    switch (isa) {
    case KILN_ISA_AVX512VNNI: return kiln_qu8s8_dwconv3x3_64c4__avx512vnni;
    case KILN_ISA_AVXVNNI:
    case KILN_ISA_AVX2: return kiln_qu8s8_dwconv3x3__avx2;
    default: break;
    }
#endif
    (void)isa;
    return kiln_qu8s8_dwconv3x3__scalar;
}

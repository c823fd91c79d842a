// CPU feature probe: which kernel variants this machine runs.
#include "kiln_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static int os_saves_zmm(void) {
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & (1u << 27))) return 0;  // OSXSAVE
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 0xE6) == 0xE6;  // XMM, YMM, opmask, ZMM_Hi256, Hi16_ZMM state enabled
}

static int os_saves_ymm(void) {
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & (1u << 27))) return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 0x6) == 0x6;
}

int kiln_cpu_supports(int isa) {
    unsigned eax, ebx, ecx, edx;
    switch (isa) {
    case KILN_ISA_SCALAR:
        return 1;
    case KILN_ISA_AVX2:
        if (!os_saves_ymm() || !__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return 0;
        return (ebx & (1u << 5)) != 0;  // AVX2
    case KILN_ISA_AVXVNNI:
        if (!kiln_cpu_supports(KILN_ISA_AVX2) || !__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) return 0;
        return (eax & (1u << 4)) != 0;  // AVX-VNNI
    case KILN_ISA_AVX512VNNI:
        if (!os_saves_zmm() || !__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return 0;
        // AVX512F (ebx 16), AVX512BW (ebx 30), AVX512VL (ebx 31), AVX512-VNNI (ecx 11)
        return (ebx & (1u << 16)) && (ebx & (1u << 30)) && (ebx & (1u << 31)) && (ecx & (1u << 11));
    default:
        return 0;
    }
}
#elif defined(__aarch64__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
int kiln_cpu_supports(int isa) {
    if (isa == KILN_ISA_SCALAR) return 1;
    if (isa == KILN_ISA_NEONDOT) return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
    return 0;
}
#else
int kiln_cpu_supports(int isa) { return isa == KILN_ISA_SCALAR; }
#endif

int kiln_cpu_isa(void) {
    static const int order[] = {KILN_ISA_AVX512VNNI, KILN_ISA_AVXVNNI, KILN_ISA_AVX2, KILN_ISA_NEONDOT};
    for (unsigned i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        if (kiln_cpu_supports(order[i])) return order[i];
    }
    return KILN_ISA_SCALAR;
}

const char *kiln_isa_name(int isa) {
    switch (isa) {
    case KILN_ISA_AVX2: return "avx2";
    case KILN_ISA_AVXVNNI: return "avxvnni";
    case KILN_ISA_AVX512VNNI: return "avx512vnni";
    case KILN_ISA_NEONDOT: return "neondot";
    default: return "scalar";
    }
}

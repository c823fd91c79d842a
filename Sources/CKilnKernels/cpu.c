// CPU feature probe: which kernel variants this machine runs.
#include "kiln_kernels.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

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
    case KILN_ISA_AVX512BW:
        if (!os_saves_zmm() || !__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return 0;
        // AVX512F (ebx 16), AVX512DQ (ebx 17), AVX512BW (ebx 30), AVX512VL (ebx 31)
        return (ebx & (1u << 16)) && (ebx & (1u << 17)) && (ebx & (1u << 30)) && (ebx & (1u << 31));
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
    int best = KILN_ISA_SCALAR;
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        if (kiln_cpu_supports(isa)) best = isa;
    }
    return best;
}

int kiln_isa_includes(int isa, int required) {
    if (required == isa || required == KILN_ISA_SCALAR) return 1;
    if (required == KILN_ISA_AVX2) return isa == KILN_ISA_AVXVNNI || isa == KILN_ISA_AVX512BW || isa == KILN_ISA_AVX512VNNI;
    return required == KILN_ISA_AVX512BW && isa == KILN_ISA_AVX512VNNI;
}

static char cpu_model_name[96];

static void read_cpu_model(void) {
    char *name = cpu_model_name;
#if defined(__x86_64__) || defined(__i386__)
    unsigned regs[12];
    if (__get_cpuid_max(0x80000000u, NULL) >= 0x80000004u) {
        for (unsigned i = 0; i < 3; i++) __get_cpuid(0x80000002u + i, &regs[4 * i], &regs[4 * i + 1], &regs[4 * i + 2], &regs[4 * i + 3]);
        memcpy(name, regs, 48);
        name[48] = 0;
    }
#endif
    // Trim the padding some CPUs put around the brand string.
    char *start = name;
    while (*start == ' ') start++;
    size_t length = strlen(start);
    while (length > 0 && start[length - 1] == ' ') length--;
    memmove(name, start, length);
    name[length] = 0;
    if (!name[0]) strcpy(name, "unknown CPU");
#if defined(__x86_64__) || defined(__i386__)
    // Virtual machines often shorten the brand ("AMD EPYC"); family and model say which generation it is.
    unsigned eax, ebx, ecx, edx;
    if (__get_cpuid(1, &eax, &ebx, &ecx, &edx)) {
        unsigned family = (eax >> 8) & 0xF, model = (eax >> 4) & 0xF;
        if (family == 0xF) family += (eax >> 20) & 0xFF;
        if (family == 0x6 || family >= 0xF) model |= ((eax >> 16) & 0xF) << 4;
        size_t used = strlen(name);
        snprintf(name + used, sizeof(cpu_model_name) - used, " (family %u, model %u)", family, model);
    }
#endif
}

const char *kiln_cpu_model(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, read_cpu_model);
    return cpu_model_name;
}

const char *kiln_isa_name(int isa) {
    static const char *const names[] = {
#define KILN_ISA(symbol, name) #name,
#include "kiln_isa_list.inc"
#undef KILN_ISA
    };
    return isa >= 0 && isa < KILN_ISA_COUNT ? names[isa] : "unknown";
}

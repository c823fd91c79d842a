// Prints the machine a test run or benchmark ran on: CPU model, the kernel variants it supports, the one Kiln's
// runtime chooses (the same probe, Sources/CKilnKernels/cpu.c) and OpenBLAS's core type (the fp32 training
// engine's kernels). Built and run by scripts/machine-info.sh.
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#include "kiln_kernels.h"

int main(void) {
    printf("CPU: %s\n", kiln_cpu_model());
    printf("Kiln kernel tier: %s (supported:", kiln_isa_name(kiln_cpu_isa()));
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        if (kiln_cpu_supports(isa)) printf(" %s", kiln_isa_name(isa));
    }
    const char *forced = getenv("KILN_ISA");
    printf(")%s%s\n", forced ? "; KILN_ISA=" : "", forced ? forced : "");
    void *openblas = dlopen("libopenblas.so.0", RTLD_NOW);
    char *(*corename)(void) = openblas ? (char *(*)(void))dlsym(openblas, "openblas_get_corename") : NULL;
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    printf("OpenBLAS core: %s%s%s\n", corename ? corename() : "(libopenblas.so.0 not found)",
           coretype ? "; OPENBLAS_CORETYPE=" : "", coretype ? coretype : "");
    return 0;
}

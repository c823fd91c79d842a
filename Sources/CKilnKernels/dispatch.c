// The dispatch and the kernel table, both from the one kernel list (kiln_kernel_list.inc).
#include <string.h>
#include "kiln_kernels.h"

static const kiln_kernel_info kernels[] = {
#define KILN_KERNEL(family, name, isa) {#family, #name, KILN_ISA_##isa, (void (*)(void))name},
#include "kiln_kernel_list.inc"
#undef KILN_KERNEL
};

int kiln_kernel_count(void) { return (int)(sizeof(kernels) / sizeof(kernels[0])); }

const kiln_kernel_info *kiln_kernel_at(int index) {
    return index >= 0 && index < kiln_kernel_count() ? &kernels[index] : NULL;
}

/// The last kernel of `family` whose ISA `isa` includes (the portable one heads every family).
static const kiln_kernel_info *best_info(const char *family, int isa) {
    const kiln_kernel_info *chosen = NULL;
    for (int i = 0; i < kiln_kernel_count(); i++) {
        if (strcmp(kernels[i].family, family) == 0 && kiln_isa_includes(isa, kernels[i].isa)) chosen = &kernels[i];
    }
    return chosen;
}

static void (*best(const char *family, int isa))(void) {
    const kiln_kernel_info *chosen = best_info(family, isa);
    return chosen ? chosen->function : NULL;
}

int kiln_chosen_kernel_isa(const char *family, int isa) {
    const kiln_kernel_info *chosen = best_info(family, isa);
    return chosen ? chosen->isa : -1;
}

int kiln_igemm_narrow_steps(int max_input, int max_weight) {
    long pair = 2L * (max_input < 0 ? 0 : max_input) * (max_weight < 0 ? -max_weight : max_weight);
    if (pair == 0) return 1 << 20;
    return (int)(32767L / pair);
}

kiln_qu8s8_igemm_narrow_fn kiln_qu8s8_igemm_narrow_for(int isa) {
    return (kiln_qu8s8_igemm_narrow_fn)best("qu8s8_igemm_narrow", isa);
}

kiln_qu8s8_igemm_fn kiln_qu8s8_igemm_for(int isa) { return (kiln_qu8s8_igemm_fn)best("qu8s8_igemm", isa); }

kiln_qu8s8_dwconv3x3_fn kiln_qu8s8_dwconv3x3_for(int isa) { return (kiln_qu8s8_dwconv3x3_fn)best("qu8s8_dwconv3x3", isa); }

kiln_qu8_quantize_fn kiln_qu8_quantize_nchw_for(int isa) { return (kiln_qu8_quantize_fn)best("qu8_quantize_nchw", isa); }

kiln_qu8_lookup_fn kiln_qu8_lookup_for(int isa) { return (kiln_qu8_lookup_fn)best("qu8_lookup", isa); }

kiln_qu8s8_dwconv_fn kiln_qu8s8_dwconv_for(int isa) { return (kiln_qu8s8_dwconv_fn)best("qu8s8_dwconv", isa); }

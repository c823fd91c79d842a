// Per-kernel checks (test support): every kernel of CKilnKernels' list against the portable kernel of its family,
// on a list of shapes with odd sizes, tails, strides, paddings and fused residual adds. Used by the Swift test
// suite natively and, cross-compiled with a main (KILN_KERNEL_CHECKS_MAIN), under qemu for other architectures.
#ifndef KILN_KERNEL_CHECKS_H
#define KILN_KERNEL_CHECKS_H

#include <stddef.h>
#include "kiln_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/// Runs `kernel` and the portable kernel of its family on every shape of the family's list and compares every
/// output byte (and the bytes around them). Returns the number of shapes checked, or −1 with the first mismatch
/// described in `message`.
int kiln_check_kernel(const kiln_kernel_info *kernel, char *message, size_t size);

/// Number of benchmark shapes of a kernel's family (0 for an unknown family).
int kiln_bench_shape_count(const kiln_kernel_info *kernel);

/// Times `kernel` on benchmark shape `shape` of its family: the best of `repeats` runs of about 20 ms each, in
/// seconds per call; `macs` receives the multiply-accumulates (or, for the quantizer, the elements) of one call and
/// `label` a description of the shape.
double kiln_bench_kernel(const kiln_kernel_info *kernel, int shape, int repeats, double *macs, char *label, size_t size);

/// The arithmetic limit of a kernel's tier on this core: multiply-adds per second of the instruction its inner loop
/// multiplies with (named in `instruction`), measured once per run in register-only chains; 0 for kernels without
/// one (scalar, quantizer, lookup) or on other architectures.
double kiln_kernel_limit(const kiln_kernel_info *kernel, const char **instruction);

#ifdef __cplusplus
}
#endif

#endif

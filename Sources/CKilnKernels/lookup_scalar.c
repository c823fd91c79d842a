// The portable table lookup (a pointwise function on u8 levels): the reference of the qu8_lookup family.
#include "kiln_kernels.h"

void kiln_qu8_lookup__scalar(size_t n, const uint8_t *x, const uint8_t *table, uint8_t *y) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint8_t a = table[x[i]], b = table[x[i + 1]], c = table[x[i + 2]], d = table[x[i + 3]];
        y[i] = a;
        y[i + 1] = b;
        y[i + 2] = c;
        y[i + 3] = d;
    }
    for (; i < n; i++) y[i] = table[x[i]];
}

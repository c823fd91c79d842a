// Per-thread scratch for kernels that copy their operands (each file that includes this has its own).
#ifndef KILN_SCRATCH_H
#define KILN_SCRATCH_H

#include <stdlib.h>

/// This thread's scratch of at least `bytes`, grown on first need and kept, so a steady state allocates nothing.
/// One user at a time per thread.
static inline void *kiln_thread_scratch(size_t bytes) {
    static _Thread_local void *scratch;
    static _Thread_local size_t capacity;
    if (bytes > capacity) {
        void *grown = realloc(scratch, bytes);
        if (!grown) abort();
        scratch = grown;
        capacity = bytes;
    }
    return scratch;
}

#endif

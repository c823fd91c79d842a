// The fp32 engine's thread team: see include/kiln_parallel.h.
#include "kiln_parallel.h"

// libgomp's entry points (what GCC emits for `#pragma omp parallel`; this file needs no OpenMP compiler support).
extern void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags);
extern int omp_get_thread_num(void);
extern int omp_get_num_threads(void);

typedef struct {
    int64_t chunks;
    void *context;
    kiln_parallel_body body;
} loop;

static void run_chunks(void *data) {
    const loop *l = data;
    // The team may be smaller than asked (a nested loop gets one thread): each thread takes every n-th chunk.
    int64_t step = omp_get_num_threads();
    for (int64_t chunk = omp_get_thread_num(); chunk < l->chunks; chunk += step) l->body(l->context, chunk);
}

void kiln_parallel_for(int64_t chunks, void *context, kiln_parallel_body body) {
    if (chunks <= 0) return;
    loop l = {chunks, context, body};
    if (chunks == 1) {
        run_chunks(&l);  // outside a team omp_get_num_threads() is 1 and omp_get_thread_num() 0
        return;
    }
    GOMP_parallel(run_chunks, &l, (unsigned)chunks, 0);
}

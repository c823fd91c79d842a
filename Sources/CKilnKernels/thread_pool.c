// A persistent thread pool for intra-op parallelism: workers spin briefly on a generation counter, then sleep on
// a condition variable, so back-to-back layers do not pay a wake-up each.
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include "kiln_kernels.h"

struct kiln_pool {
    int threads;
    pthread_t *workers;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    atomic_uint generation;
    atomic_int pending;
    atomic_int stop;
    // The current job.
    void (*task)(void *, int, int, int);
    void *context;
    int count;
};

static void run_chunk(kiln_pool *pool, int index) {
    int begin = (int)((long long)pool->count * index / pool->threads);
    int end = (int)((long long)pool->count * (index + 1) / pool->threads);
    if (begin < end) pool->task(pool->context, begin, end, index);
}

typedef struct {
    kiln_pool *pool;
    int index;
} worker_start;

static void *worker_main(void *argument) {
    worker_start start = *(worker_start *)argument;
    free(argument);
    kiln_pool *pool = start.pool;
    unsigned seen = 0;
    for (;;) {
        unsigned current;
        int spins = 0;
        while ((current = atomic_load_explicit(&pool->generation, memory_order_acquire)) == seen &&
               !atomic_load_explicit(&pool->stop, memory_order_relaxed)) {
            if (++spins < 20000) {
#if defined(__x86_64__)
                __builtin_ia32_pause();
#endif
                continue;
            }
            pthread_mutex_lock(&pool->lock);
            while (atomic_load_explicit(&pool->generation, memory_order_acquire) == seen &&
                   !atomic_load_explicit(&pool->stop, memory_order_relaxed)) {
                pthread_cond_wait(&pool->wake, &pool->lock);
            }
            pthread_mutex_unlock(&pool->lock);
            spins = 0;
        }
        if (atomic_load_explicit(&pool->stop, memory_order_relaxed)) return NULL;
        seen = current;
        run_chunk(pool, start.index);
        atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_acq_rel);
    }
}

kiln_pool *kiln_pool_create(int threads) {
    if (threads < 1) threads = 1;
    kiln_pool *pool = calloc(1, sizeof(kiln_pool));
    if (!pool) return NULL;
    pool->threads = threads;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pool->workers = calloc((size_t)threads, sizeof(pthread_t));
    if (!pool->workers) {
        free(pool);
        return NULL;
    }
    for (int i = 1; i < threads; i++) {
        worker_start *start = malloc(sizeof(worker_start));
        if (!start) {
            pool->threads = i;
            break;
        }
        start->pool = pool;
        start->index = i;
        if (pthread_create(&pool->workers[i], NULL, worker_main, start) != 0) {
            free(start);
            pool->threads = i;
            break;
        }
    }
    return pool;
}

void kiln_pool_destroy(kiln_pool *pool) {
    if (!pool) return;
    pthread_mutex_lock(&pool->lock);
    atomic_store(&pool->stop, 1);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 1; i < pool->threads; i++) pthread_join(pool->workers[i], NULL);
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->wake);
    free(pool->workers);
    free(pool);
}

int kiln_pool_threads(const kiln_pool *pool) { return pool ? pool->threads : 1; }

void kiln_pool_parallel_for(kiln_pool *pool, int count, void (*task)(void *context, int begin, int end, int worker),
                            void *context) {
    if (count <= 0) return;
    if (!pool || pool->threads == 1 || count == 1) {
        task(context, 0, count, 0);
        return;
    }
    pool->task = task;
    pool->context = context;
    pool->count = count;
    atomic_store_explicit(&pool->pending, pool->threads - 1, memory_order_release);
    pthread_mutex_lock(&pool->lock);
    atomic_fetch_add_explicit(&pool->generation, 1, memory_order_acq_rel);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    run_chunk(pool, 0);
    while (atomic_load_explicit(&pool->pending, memory_order_acquire) > 0) {
#if defined(__x86_64__)
        __builtin_ia32_pause();
#else
        sched_yield();
#endif
    }
}

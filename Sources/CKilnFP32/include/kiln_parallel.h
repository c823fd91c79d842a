// The one thread team of the fp32 engine: every parallel loop of KilnTensor runs on OpenMP (libgomp), the threads
// oneDNN's convolutions run on, so the two never compete for the cores (two pools on two cores made each wait for
// the other's idle spinning).
#ifndef KILN_PARALLEL_H
#define KILN_PARALLEL_H

#include <stdint.h>

/// One chunk of a parallel loop: `context` as passed to `kiln_parallel_for`, `chunk` in 0..<chunks.
typedef void (*kiln_parallel_body)(void *context, int64_t chunk);

/// Runs body(context, c) for every c in 0..<chunks on up to `chunks` threads of the OpenMP team; returns when all
/// are done. Inside another parallel loop it runs them one after another on the calling thread.
void kiln_parallel_for(int64_t chunks, void *context, kiln_parallel_body body);

#endif

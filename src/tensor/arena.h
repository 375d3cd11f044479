/* arena.h - activation memory for one network at one resolution.
 *
 * A stack allocator over a single buffer. A forward pass takes temporaries
 * with arena_alloc() and gives them back with arena_release(mark) in LIFO
 * order, so the peak footprint is what the deepest point of the network
 * needs, and nothing is malloc'd while the pass runs.
 *
 * Sizing: the network's forward function is first run in *measure* mode
 * (arena_begin_measure): allocations then only count bytes and return
 * distinct but never-dereferenced addresses, and the ops skip their work
 * (see nn.h). arena_end_measure() allocates the measured peak once. Later
 * passes at the same resolution reuse that buffer.
 */
#ifndef SD_ARENA_H
#define SD_ARENA_H

#include <stddef.h>

#include "util/err.h"

struct arena {
    char *base;      /* the buffer (NULL while measuring) */
    size_t cap;      /* bytes in base */
    size_t top;      /* bytes in use */
    size_t peak;     /* high-water mark since the last begin */
    int measuring;
};

void arena_init(struct arena *a);
void arena_free(struct arena *a);

/* Start a measuring pass (forgets nothing: the buffer stays until
 * arena_end_measure decides it is too small). */
void arena_begin_measure(struct arena *a);
/* End it: make sure the buffer holds the measured peak (may allocate). */
int arena_end_measure(struct arena *a, struct sd_err *err);

/* Large buffers (weights, arenas) straight from mmap, asking for
 * transparent huge pages: page faults cost ~7 us per 4 KiB page here and
 * TLB misses slow the kernels that stream weights. big_free needs the size.
 * NULL when out of memory. */
void *big_alloc(size_t bytes);
void big_free(void *p, size_t bytes);

/* n floats, 64-byte aligned. Running out of the measured capacity is a bug
 * (the measured pass and the real pass must allocate the same way). */
float *arena_alloc(struct arena *a, size_t n);
static inline size_t arena_mark(const struct arena *a) { return a->top; }
void arena_release(struct arena *a, size_t mark);

#endif

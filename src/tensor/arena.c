/* arena.c - see arena.h. */
#include "tensor/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define ARENA_ALIGN 64

void arena_init(struct arena *a)
{
    memset(a, 0, sizeof *a);
}

void *big_alloc(size_t bytes)
{
    void *p = mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
#ifdef MADV_HUGEPAGE
    if (bytes >= (2u << 20))
        madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return p;
}

void big_free(void *p, size_t bytes)
{
    if (p)
        munmap(p, bytes ? bytes : 1);
}

void arena_free(struct arena *a)
{
    big_free(a->base, a->cap);
    memset(a, 0, sizeof *a);
}

void arena_begin_measure(struct arena *a)
{
    a->measuring = 1;
    a->top = 0;
    a->peak = 0;
}

int arena_end_measure(struct arena *a, struct sd_err *err)
{
    a->measuring = 0;
    a->top = 0;
    if (a->base && a->cap >= a->peak)
        return SD_OK;
    big_free(a->base, a->cap);
    a->base = NULL;
    a->cap = 0;
    size_t cap = a->peak ? a->peak : ARENA_ALIGN;
    void *p = big_alloc(cap);
    if (!p)
        return sd_errf(err, SD_ERR_NOMEM, "cannot allocate %zu MB of activations", cap >> 20);
    memset(p, 0, cap); /* fault the pages in now, not in the first pass that uses them */
    a->base = p;
    a->cap = cap;
    return SD_OK;
}

float *arena_alloc(struct arena *a, size_t n)
{
    size_t bytes = (n * sizeof(float) + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    size_t off = a->top;
    a->top += bytes;
    if (a->top > a->peak)
        a->peak = a->top;
    if (a->measuring)
        return (float *)(uintptr_t)(ARENA_ALIGN + off); /* never dereferenced */
    SD_ASSERT(a->top <= a->cap);
    return (float *)(a->base + off);
}

void arena_release(struct arena *a, size_t mark)
{
    SD_ASSERT(mark <= a->top);
    a->top = mark;
}

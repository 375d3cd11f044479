/* widen.c - the wide backend's shared scratch (widen.h). */
#include "tensor/widen.h"

#include <pthread.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "tensor/arena.h"


/* dst[i] = widened src[i]: bf16 is float32's high half, so exact. Eight
 * at a time with SSE2 (every x86-64 has it; a plain loop is left scalar
 * at -O2), which keeps up with memory. */
static void widen_row(float *dst, const uint16_t *src, size_t n)
{
    uint32_t *d = (uint32_t *)dst;
    size_t i = 0;
#ifdef __SSE2__
    const __m128i zero = _mm_setzero_si128();
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(src + i));
        _mm_storeu_si128((__m128i *)(d + i), _mm_unpacklo_epi16(zero, h));
        _mm_storeu_si128((__m128i *)(d + i + 4), _mm_unpackhi_epi16(zero, h));
    }
#endif
    for (; i < n; i++)
        d[i] = (uint32_t)src[i] << 16;
}

static pthread_mutex_t block_mu = PTHREAD_MUTEX_INITIALIZER;
static float *block;
static size_t block_cap; /* floats */

int widen_reserve(size_t n, struct sd_err *err)
{
    pthread_mutex_lock(&block_mu);
    int rc = SD_OK;
    if (n > block_cap) {
        float *p = big_alloc(n * sizeof(float));
        if (!p) {
            rc = sd_errf(err, SD_ERR_NOMEM, "out of memory (%zu MB to widen bf16 weights)", n >> 18);
        } else {
            big_free(block, block_cap * sizeof(float));
            block = p;
            block_cap = n;
        }
    }
    pthread_mutex_unlock(&block_mu);
    return rc;
}

const float *widen_begin(const uint16_t *w, size_t n)
{
    pthread_mutex_lock(&block_mu);
    SD_ASSERT(n <= block_cap); /* reserved at plan time */
    size_t step = 16u << 10, nb = (n + step - 1) / step;
#pragma omp parallel for schedule(static) if (nb > 1)
    for (size_t b = 0; b < nb; b++)
        widen_row(block + b * step, w + b * step, b + 1 < nb ? step : n - b * step);
    return block;
}

void widen_end(void)
{
    pthread_mutex_unlock(&block_mu);
}

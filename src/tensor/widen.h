/* widen.h - the wide backend: bf16 weights, float32 products.
 *
 * For --precision bf16 on a CPU without bf16 dot products (no
 * AVX512-BF16), where oneDNN would emulate bf16 products several times
 * slower than float32: the wide backend (nn_backend_cpu_wide) prepares
 * every layer exactly as float32 does (oneDNN's blocked layouts, Winograd's
 * transformed weights), rounds the prepared weights to bf16 for storage,
 * half float32's memory, and widens a layer's weights back into one
 * shared float32 scratch just before its product runs. Widening is exact
 * (a bf16 value is a float32's high half), so the products are float32
 * ones on bf16-rounded weights.
 *
 * One scratch per process, as big as the largest block widened at once
 * (a layer, a piece of a split layer, a Winograd plane or U), sized at
 * load or plan time, so runs allocate nothing; a mutex makes
 * widen_begin .. widen_end one block's exclusive use of it.
 */
#ifndef SD_WIDEN_H
#define SD_WIDEN_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* Load or plan time: make the scratch hold at least n floats. */
int widen_reserve(size_t n, struct sd_err *err);
/* Run time: lock the scratch, widen w[0..n) into it (OpenMP threads) and
 * return it; n is within what was reserved. widen_end unlocks. */
const float *widen_begin(const uint16_t *w, size_t n);
void widen_end(void);

#endif

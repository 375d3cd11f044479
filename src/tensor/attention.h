/* attention.h - fused (flash-style) multi-head attention on the CPU.
 *
 * Same contract as nn_backend.attention (nn.h): q [B, Nq, heads*dh] with row
 * stride ldq, k/v [B, Nk, heads*dh] with strides ldk/ldv, out
 * [B, Nq, heads*dh]; out = softmax(q k^T * scale (+ causal mask)) v per
 * batch and head. ws: attention_ws(B, Nq, Nk, heads, dh) floats of scratch. dh <= 4096.
 */
#ifndef SD_ATTENTION_H
#define SD_ATTENTION_H

#include <stddef.h>

#include "util/err.h"

size_t attention_ws(int B, int Nq, int Nk, int heads, int dh);
void attention_forward(float *out, const float *q, const float *k, const float *v, int B, int Nq, int Nk,
                       int heads, int dh, int ldq, int ldk, int ldv, float scale, int causal, float *ws);
/* The same with bf16 products (float32 accumulation and softmax). */
size_t attention_ws_bf16(int B, int Nq, int Nk, int heads, int dh);
void attention_forward_bf16(float *out, const float *q, const float *k, const float *v, int B, int Nq,
                            int Nk, int heads, int dh, int ldq, int ldk, int ldv, float scale, int causal,
                            float *ws);

/* attention_lanes.c: the bf16 kernel for causal == 0 with the queries in
 * the vector lanes (AVX512-BF16 builds only; attention_forward_bf16 calls it
 * for dh <= ATTENTION_LANES_MAX_DH). */
#define ATTENTION_LANES_MAX_DH 1024
size_t attention_lanes_ws(int B, int Nk, int heads, int dh);
void attention_lanes_forward(float *out, const float *q, const float *k, const float *v, int B, int Nq,
                             int Nk, int heads, int dh, int ldq, int ldk, int ldv, float scale, float *ws);

#endif

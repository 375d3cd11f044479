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
/* The same with bf16 operands where the flags say so (uint16 rows; strides
 * in elements): the bf16 backend's attention blocks read q (and, in
 * self-attention, k and v) from a product that wrote bf16, and write the
 * output in bf16 for the product that follows. Same results as converting
 * to and from float32 around attention_lanes_forward. */
struct attention_io {
    void *out;
    const void *q, *k, *v;
    int out16, q16, kv16;
};
void attention_lanes_forward_ex(const struct attention_io *io, int B, int Nq, int Nk, int heads, int dh,
                                int ldq, int ldk, int ldv, float scale, float *ws);

/* attention_lanes32.c: the float32 kernel for causal == 0 with the queries
 * in the vector lanes (AVX2 and AVX-512 builds; attention_lanes32_ok says
 * whether this build has it). attention_forward calls it; ws:
 * attention_lanes32_ws(dh) floats. */
int attention_lanes32_ok(void);
size_t attention_lanes32_ws(int dh);
void attention_lanes32_forward(float *out, const float *q, const float *k, const float *v, int B, int Nq,
                               int Nk, int heads, int dh, int ldq, int ldk, int ldv, float scale, float *ws);

#endif

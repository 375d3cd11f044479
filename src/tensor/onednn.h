/* onednn.h - convolutions and matrix products through oneDNN (v2 C API).
 *
 * Used by the fast CPU backends (ops_cpu.c). See onednn.c for how a
 * layer's weights and primitives are kept.
 */
#ifndef SD_ONEDNN_H
#define SD_ONEDNN_H

#include <stdint.h>

#include "tensor/nn.h"

/* Load time: weights into oneDNN's preferred layout. mode 0: float32;
 * 1: bf16 weights and products; 2 (wide): float32 products and layout,
 * the weights held rounded to bf16 and widened at each run (widen.h). */
int onednn_conv2d_prepare(struct nn_conv2d *l, int mode, struct sd_err *err);
int onednn_linear_prepare(struct nn_linear *l, int mode, struct sd_err *err);
/* Measure mode: a primitive for this input shape (and accumulate mode). */
int onednn_conv2d_plan(struct nn_conv2d *l, int B, int H, int W, int accumulate, struct sd_err *err);
int onednn_linear_plan(struct nn_linear *l, int M, int accumulate, struct sd_err *err);
/* Run; ws has onednn_*_ws() floats of scratch (bf16 inputs). */
void onednn_conv2d_run(const struct nn_conv2d *l, const float *in, float *out, int B, int H, int W,
                       int accumulate, float *ws);
void onednn_linear_run(const struct nn_linear *l, const float *in, float *out, int M, int accumulate,
                       float *ws);
/* The same for a bf16-prepared layer whose input is already bf16 (in16:
 * [M, in] uint16): no conversion, no scratch. */
void onednn_linear_run_bf16(const struct nn_linear *l, const uint16_t *in16, float *out, int M,
                            int accumulate);
void onednn_conv2d_run_in16(const struct nn_conv2d *l, const uint16_t *in16, float *out, int B, int H,
                            int W, int accumulate);
/* bf16 in and bf16 out (out16: [M, out], rounded to nearest even from the
 * float32 sums, bias included): for a product whose output only feeds
 * another bf16 product. Planned by onednn_linear_plan_b2b. */
int onednn_linear_plan_b2b(struct nn_linear *l, int M, struct sd_err *err);
void onednn_linear_run_b2b(const struct nn_linear *l, const uint16_t *in16, uint16_t *out16, int M);
size_t onednn_conv2d_ws(const struct nn_conv2d *l, int B, int H, int W);
size_t onednn_linear_ws(const struct nn_linear *l, int M);
/* Bytes of weight copies made for shapes whose fastest kernel wanted
 * another layout than the one prepared at load (diagnostics). */
extern size_t onednn_extra_weight_bytes;
/* Bytes held by a prepared layer's weights. */
size_t onednn_weight_bytes(const void *be_state);
void onednn_layer_release(void **be_state);

/* Batched products C[i] = A[i] B[i] for i < batch, row-major: A [M,K] and
 * B [K,N] both f32 or both bf16 (uint16), C [M,N] f32; A[i] starts
 * a_stride elements after A[i-1], C[i] c_stride after C[i-1] (B dense).
 * plan creates (or
 * finds in the cache) the primitive at load or measure time; run reads
 * and writes only the given buffers. */
struct onednn_bmm;
int onednn_bmm_plan(struct onednn_bmm **h, int batch, int M, int K, int N, size_t a_stride,
                    size_t c_stride, int bf16, struct sd_err *err);
void onednn_bmm_run(struct onednn_bmm *h, const void *A, const void *B, float *C);
void onednn_bmm_free(struct onednn_bmm *h);

/* Row-major C[M,N] = alpha A[M,K] op(B) + beta C; op(B) = B^T when tb is
 * 'T' (B is then [N,K] with row stride ldb). Thin wrapper over dnnl_sgemm;
 * single-threaded when called inside a parallel region. */
void onednn_gemm(char tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                 int ldb, float beta, float *C, int ldc);

#endif

/* onednn.h - convolutions and matrix products through oneDNN (v2 C API).
 *
 * Used by the fast CPU backend (ops_cpu.c). A layer's be_state holds its
 * oneDNN primitives, one per input shape seen in planning, and its weights
 * reordered once into the blocked format the primitive prefers.
 */
#ifndef SD_ONEDNN_H
#define SD_ONEDNN_H

#include "tensor/nn.h"

int onednn_conv2d_plan(struct nn_conv2d *l, int B, int H, int W, struct sd_err *err);
void onednn_conv2d_run(const struct nn_conv2d *l, const float *in, float *out, int B, int H, int W);
void onednn_linear_run(const struct nn_linear *l, const float *in, float *out, int M);
void onednn_layer_release(void **be_state);

/* Row-major C[M,N] = A[M,K] * op(B) (+ beta*C); op(B) = B^T when tb ('T'),
 * B is then [N,K] with row stride ldb. Thin wrapper over dnnl_sgemm. */
void onednn_gemm(char tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
               int ldb, float beta, float *C, int ldc);

#endif

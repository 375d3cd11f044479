/* test_ops.c - the fast CPU backend against the reference backend, op by op. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/cpu.h"
#include "tensor/gemm_bf16.h"
#include "tensor/nn.h"
#include "tensor/vmath.h"
#include "tensor/winograd.h"
#include "test.h"

static uint32_t rng_state = 12345;
static float frand(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return ((rng_state >> 8) / 16777216.0f) * 2.0f - 1.0f;
}

static float *rand_buf(size_t n, float scale)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = frand() * scale;
    return p;
}

/* max |a-b| / (1 + max|b|) */
static double rel_diff(const float *a, const float *b, size_t n)
{
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > md || d != d)
            md = d;
        if (fabs(b[i]) > mb)
            mb = fabs(b[i]);
    }
    return md / (1 + mb);
}

/* The bf16 backend runs where oneDNN has bf16 kernels, native or emulated
 * (AVX-512). Below that the engine never selects it (model.c runs fp32
 * and says so), so its tests are skipped there. */
static int bf16_runs(void)
{
    return cpu_level() >= CPU_AVX512;
}

/* Run a prepared layer through a fast backend: plan, workspace, run. */
static void fast_conv(const struct nn_backend *be, struct nn_conv2d *l, const float *x, float *y, int B,
                      int H, int W, int acc)
{
    struct sd_err err;
    CHECK_MSG(be->conv2d_plan(l, B, H, W, acc, &err) == SD_OK, "%s", err.msg);
    float *ws = calloc(be->conv2d_ws(l, B, H, W) + 1, sizeof(float));
    be->conv2d(l, x, y, B, H, W, acc, ws);
    free(ws);
}

static void check_conv(int B, int cin, int cout, int k, int stride, int plo, int phi, int H, int W,
                       int bias)
{
    struct nn_conv2d l = {cin, cout, k, stride, plo, phi, NULL, NULL, NULL, 0};
    float *w = rand_buf((size_t)cout * cin * k * k, 0.3f), *b = rand_buf(cout, 0.5f);
    l.w = w;
    l.b = bias ? b : NULL;
    int OH = nn_conv2d_out_size(&l, H), OW = nn_conv2d_out_size(&l, W);
    size_t nin = (size_t)B * H * W * cin, nout = (size_t)B * OH * OW * cout;
    float *x = rand_buf(nin, 1.0f), *y0 = calloc(nout, 4), *y1 = calloc(nout, 4);
    float *r = rand_buf(nout, 1.0f);
    nn_backend_ref.conv2d(&l, x, y0, B, H, W, 0, NULL);
    /* wide: float32 products of bf16-rounded weights (Winograd's rounded
     * after their transform), at every level */
    const struct nn_backend *bes[3] = {&nn_backend_cpu, &nn_backend_cpu_wide, &nn_backend_cpu_bf16};
    double tols[3] = {1e-5, 1e-2, 2e-2};
    for (int i = 0; i < 2 + bf16_runs(); i++) {
        struct sd_err err;
        struct nn_conv2d f = l;
        CHECK_MSG(bes[i]->conv2d_prepare(&f, &err) == SD_OK, "%s", err.msg);
        fast_conv(bes[i], &f, x, y1, B, H, W, 0);
        double d = rel_diff(y1, y0, nout);
        CHECK_MSG(d < tols[i], "%s conv %dx%d %d->%d k%d s%d pad(%d,%d): rel diff %g", bes[i]->name, H,
                  W, cin, cout, k, stride, plo, phi, d);
        /* accumulate: y1 = r + conv(x) */
        memcpy(y1, r, nout * 4);
        fast_conv(bes[i], &f, x, y1, B, H, W, 1);
        for (size_t j = 0; j < nout; j++)
            y1[j] -= r[j];
        d = rel_diff(y1, y0, nout);
        CHECK_MSG(d < tols[i], "%s accumulating conv: rel diff %g", bes[i]->name, d);
        /* another shape on the same prepared layer */
        float *y2 = calloc((size_t)B * (H + 2) * W * cout * 4, 4), *x2 = rand_buf((size_t)B * (H + 2) * W * cin, 1);
        fast_conv(bes[i], &f, x2, y2, B, H + 2, W, 0);
        free(y2), free(x2);
        bes[i]->layer_release(&f.be_state);
        CHECK(f.be_state == NULL);
    }
    /* the reference backend accumulates too */
    memcpy(y1, r, nout * 4);
    nn_backend_ref.conv2d(&l, x, y1, B, H, W, 1, NULL);
    for (size_t j = 0; j < nout; j++)
        y1[j] -= r[j];
    CHECK(rel_diff(y1, y0, nout) < 1e-6);
    free(w), free(b), free(x), free(y0), free(y1), free(r);
}

TEST(ops_conv2d)
{
    check_conv(1, 4, 8, 3, 1, 1, 1, 9, 7, 1);
    check_conv(2, 16, 32, 3, 1, 1, 1, 16, 16, 1);
    check_conv(2, 32, 16, 1, 1, 0, 0, 5, 6, 1);
    check_conv(2, 8, 8, 3, 2, 1, 1, 7, 10, 1);  /* UNet downsample, odd size */
    check_conv(1, 8, 8, 3, 2, 0, 1, 8, 6, 1);   /* VAE encoder downsample */
    check_conv(1, 3, 16, 3, 1, 1, 1, 8, 8, 0);
}

/* gemm_bf16 (the Winograd products in bf16) against the same products
 * summed in double: float32 accumulation of exact bf16 products, so a few
 * float32 ulp of the sums. Row counts that leave 1-3 rows over, column
 * counts with a narrower last panel, K longer than one slice of the
 * panel, strided rows. */
TEST(ops_gemm_bf16)
{
    int shapes[][3] = {{1, 2, 16}, {7, 18, 48}, {37, 600, 80}, {64, 34, 1040}, {130, 520, 64}};
    for (int si = 0; si < 5; si++) {
        int M = shapes[si][0], K = shapes[si][1], N = shapes[si][2];
        size_t lda = (size_t)K + 6, ldc = (size_t)N + 16;
        uint16_t *A = malloc(M * lda * 2), *P = malloc((size_t)K * N * 2), *B = malloc((size_t)K * N * 2);
        float *C = malloc(M * ldc * 4);
        for (size_t i = 0; i < M * lda; i++)
            A[i] = bf16_round(frand());
        for (int k = 0; k < K; k++)
            for (int n = 0; n < N; n++) {
                B[(size_t)k * N + n] = bf16_round(frand());
                P[gemm_bf16_index(K, N, k, n)] = B[(size_t)k * N + n];
            }
        for (size_t i = 0; i < M * ldc; i++)
            C[i] = 12345.0f; /* columns past N must stay */
        for (int p = 0; p < gemm_bf16_panels(N); p++)
            gemm_bf16_panel(M, K, N, A, lda, P, p, C, ldc);
        double md = 0;
        for (int m = 0; m < M; m++) {
            for (int n = 0; n < N; n++) {
                double s = 0, sa = 0;
                for (int k = 0; k < K; k++) {
                    double t = (double)bf16_to_f32(A[m * lda + k]) * bf16_to_f32(B[(size_t)k * N + n]);
                    s += t, sa += fabs(t);
                }
                double d = fabs(C[m * ldc + n] - s) / (sa + 1e-30);
                md = d > md || d != d ? d : md;
            }
            for (size_t n = N; n < ldc; n++)
                CHECK(C[m * ldc + n] == 12345.0f);
        }
        CHECK_MSG(md < 1e-6, "gemm_bf16 %dx%dx%d: error %g of the sum of |products|", M, K, N, md);
        free(A), free(P), free(B), free(C);
    }
}

/* The Winograd path (winograd.h): the cpu backends take it for these
 * shapes; odd sizes (partial 2x2 output blocks) and more tiles than one
 * chunk holds (a short last chunk). */
TEST(ops_conv2d_winograd)
{
    struct nn_conv2d l = {32, 48, 3, 1, 1, 1, NULL, NULL, NULL, 0};
    CHECK(winograd_eligible(&l, 0) && winograd_eligible(&l, 1));
    check_conv(2, 32, 48, 3, 1, 1, 1, 16, 16, 1);
    check_conv(1, 16, 32, 3, 1, 1, 1, 9, 7, 1);
    check_conv(1, 16, 16, 3, 1, 1, 1, 1, 3, 0);
    check_conv(1, 16, 16, 3, 1, 1, 1, 150, 161, 1); /* 6075 tiles: two chunks in float32 and bf16 */
    check_conv(2, 16, 1040, 3, 1, 1, 1, 18, 16, 1); /* 144 tiles, below the minimum chunk */
    /* More input sizes than a layer keeps plans for: the oldest are
     * dropped and planned again when they come back. */
    struct sd_err err;
    float *w = calloc((size_t)16 * 16 * 9, sizeof(float));
    struct nn_conv2d l2 = {16, 16, 3, 1, 1, 1, w, NULL, NULL, 0};
    CHECK(winograd_prepare(&l2, 0, &err) == SD_OK);
    for (int round = 0; round < 2; round++)
        for (int h = 2; h < 20; h += 2)
            CHECK_MSG(winograd_plan(&l2, 1, h, 4, 0, &err) == SD_OK, "%s", err.msg);
    winograd_release(&l2.be_state);
    free(w);
    /* Large layers only where they see enough pixels (nn_conv2d.px). */
    struct nn_conv2d big = {1280, 1280, 3, 1, 1, 1, NULL, NULL, NULL, 0};
    CHECK(!winograd_eligible(&big, 0) && !winograd_eligible(&big, 1)); /* unknown: weights may not pay */
    big.px = 2 * 2;
    CHECK(!winograd_eligible(&big, 0) && !winograd_eligible(&big, 1));
    big.px = 4 * 4; /* SD's innermost level at 256x256 */
    CHECK(!winograd_eligible(&big, 0)); /* float32: not for 16/9 the weights */
    CHECK(winograd_eligible(&big, 1) == gemm_bf16_native()); /* bf16: smaller than float32 direct weights */
    big.px = 8 * 8;
    CHECK(!winograd_eligible(&big, 0) && winograd_eligible(&big, 1));
    big.px = 16 * 16;
    CHECK(winograd_eligible(&big, 0) && winograd_eligible(&big, 1));
    /* wide (mode 2) computes in float32: float32's choice at every size */
    for (int px = 0; px <= 32 * 32; px = px ? px * 4 : 4) {
        big.px = px;
        CHECK(winograd_eligible(&big, 2) == winograd_eligible(&big, 0));
    }
}

/* The wide backend (widen.h): its products are float32 products of the
 * weights rounded to bf16, so against the reference on rounded weights
 * they agree to float32 rounding (direct convolutions, linears); its
 * weights take at most half the bytes of float32's; several layers share
 * the scratch (prepared at once, run in turn). */
TEST(ops_wide)
{
    int K = 64, N = 96, M = 33;
    float *w = rand_buf((size_t)N * K, 0.3f), *wr = malloc((size_t)N * K * 4), *b = rand_buf(N, 1);
    float *x = rand_buf((size_t)M * K, 1), *y0 = malloc((size_t)M * N * 4), *y1 = malloc((size_t)M * N * 4);
    for (size_t i = 0; i < (size_t)N * K; i++)
        wr[i] = bf16_to_f32(bf16_round(w[i]));
    struct nn_linear lr = {K, N, wr, b, NULL}, l32 = {K, N, w, b, NULL}, lw = l32, lw2 = l32;
    struct sd_err err;
    CHECK(nn_backend_cpu.linear_prepare(&l32, &err) == SD_OK);
    CHECK(nn_backend_cpu_wide.linear_prepare(&lw, &err) == SD_OK);
    CHECK(nn_backend_cpu_wide.linear_prepare(&lw2, &err) == SD_OK);
    /* (float32 may hold more than twice: oneDNN pads this layer to 128 columns) */
    CHECK_MSG(nn_backend_cpu_wide.layer_bytes(lw.be_state) * 2 <= nn_backend_cpu.layer_bytes(l32.be_state),
              "wide %zu bytes, float32 %zu", nn_backend_cpu_wide.layer_bytes(lw.be_state),
              nn_backend_cpu.layer_bytes(l32.be_state));
    nn_backend_ref.linear(&lr, x, y0, M, 0, NULL);
    for (int round = 0; round < 2; round++) {
        struct nn_linear *f = round ? &lw2 : &lw;
        CHECK(nn_backend_cpu_wide.linear_plan(f, M, 0, &err) == SD_OK);
        memset(y1, 0, (size_t)M * N * 4);
        nn_backend_cpu_wide.linear(f, x, y1, M, 0, NULL);
        double d = rel_diff(y1, y0, (size_t)M * N);
        CHECK_MSG(d < 1e-5, "wide linear against float32 on rounded weights: %g", d);
    }
    nn_backend_cpu.layer_release(&l32.be_state);
    nn_backend_cpu_wide.layer_release(&lw.be_state);
    nn_backend_cpu_wide.layer_release(&lw2.be_state);
    free(w), free(wr), free(b), free(x), free(y0), free(y1);

    /* a strided (direct, oneDNN) convolution */
    int B = 2, H = 9, W = 8, cin = 16, cout = 32;
    struct nn_conv2d c = {cin, cout, 3, 2, 1, 1, NULL, NULL, NULL, 0};
    size_t nw = (size_t)cout * cin * 9;
    float *cw = rand_buf(nw, 0.3f), *cwr = malloc(nw * 4), *cb = rand_buf(cout, 1);
    for (size_t i = 0; i < nw; i++)
        cwr[i] = bf16_to_f32(bf16_round(cw[i]));
    c.w = cwr;
    c.b = cb;
    int OH = nn_conv2d_out_size(&c, H), OW = nn_conv2d_out_size(&c, W);
    size_t nout = (size_t)B * OH * OW * cout;
    float *cx = rand_buf((size_t)B * H * W * cin, 1), *c0 = malloc(nout * 4), *c1 = malloc(nout * 4);
    nn_backend_ref.conv2d(&c, cx, c0, B, H, W, 0, NULL);
    struct nn_conv2d cw16 = c;
    cw16.w = cw;
    CHECK(nn_backend_cpu_wide.conv2d_prepare(&cw16, &err) == SD_OK);
    fast_conv(&nn_backend_cpu_wide, &cw16, cx, c1, B, H, W, 0);
    double d = rel_diff(c1, c0, nout);
    CHECK_MSG(d < 1e-5, "wide strided conv against float32 on rounded weights: %g", d);
    nn_backend_cpu_wide.layer_release(&cw16.be_state);
    free(cw), free(cwr), free(cb), free(cx), free(c0), free(c1);

    /* Layers too big for the cache run in pieces of output channels (a
     * 1280 -> 5120 linear: 26 MB in float32; a 1280 -> 1280 3x3
     * convolution: 59 MB), accumulating too. */
    for (int conv = 0; conv < 2; conv++) {
        int ci = 1280, co = conv ? 1280 : 5120, k = conv ? 3 : 1, HW = 4, P = 2 * HW * HW;
        size_t n = (size_t)co * ci * k * k, no = (size_t)P * co;
        float *ww = rand_buf(n, 0.02f), *wwr = malloc(n * 4), *bb = rand_buf(co, 1);
        for (size_t i = 0; i < n; i++)
            wwr[i] = bf16_to_f32(bf16_round(ww[i]));
        float *in = rand_buf((size_t)P * ci, 1), *o0 = malloc(no * 4), *o1 = rand_buf(no, 1), *r = malloc(no * 4);
        memcpy(r, o1, no * 4);
        struct nn_conv2d cl = {ci, co, 3, 1, 1, 1, wwr, bb, NULL, 0}, cf = cl;
        struct nn_linear ll = {ci, co, wwr, bb, NULL}, lf = ll;
        if (conv) {
            nn_backend_ref.conv2d(&cl, in, o0, 2, HW, HW, 0, NULL);
            cf.w = ww;
            CHECK(nn_backend_cpu_wide.conv2d_prepare(&cf, &err) == SD_OK);
            CHECK(nn_backend_cpu_wide.layer_bytes(cf.be_state) == n * 2);
            fast_conv(&nn_backend_cpu_wide, &cf, in, o1, 2, HW, HW, 1);
            nn_backend_cpu_wide.layer_release(&cf.be_state);
        } else {
            nn_backend_ref.linear(&ll, in, o0, P, 0, NULL);
            lf.w = ww;
            CHECK(nn_backend_cpu_wide.linear_prepare(&lf, &err) == SD_OK);
            CHECK(nn_backend_cpu_wide.layer_bytes(lf.be_state) == n * 2);
            CHECK(nn_backend_cpu_wide.linear_plan(&lf, P, 1, &err) == SD_OK);
            float *lws = calloc(nn_backend_cpu_wide.linear_ws(&lf, P) + 1, 4);
            nn_backend_cpu_wide.linear(&lf, in, o1, P, 1, lws);
            free(lws);
            nn_backend_cpu_wide.layer_release(&lf.be_state);
        }
        for (size_t i = 0; i < no; i++)
            o1[i] -= r[i];
        double dd = rel_diff(o1, o0, no);
        CHECK_MSG(dd < 1e-5, "wide %s in pieces: %g", conv ? "convolution" : "linear", dd);
        free(ww), free(wwr), free(bb), free(in), free(o0), free(o1), free(r);
    }

    /* From avx2 on, direct convolutions over 4 MB of float32 weights run
     * on gemm_f32 (packed bf16): the 3x3 above; here a 1x1 read in place
     * whose 1000 output channels end in a partial panel, and a strided 3x3
     * whose 288 output pixels take two chunks of the input gathered
     * (16 MB / 73 KB per pixel), accumulating. */
    struct {
        int B, H, cin, cout, k, stride, pad, acc;
    } pc[2] = {{2, 4, 1280, 1000, 1, 1, 0, 0}, {2, 24, 2048, 64, 3, 2, 1, 1}};
    for (int t = 0; t < 2; t++) {
        struct nn_conv2d cl = {pc[t].cin, pc[t].cout, pc[t].k, pc[t].stride, pc[t].pad, pc[t].pad, NULL, NULL, NULL, 0};
        size_t n = (size_t)cl.cout * cl.cin * cl.k * cl.k;
        int oh = nn_conv2d_out_size(&cl, pc[t].H);
        size_t no = (size_t)pc[t].B * oh * oh * cl.cout;
        float *ww = rand_buf(n, 0.02f), *wwr = malloc(n * 4), *bb = rand_buf(cl.cout, 1);
        for (size_t i = 0; i < n; i++)
            wwr[i] = bf16_to_f32(bf16_round(ww[i]));
        float *in = rand_buf((size_t)pc[t].B * pc[t].H * pc[t].H * cl.cin, 1), *o0 = malloc(no * 4);
        float *o1 = rand_buf(no, 1), *r = malloc(no * 4);
        memcpy(r, o1, no * 4);
        cl.b = bb;
        cl.w = wwr;
        nn_backend_ref.conv2d(&cl, in, o0, pc[t].B, pc[t].H, pc[t].H, 0, NULL);
        cl.w = ww;
        CHECK(nn_backend_cpu_wide.conv2d_prepare(&cl, &err) == SD_OK);
        CHECK(nn_backend_cpu_wide.layer_bytes(cl.be_state) <= (n + 64 * (size_t)cl.cin * cl.k * cl.k) * 2);
        fast_conv(&nn_backend_cpu_wide, &cl, in, o1, pc[t].B, pc[t].H, pc[t].H, pc[t].acc);
        nn_backend_cpu_wide.layer_release(&cl.be_state);
        if (pc[t].acc)
            for (size_t i = 0; i < no; i++)
                o1[i] -= r[i];
        double dd = rel_diff(o1, o0, no);
        CHECK_MSG(dd < 1e-5, "wide %dx%d conv %d -> %d stride %d: %g", cl.k, cl.k, cl.cin, cl.cout, cl.stride, dd);
        free(ww), free(wwr), free(bb), free(in), free(o0), free(o1), free(r);
    }
}

/* Linear layers on every fast backend against the reference: rows that
 * leave 1-5 of a 6-row block, one row, several tasks; bias or not;
 * accumulating or not; and (second shape) k over two slices (2151 +
 * 2150: the second adds to C) and columns that end in a partial panel.
 * Where the level has our packed kernel (gemm_f32.h: float32 at avx2, the
 * wide backend from avx2 on) once on it and once on oneDNN
 * (DIFFUSIOND_GEMM=onednn). */
static void check_linear(int K, int N)
{
    float *w = rand_buf((size_t)N * K, 0.3f), *b = rand_buf(N, 1), *x = rand_buf((size_t)300 * K, 1);
    float *y0 = malloc((size_t)300 * N * 4), *y1 = malloc((size_t)300 * N * 4), *r = rand_buf(300 * N, 1);
    int Ms[3] = {77, 1, 300};
    const struct nn_backend *bes[3] = {&nn_backend_cpu, &nn_backend_cpu_wide, &nn_backend_cpu_bf16};
    double tols[3] = {1e-5, 1e-2, 2e-2};
    for (int withb = 0; withb < 4; withb++) {
        if (withb >= 2)
            setenv("DIFFUSIOND_GEMM", "onednn", 1);
        struct nn_linear l = {K, N, w, withb % 2 ? b : NULL, NULL};
        for (int i = 0; i < 2 + bf16_runs(); i++) {
            struct sd_err err;
            struct nn_linear f = l;
            CHECK_MSG(bes[i]->linear_prepare(&f, &err) == SD_OK, "%s", err.msg);
            for (int mi = 0; mi < 3; mi++) {
                int M = Ms[mi];
                nn_backend_ref.linear(&l, x, y0, M, 0, NULL);
                for (int acc = 0; acc < 2; acc++) {
                    CHECK(bes[i]->linear_plan(&f, M, acc, &err) == SD_OK);
                    float *ws = calloc(bes[i]->linear_ws(&f, M) + 1, 4);
                    if (acc)
                        memcpy(y1, r, (size_t)M * N * 4);
                    bes[i]->linear(&f, x, y1, M, acc, ws);
                    if (acc)
                        for (size_t j = 0; j < (size_t)M * N; j++)
                            y1[j] -= r[j];
                    double d = rel_diff(y1, y0, (size_t)M * N);
                    CHECK_MSG(d < tols[i], "%s linear %dx%dx%d acc=%d bias=%d%s: %g", bes[i]->name, M, K,
                              N, acc, withb % 2, withb >= 2 ? " (oneDNN)" : "", d);
                    free(ws);
                }
            }
            bes[i]->layer_release(&f.be_state);
        }
        unsetenv("DIFFUSIOND_GEMM");
    }
    free(w), free(b), free(x), free(y0), free(y1), free(r);
}

TEST(ops_linear)
{
    check_linear(48, 96);
    check_linear(4301, 100);
}

/* The bf16 backend's fused LayerNorm -> linear and GEGLU -> linear against
 * the same two ops in a row on that backend (the same float32 row, the
 * same rounding to bf16: identical results) and against the reference. */
TEST(ops_fused_bf16)
{
    if (!bf16_runs())
        return;
    const struct nn_backend *be = &nn_backend_cpu_bf16;
    CHECK(be->layernorm_linear && be->geglu_linear && !nn_backend_cpu.layernorm_linear);
    int C = 300, N = 64, Ms[2] = {37, 700}; /* C: pieces of 256 and a tail; M: one and two threads */
    float *w = rand_buf((size_t)N * 2 * C, 0.1f), *b = rand_buf(N, 1), *x = rand_buf((size_t)700 * 2 * C, 2);
    float *g = rand_buf(2 * C, 1), *gb = rand_buf(2 * C, 1), *r = rand_buf((size_t)700 * N, 1);
    float *t = malloc((size_t)700 * 2 * C * 4), *t0 = malloc((size_t)700 * 2 * C * 4);
    float *y0 = malloc((size_t)700 * N * 4), *y1 = malloc((size_t)700 * N * 4), *y2 = malloc((size_t)700 * N * 4);
    for (int geglu = 0; geglu < 2; geglu++) {
        int K = geglu ? C : 2 * C; /* the product's input width */
        struct nn_linear l = {K, N, w, b, NULL}, f = l;
        struct nn_norm nm = {K, g, gb};
        struct sd_err err;
        CHECK_MSG(be->linear_prepare(&f, &err) == SD_OK, "%s", err.msg);
        for (int mi = 0; mi < 2; mi++)
            for (int acc = 0; acc < 2; acc++) {
                int M = Ms[mi];
                CHECK(be->linear_plan(&f, M, acc, &err) == SD_OK);
                float *ws = calloc(be->linear_ws(&f, M) + 1, 4);
                memcpy(y1, r, (size_t)M * N * 4);
                memcpy(y2, r, (size_t)M * N * 4);
                if (geglu) {
                    be->geglu(t, x, M, C);
                    nn_backend_ref.geglu(t0, x, M, C);
                    be->geglu_linear(&f, y2, x, M, C, acc, ws);
                } else {
                    be->layernorm(t, x, &nm, M, 1e-5f);
                    nn_backend_ref.layernorm(t0, x, &nm, M, 1e-5f);
                    be->layernorm_linear(&f, y2, x, &nm, M, 1e-5f, acc, ws);
                }
                be->linear(&f, t, y1, M, acc, ws);
                CHECK_MSG(!memcmp(y1, y2, (size_t)M * N * 4), "fused %s M=%d acc=%d differs from the two ops",
                          geglu ? "geglu" : "layernorm", M, acc);
                nn_backend_ref.linear(&l, t0, y0, M, 0, NULL);
                if (acc)
                    for (size_t j = 0; j < (size_t)M * N; j++)
                        y2[j] -= r[j];
                double d = rel_diff(y2, y0, (size_t)M * N);
                CHECK_MSG(d < 2e-2, "fused %s M=%d acc=%d vs reference: %g", geglu ? "geglu" : "layernorm", M,
                          acc, d);
                free(ws);
            }
        be->layer_release(&f.be_state);
    }
    free(w), free(b), free(x), free(g), free(gb), free(r), free(t), free(t0), free(y0), free(y1),
        free(y2);
}

/* The bf16 backend's feed-forward (x += l2(geglu(l1(layernorm(x)))), its
 * intermediates in bf16) against the reference ops in float32, and against
 * the same backend's op pairs, which differ only by l1's output being
 * rounded to bf16 before the GEGLU. */
TEST(ops_ff_bf16)
{
    if (!bf16_runs())
        return;
    const struct nn_backend *be = &nn_backend_cpu_bf16;
    CHECK(be->layernorm_ff && !nn_backend_cpu.layernorm_ff && !nn_backend_ref.layernorm_ff);
    int C = 48, F = 4 * C, Ns[2] = {5, 700}; /* one thread; several */
    float *w1 = rand_buf((size_t)2 * F * C, 0.15f), *b1 = rand_buf(2 * F, 0.5f);
    float *w2 = rand_buf((size_t)C * F, 0.08f), *b2 = rand_buf(C, 0.5f);
    float *g = rand_buf(C, 1), *gb = rand_buf(C, 1), *x = rand_buf((size_t)700 * C, 2);
    float *h = malloc((size_t)700 * C * 4), *p = malloc((size_t)700 * 2 * F * 4), *q = malloc((size_t)700 * F * 4);
    float *y0 = malloc((size_t)700 * C * 4), *y1 = malloc((size_t)700 * C * 4), *y2 = malloc((size_t)700 * C * 4);
    struct nn_linear l1 = {C, 2 * F, w1, b1, NULL}, l2 = {F, C, w2, b2, NULL}, f1 = l1, f2 = l2;
    struct nn_norm nm = {C, g, gb};
    struct sd_err err;
    CHECK_MSG(be->linear_prepare(&f1, &err) == SD_OK && be->linear_prepare(&f2, &err) == SD_OK, "%s", err.msg);
    for (int i = 0; i < 2; i++) {
        int N = Ns[i];
        size_t n = (size_t)N * C;
        CHECK_MSG(be->ff_plan(&f1, &f2, N, &err) == SD_OK, "%s", err.msg);
        CHECK(be->linear_plan(&f1, N, 0, &err) == SD_OK && be->linear_plan(&f2, N, 1, &err) == SD_OK);
        /* reference: float32 throughout */
        memcpy(y0, x, n * 4);
        nn_backend_ref.layernorm(h, x, &nm, N, 1e-5f);
        nn_backend_ref.linear(&l1, h, p, N, 0, NULL);
        nn_backend_ref.geglu(q, p, N, F);
        nn_backend_ref.linear(&l2, q, y0, N, 1, NULL);
        /* the bf16 pairs */
        float *ws = calloc(be->linear_ws(&f2, N) + be->linear_ws(&f1, N) + 1, 4);
        memcpy(y1, x, n * 4);
        be->layernorm_linear(&f1, p, x, &nm, N, 1e-5f, 0, ws);
        be->geglu_linear(&f2, y1, p, N, F, 1, ws);
        free(ws);
        /* fused, in place as the UNet runs it */
        ws = calloc(be->ff_ws(&f1, &f2, N) + 1, 4);
        memcpy(y2, x, n * 4);
        be->layernorm_ff(&f1, &f2, y2, y2, &nm, N, 1e-5f, ws);
        free(ws);
        for (size_t j = 0; j < n; j++) /* compare the feed-forward's output, not x + it */
            y0[j] -= x[j], y1[j] -= x[j], y2[j] -= x[j];
        double d_ref = rel_diff(y2, y0, n), d_pair = rel_diff(y2, y1, n), d_pair_ref = rel_diff(y1, y0, n);
        printf("    feed-forward N=%d: bf16 fused vs float32 %.2e, bf16 pairs vs float32 %.2e\n", N, d_ref,
               d_pair_ref);
        CHECK_MSG(d_ref < 2e-2, "feed-forward N=%d vs reference: %g", N, d_ref);
        CHECK_MSG(d_pair < 1e-2, "feed-forward N=%d vs the bf16 pairs: %g", N, d_pair);
        /* rounding l1's output adds little to the error the bf16 products make */
        CHECK_MSG(d_ref < 2 * d_pair_ref + 1e-3, "feed-forward N=%d: %g vs %g for the pairs", N, d_ref,
                  d_pair_ref);
    }
    be->layer_release(&f1.be_state);
    be->layer_release(&f2.be_state);
    free(w1), free(b1), free(w2), free(b2), free(g), free(gb), free(x), free(h), free(p), free(q);
    free(y0), free(y1), free(y2);
}

/* The bf16 backend's attention block (x += lo(attention(lq(layernorm(x)))),
 * bf16 between the products) gives exactly what its ops give one by one,
 * in self-attention and in cross-attention, with an odd number of rows. */
TEST(ops_attn_block_bf16)
{
    if (!bf16_runs())
        return;
    const struct nn_backend *be = &nn_backend_cpu_bf16;
    if (gemm_bf16_native()) /* the fused block needs the native bf16 kernels */
        CHECK(be->attn_block && !nn_backend_cpu.attn_block);
    if (!be->attn_block)
        return; /* the model runs the ops one by one */
    int B = 2, N = 37, T = 7, C = 64, heads = 2, dh = C / heads, BN = B * N;
    float scale = 1.0f / sqrtf((float)dh);
    float *g = rand_buf(C, 1), *gb = rand_buf(C, 1), *x = rand_buf((size_t)BN * C, 2);
    float *kv = rand_buf((size_t)2 * B * T * C, 1), *k = kv, *v = kv + (size_t)B * T * C;
    float *wq = rand_buf((size_t)3 * C * C, 0.2f), *bq = rand_buf(3 * C, 0.3f);
    float *wo = rand_buf((size_t)C * C, 0.2f), *bo = rand_buf(C, 0.3f);
    float *q = malloc((size_t)BN * 3 * C * 4), *o = malloc((size_t)BN * C * 4);
    float *y1 = malloc((size_t)BN * C * 4), *y2 = malloc((size_t)BN * C * 4);
    struct nn_norm nm = {C, g, gb};
    struct sd_err err;
    for (int cross = 0; cross < 2; cross++) {
        struct nn_linear lq = {C, cross ? C : 3 * C, wq, bq, NULL}, lo = {C, C, wo, bo, NULL};
        CHECK_MSG(be->linear_prepare(&lq, &err) == SD_OK && be->linear_prepare(&lo, &err) == SD_OK, "%s",
                  err.msg);
        int Nk = cross ? T : N;
        CHECK_MSG(be->attn_block_plan(&lq, &lo, B, N, heads, &err) == SD_OK, "%s", err.msg);
        CHECK(be->linear_plan(&lq, BN, 0, &err) == SD_OK && be->linear_plan(&lo, BN, 1, &err) == SD_OK);
        size_t nws = be->linear_ws(&lq, BN) + be->attention_ws(B, N, Nk, heads, dh) + 1;
        float *ws = calloc(nws, 4);
        /* one by one */
        memcpy(y1, x, (size_t)BN * C * 4);
        be->layernorm_linear(&lq, q, x, &nm, BN, 1e-5f, 0, ws);
        if (cross)
            be->attention(o, q, k, v, B, N, T, heads, dh, C, C, C, scale, 0, ws);
        else
            be->attention(o, q, q + C, q + 2 * C, B, N, N, heads, dh, 3 * C, 3 * C, 3 * C, scale, 0, ws);
        be->linear(&lo, o, y1, BN, 1, ws);
        free(ws);
        /* fused, in place */
        ws = calloc(be->attn_block_ws(&lq, &lo, B, N, Nk, heads) + 1, 4);
        memcpy(y2, x, (size_t)BN * C * 4);
        be->attn_block(&lq, &lo, y2, &nm, cross ? k : NULL, cross ? v : NULL, B, N, Nk, heads, 1e-5f, ws);
        free(ws);
        CHECK_MSG(!memcmp(y1, y2, (size_t)BN * C * 4), "%s-attention block differs from its ops",
                  cross ? "cross" : "self");
        be->layer_release(&lq.be_state);
        be->layer_release(&lo.be_state);
    }
    free(g), free(gb), free(x), free(kv), free(wq), free(bq), free(wo), free(bo), free(q), free(o);
    free(y1), free(y2);
}

/* The bf16 backend's GroupNorm -> convolution: against the same backend's
 * two ops (which differ by where the image is rounded to bf16) and against
 * the reference, for a Winograd layer and a oneDNN one (1x1), silu or
 * not, accumulating or not. */
TEST(ops_groupnorm_conv_bf16)
{
    if (!bf16_runs())
        return;
    const struct nn_backend *be = &nn_backend_cpu_bf16;
    CHECK(be->groupnorm_conv && !nn_backend_cpu.groupnorm_conv && !nn_backend_ref.groupnorm_conv);
    int B = 2, H = 11, W = 9, C = 64, G = 8, cout = 48;
    size_t nin = (size_t)B * H * W * C, nout = (size_t)B * H * W * cout;
    float *x = rand_buf(nin, 3), *g = rand_buf(C, 1), *gb = rand_buf(C, 1), *r = rand_buf(nout, 1);
    float *h = malloc(nin * 4), *y0 = malloc(nout * 4), *y1 = malloc(nout * 4), *y2 = malloc(nout * 4);
    struct nn_norm nm = {C, g, gb};
    for (int k = 1; k <= 3; k += 2) {
        float *w = rand_buf((size_t)cout * C * k * k, 0.1f), *b = rand_buf(cout, 0.5f);
        struct nn_conv2d l = {C, cout, k, 1, k / 2, k / 2, w, b, NULL, 0}, f = l;
        struct sd_err err;
        CHECK_MSG(be->conv2d_prepare(&f, &err) == SD_OK, "%s", err.msg);
        CHECK(winograd_owns(f.be_state) == (k == 3));
        for (int silu = 0; silu < 2; silu++)
            for (int acc = 0; acc < 2; acc++) {
                CHECK_MSG(be->conv2d_plan(&f, B, H, W, acc, &err) == SD_OK, "%s", err.msg);
                nn_backend_ref.groupnorm(h, x, &nm, B, H * W, G, 1e-6f, silu);
                nn_backend_ref.conv2d(&l, h, y0, B, H, W, 0, NULL);
                float *ws = calloc(be->conv2d_ws(&f, B, H, W) + 1, 4);
                memcpy(y1, r, nout * 4);
                be->groupnorm(h, x, &nm, B, H * W, G, 1e-6f, silu);
                be->conv2d(&f, h, y1, B, H, W, acc, ws);
                free(ws);
                ws = calloc(be->gn_conv_ws(&f, B, H, W) + 1, 4);
                memcpy(y2, r, nout * 4);
                be->groupnorm_conv(&f, y2, x, &nm, B, H, W, G, 1e-6f, silu, acc, ws);
                free(ws);
                if (acc)
                    for (size_t j = 0; j < nout; j++)
                        y1[j] -= r[j], y2[j] -= r[j];
                double d_pair = rel_diff(y2, y1, nout), d_ref = rel_diff(y2, y0, nout);
                if (k == 1) /* oneDNN reads the same bf16 values either way */
                    CHECK_MSG(d_pair == 0, "1x1: fused differs from the two ops by %g", d_pair);
                CHECK_MSG(d_pair < 1e-2 && d_ref < 2e-2, "k%d silu=%d acc=%d: %g vs the ops, %g vs reference",
                          k, silu, acc, d_pair, d_ref);
            }
        be->layer_release(&f.be_state);
        free(w), free(b);
    }
    free(x), free(g), free(gb), free(r), free(h), free(y0), free(y1), free(y2);
}

TEST(ops_norms)
{
    int B = 2, HW = 37, C = 24, G = 8;
    size_t n = (size_t)B * HW * C;
    float *x = rand_buf(n, 3), *g = rand_buf(C, 1), *bb = rand_buf(C, 1);
    for (size_t i = 0; i < n; i++)
        x[i] += 5; /* a mean far from 0 tests the variance computation */
    float *y0 = malloc(n * 4), *y1 = malloc(n * 4);
    struct nn_norm nm = {C, g, bb};
    for (int silu = 0; silu < 2; silu++) {
        nn_backend_ref.groupnorm(y0, x, &nm, B, HW, G, 1e-5f, silu);
        nn_backend_cpu.groupnorm(y1, x, &nm, B, HW, G, 1e-5f, silu);
        CHECK(rel_diff(y1, y0, n) < 1e-5);
    }
    /* Many pixels (several threads, blocks of pixels), narrow groups as in
     * the VAE, a large mean. */
    int HW2 = 3000, C2 = 128, G2 = 32;
    size_t n2 = (size_t)B * HW2 * C2;
    float *x2 = rand_buf(n2, 2), *g2 = rand_buf(C2, 1), *b2 = rand_buf(C2, 1);
    float *z0 = malloc(n2 * 4), *z1 = malloc(n2 * 4);
    for (size_t i = 0; i < n2; i++)
        x2[i] += 20 + (float)(i % C2);
    struct nn_norm nm2 = {C2, g2, b2};
    for (int silu = 0; silu < 2; silu++) {
        nn_backend_ref.groupnorm(z0, x2, &nm2, B, HW2, G2, 1e-6f, silu);
        nn_backend_cpu.groupnorm(z1, x2, &nm2, B, HW2, G2, 1e-6f, silu);
        CHECK(rel_diff(z1, z0, n2) < 1e-5);
    }
    free(x2), free(g2), free(b2), free(z0), free(z1);
    nn_backend_ref.layernorm(y0, x, &nm, B * HW, 1e-5f);
    nn_backend_cpu.layernorm(y1, x, &nm, B * HW, 1e-5f);
    CHECK(rel_diff(y1, y0, n) < 1e-5);
    free(x), free(g), free(bb), free(y0), free(y1);
}

/* Attention of random q, k, v (k scaled by kgrow^key index, so that a
 * row's maximum keeps growing from key tile to key tile) against the
 * reference, on the fast backends: float32 and bf16, each on the
 * queries-in-lanes kernel (for a non-causal mask, where the level has
 * one) and on the row kernel. */
static void check_attention_ex(int B, int Nq, int Nk, int heads, int dh, int causal, int stride_extra,
                               float kgrow)
{
    int C = heads * dh, ld = C + stride_extra;
    float *q = rand_buf((size_t)B * Nq * ld, 1), *k = rand_buf((size_t)B * Nk * ld, 1),
          *v = rand_buf((size_t)B * Nk * ld, 1);
    if (kgrow != 1.0f)
        for (int b = 0; b < B; b++)
            for (int j = 0; j < Nk; j++)
                for (int c = 0; c < ld; c++)
                    k[((size_t)b * Nk + j) * ld + c] = fabsf(k[((size_t)b * Nk + j) * ld + c]) *
                                                       powf(kgrow, (float)j);
    float *o0 = malloc((size_t)B * Nq * C * 4), *o1 = malloc((size_t)B * Nq * C * 4);
    float scale = 1.0f / sqrtf((float)dh);
    nn_backend_ref.attention(o0, q, k, v, B, Nq, Nk, heads, dh, ld, ld, ld, scale, causal, NULL);
    const struct nn_backend *bes[4] = {&nn_backend_cpu, &nn_backend_cpu, &nn_backend_cpu_bf16,
                                       &nn_backend_cpu_bf16};
    const char *kernel[4] = {"", " (row kernel)", "", " (row kernel)"};
    double tols[4] = {1e-5, 1e-5, 5e-3, 5e-3};
    for (int i = 0; i < (bf16_runs() ? 4 : 2); i++) {
        if (i % 2)
            setenv("DIFFUSIOND_ATTN_LANES", "0", 1);
        float *ws = malloc(bes[i]->attention_ws(B, Nq, Nk, heads, dh) * 4);
        bes[i]->attention(o1, q, k, v, B, Nq, Nk, heads, dh, ld, ld, ld, scale, causal, ws);
        double d = rel_diff(o1, o0, (size_t)B * Nq * C);
        CHECK_MSG(d < tols[i], "%s%s attention B%d Nq%d Nk%d h%d dh%d causal%d grow%g: %g", bes[i]->name,
                  kernel[i], B, Nq, Nk, heads, dh, causal, kgrow, d);
        free(ws);
        unsetenv("DIFFUSIOND_ATTN_LANES");
    }
    free(q), free(k), free(v), free(o0), free(o1);
}

static void check_attention(int B, int Nq, int Nk, int heads, int dh, int causal, int stride_extra)
{
    check_attention_ex(B, Nq, Nk, heads, dh, causal, stride_extra, 1.0f);
}

TEST(ops_attention)
{
    check_attention(2, 77, 77, 4, 8, 1, 0);     /* CLIP */
    check_attention(2, 150, 150, 2, 16, 0, 0);  /* self-attention, partial block */
    check_attention(2, 130, 77, 2, 16, 0, 0);   /* cross-attention */
    check_attention(1, 64, 64, 1, 32, 0, 64);   /* strided rows (fused qkv) */
    check_attention(2, 300, 300, 5, 64, 0, 0);  /* SD2 head size, several key tiles */
    check_attention(1, 200, 200, 2, 160, 1, 0); /* SD1 deep head size, causal */
    check_attention(1, 77, 77, 3, 40, 1, 0);    /* head size not a multiple of 16 */
    check_attention(1, 33, 77, 2, 7, 0, 0);     /* odd head size and key count */
    check_attention(1, 50, 60, 2, 24, 0, 0);    /* 16 + 8 channels */
    check_attention(1, 50, 60, 2, 12, 0, 0);    /* a masked 16-wide tail */
    check_attention(1, 130, 70, 1, 512, 0, 0);  /* the VAE mid-block: one 512-wide head */
    check_attention(1, 100, 1000, 2, 40, 0, 0); /* SD1's head size, many key tiles */
    check_attention_ex(1, 97, 700, 2, 40, 0, 0, 1.003f); /* the max grows tile after tile */
    check_attention_ex(1, 97, 700, 2, 40, 1, 0, 1.003f);
    /* Keys and values past 256 KB a head: the queries-in-lanes kernel
     * runs groups of query blocks (a partial last group and block), the
     * max growing under each block of a group in turn. */
    check_attention_ex(2, 300, 900, 8, 40, 0, 0, 1.0023f);
}

/* Nearest 2x upsampling then a 3x3 convolution, as nn_upconv's 2x2 layer
 * on the small image (nn.h), against the two ops in a row on the reference
 * backend: the recast weights on every backend, and the interleave of the
 * phases on the reference and the fast backend (bit for bit). */
static void check_upconv(int B, int cin, int cout, int H, int W)
{
    struct nn_conv2d l3 = {cin, cout, 3, 1, 1, 1, NULL, NULL, NULL, 0};
    float *w3 = rand_buf((size_t)cout * cin * 9, 0.3f), *b3 = rand_buf(cout, 0.5f);
    l3.w = w3, l3.b = b3;
    size_t nin = (size_t)B * H * W * cin, nout = (size_t)B * 4 * H * W * cout;
    size_t nph = (size_t)B * (H + 1) * (W + 1) * 4 * cout;
    float *x = rand_buf(nin, 1.0f), *up = malloc((size_t)4 * nin * 4), *y0 = malloc(nout * 4);
    float *y1 = malloc(nout * 4), *y2 = malloc(nout * 4), *ph = malloc(nph * 4);
    nn_backend_ref.upsample_nearest(up, x, B, H, W, cin, 2 * H, 2 * W);
    nn_backend_ref.conv2d(&l3, up, y0, B, 2 * H, 2 * W, 0, NULL);

    float *w2 = malloc((size_t)16 * cout * cin * 4), *b2 = malloc((size_t)4 * cout * 4);
    nn_upconv_weights(w2, b2, w3, b3, cin, cout);
    struct nn_conv2d l2 = {cin, 4 * cout, 2, 1, 1, 1, w2, b2, NULL, 0};
    CHECK_EQ_INT(nn_conv2d_out_size(&l2, H), H + 1);
    nn_backend_ref.conv2d(&l2, x, ph, B, H, W, 0, NULL);
    nn_backend_ref.interleave_phases(y1, ph, B, H, W, cout);
    double d = rel_diff(y1, y0, nout);
    CHECK_MSG(d < 1e-5, "ref upconv %dx%d %d->%d: rel diff %g", H, W, cin, cout, d);
    nn_backend_cpu.interleave_phases(y2, ph, B, H, W, cout);
    CHECK(memcmp(y1, y2, nout * 4) == 0);

    const struct nn_backend *bes[3] = {&nn_backend_cpu, &nn_backend_cpu_wide, &nn_backend_cpu_bf16};
    double tols[3] = {1e-5, 1e-2, 2e-2};
    for (int i = 0; i < 2 + bf16_runs(); i++) {
        struct sd_err err;
        struct nn_conv2d f = l2;
        CHECK_MSG(bes[i]->conv2d_prepare(&f, &err) == SD_OK, "%s", err.msg);
        fast_conv(bes[i], &f, x, ph, B, H, W, 0);
        bes[i]->interleave_phases(y2, ph, B, H, W, cout);
        d = rel_diff(y2, y0, nout);
        CHECK_MSG(d < tols[i], "%s upconv %dx%d %d->%d: rel diff %g", bes[i]->name, H, W, cin, cout, d);
        bes[i]->layer_release(&f.be_state);
    }
    free(w3), free(b3), free(x), free(up), free(y0), free(y1), free(y2), free(ph), free(w2), free(b2);
}

TEST(ops_upconv)
{
    check_upconv(1, 4, 3, 1, 1);    /* one pixel: every output reads the padding */
    check_upconv(2, 16, 16, 5, 7);  /* odd, unequal sides, a batch */
    check_upconv(1, 32, 48, 9, 4);
}

TEST(ops_elementwise)
{
    size_t N = 33;
    int F = 20;
    float *x = rand_buf(N * 2 * F, 3), *y0 = malloc(N * F * 4), *y1 = malloc(N * F * 4);
    nn_backend_ref.geglu(y0, x, N, F);
    nn_backend_cpu.geglu(y1, x, N, F);
    CHECK(rel_diff(y1, y0, N * F) < 1e-6);
    for (int a = NN_SILU; a <= NN_QUICK_GELU; a++) {
        memcpy(y0, x, N * F * 4);
        memcpy(y1, x, N * F * 4);
        nn_backend_ref.activation(y0, N * F, a);
        nn_backend_cpu.activation(y1, N * F, a);
        CHECK(rel_diff(y1, y0, N * F) < 1e-6);
    }
    /* nearest resize, 2x and to odd explicit sizes */
    int B = 2, H = 3, W = 5, C = 4;
    float *img = rand_buf((size_t)B * H * W * C, 1), *u0 = malloc(4 * 7 * 11 * B * C * 4),
          *u1 = malloc(4 * 7 * 11 * B * C * 4);
    int sizes[][2] = {{6, 10}, {7, 11}, {5, 9}};
    for (int s = 0; s < 3; s++) {
        int OH = sizes[s][0], OW = sizes[s][1];
        nn_backend_ref.upsample_nearest(u0, img, B, H, W, C, OH, OW);
        nn_backend_cpu.upsample_nearest(u1, img, B, H, W, C, OH, OW);
        CHECK(memcmp(u0, u1, (size_t)B * OH * OW * C * 4) == 0);
    }
    CHECK_EQ_INT(nn_nearest_src(5, 3, 6), 2);
    CHECK_EQ_INT(nn_nearest_src(4, 3, 5), 2); /* floor(4 * 0.6) */
    free(x), free(y0), free(y1), free(img), free(u0), free(u1);
}

TEST(ops_arena_measure)
{
    struct arena a;
    arena_init(&a);
    arena_begin_measure(&a);
    float *p = arena_alloc(&a, 10);
    size_t m = arena_mark(&a);
    float *q = arena_alloc(&a, 100);
    CHECK(p != q);
    arena_release(&a, m);
    arena_alloc(&a, 50);
    CHECK(arena_end_measure(&a, NULL) == SD_OK);
    CHECK(a.cap >= (64 + 448));
    p = arena_alloc(&a, 10);
    q = arena_alloc(&a, 100);
    q[99] = 1;
    CHECK((size_t)((char *)q - (char *)p) == 64);
    arena_free(&a);
}

/* winograd.c - see winograd.h.
 *
 * Layout: NHWC activations, so a tile's channels are contiguous and the
 * transforms run on 16 channels at a time (GCC/clang vector extensions:
 * AVX-512 here, two AVX2 halves or scalar code elsewhere).
 *   V[x][t][ci]  transformed input, x = 0..15 the tile position, t the tile
 *   U[x][ci][co] transformed weights (prepared once)
 *   M[x][t][co]  = V[x] U[x], one batched oneDNN matmul per chunk of tiles
 * Tile t of a chunk covers output pixels (2ty..2ty+1, 2tx..2tx+1) of image b.
 */
#include "tensor/winograd.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/arena.h"
#include "tensor/gemm_bf16.h"
#include "tensor/gemm_f32.h"
#include "tensor/onednn.h"
#include "tensor/vmath.h"
#include "tensor/widen.h"

#define WINO_MAGIC 0x57696e6fu
#define MAX_SHAPES 6
/* Floats of V plus M per chunk (8 MB): big enough for efficient products,
 * small enough that the scratch does not grow with the image. */
#define CHUNK_FLOATS (2u << 20)
/* ... but at least this many tiles: the wide layers (1280 + 2560 channels)
 * would get 32, and the products lose a third of their speed below ~128
 * rows (1280x1280 at 16x16: 321 GFLOP/s effective at 48 tiles, 400+ at
 * 128 and more). 256 rather than 128 rows: the 640-channel layers at
 * 32x32 (batch 2) take 6-18% less time in bf16 and 5-11% in float32
 * (bench, 640/960/1280/1920 -> 640); scratch 42 MB at most (1920 -> 640
 * in float32). */
#define CHUNK_MIN_TILES 256
/* oneDNN's bf16 products (where gemm_bf16 is not native) repack each
 * plane's U into the kernel's pair layout at every call (oneDNN 2.6 has no
 * prepacked layout for batched products), a cost per chunk that longer
 * chunks spread: 1024 tiles take 5-8% less time than 256 on the UNet's
 * 512x512 and the VAE's layers (bench, in-process, 8 of 9 shapes; scratch
 * up to 52 MB: 960 -> 320 at 64x64). gemm_bf16 reads U packed once and
 * prefers the shorter chunks (VAE layers 8-18% faster at 256 than 1024,
 * 128 and 512 alike). */
#define CHUNK_MIN_TILES_BF16 1024

/* 16-float vectors pass between static inline helpers only, so GCC's note
 * that their ABI differs without AVX-512 does not apply. */
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wpsabi"
#elif defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

typedef float v16 __attribute__((vector_size(64)));
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));

struct wino_shape {
    int B, H, W, chunk; /* chunk: tiles per batched product */
    struct onednn_bmm *bmm; /* NULL: own bf16 products (own_gemm) */
    int whole; /* wide: U widened whole, once per run (else a plane per product) */
};

struct wino_layer {
    uint32_t magic;
    int bf16;
    int wide; /* float32 products, u held in bf16 and widened per run (widen.h) */
    void *u; /* [16][cin][cout], f32 or bf16 (packed by gemm_bf16_index when own_gemm), owned */
    size_t u_bytes;
    struct gemm_f32 *packed; /* or U's 16 planes packed for gemm_f32 (u NULL), owned */
    int n;
    struct wino_shape s[MAX_SHAPES];
};

/* bf16 products by gemm_bf16 (u packed for it), else oneDNN's. */
static int own_gemm(const struct wino_layer *st) { return st->bf16 && GEMM_BF16_NATIVE; }

static inline v16 load16(const float *p)
{
    v16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store16(float *p, v16 v) { memcpy(p, &v, sizeof v); }

/* 16 bf16 values as floats (exact). */
static inline v16 load16_bf16(const uint16_t *p)
{
    v16h h;
    memcpy(&h, p, sizeof h);
    return (v16)(__builtin_convertvector(h, v16u) << 16);
}

/* float -> bf16, round to nearest even (activations are finite). */
static inline void store16_bf16(uint16_t *p, v16 v)
{
    v16u u = (v16u)v;
    u = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    v16h h = __builtin_convertvector(u, v16h);
    memcpy(p, &h, sizeof h);
}

int winograd_eligible(const struct nn_conv2d *l, int bf16)
{
    const char *e = getenv("DIFFUSIOND_WINOGRAD");
    if (e && !strcmp(e, "0"))
        return 0;
    if (l->k != 3 || l->stride != 1 || l->pad_lo != 1 || l->pad_hi != 1 || l->cin % 16 ||
        l->cout % 16)
        return 0;
    /* Up to cin x cout = 1280 x 640 always: those layers see many pixels
     * (a UNet's outer levels, the VAE). Bigger layers only where they see
     * at least 16x16 pixels at the model's native size: in a UNet's
     * innermost level (8x8 latent pixels for a 512x512 image, 4x4 for
     * 256x256) there are too few tiles per weight, the products are bound
     * by reading the 16/9 larger weights and the direct convolution wins
     * (bench: 1280x1280 at 4x4 is 40% slower, at 16x16 35-45% faster).
     * In bf16 from 4x4 pixels (SD's innermost level at 256x256): float32
     * would gain ~20% at 8x8 for 16/9 the weight memory, which it does
     * not take; bf16 transformed weights are smaller than float32 direct
     * ones, and gemm_bf16 reads them at full speed even for the 8 tiles
     * of a 4x4 batch of two (bench: 1280x1280 and 2560x1280 at 4x4 and
     * 8x8, batch 2, take 46-55% less time than oneDNN's direct bf16
     * convolution; 18-25% less at batch 1). From 8x8 with oneDNN's bf16
     * products (no gemm_bf16): 2.5-2.9% off a UNet step at 256x256. */
    int bf16_px = GEMM_BF16_NATIVE ? 4 * 4 : 8 * 8;
    /* wide (bf16 == 2) computes in float32: float32's choice. */
    return (long)l->cin * l->cout <= 1280L * 640 || l->px >= 16 * 16 || (bf16 == 1 && l->px >= bf16_px);
}

int winograd_owns(const void *be_state)
{
    return be_state && ((const struct wino_layer *)be_state)->magic == WINO_MAGIC;
}

/* Packed for gemm_f32 (widened in registers, no scratch) where the level
 * has it: the wide mode's planes. */
static int packed_mode(int mode) { return mode == 2 && gemm_f32_wanted(1); }

/* U = G g G^T for every (co, ci); G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1]. */
int winograd_prepare(struct nn_conv2d *l, int mode, struct sd_err *err)
{
    int bf16 = mode == 1, wide = mode == 2, packed = packed_mode(mode);
    if (wide && !packed) { /* one plane at a time */
        int rc = widen_reserve((size_t)l->cin * l->cout, err);
        if (rc)
            return rc;
    }
    struct wino_layer *st = calloc(1, sizeof *st);
    if (!st)
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");
    st->magic = WINO_MAGIC;
    st->bf16 = bf16;
    st->wide = wide;
    /* packed: U in float32 first, then packed (and rounded) plane by plane */
    st->u_bytes = (size_t)16 * l->cin * l->cout * (!packed && (bf16 || wide) ? 2 : 4);
    if (!(st->u = big_alloc(st->u_bytes))) {
        free(st);
        return sd_errf(err, SD_ERR_NOMEM, "out of memory preparing weights");
    }
    int cin = l->cin, cout = l->cout;
    float *uf = st->u;
    uint16_t *uh = st->u;
    /* Blocks of 16 output channels: 16 sequential read streams (one per
     * co) and whole cache lines written to each of the 16 U[x] rows. */
#pragma omp parallel for schedule(static)
    for (int co0 = 0; co0 < cout; co0 += 16)
        for (int ci = 0; ci < cin; ci++)
            for (int co = co0; co < co0 + 16 && co < cout; co++) {
                const float *g = l->w + ((size_t)co * cin + ci) * 9;
                float t[4][3], u[4][4];
                for (int j = 0; j < 3; j++) {
                    t[0][j] = g[j];
                    t[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
                    t[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
                    t[3][j] = g[6 + j];
                }
                for (int i = 0; i < 4; i++) {
                    u[i][0] = t[i][0];
                    u[i][1] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
                    u[i][2] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
                    u[i][3] = t[i][2];
                }
                for (int x = 0; x < 16; x++) {
                    size_t at = ((size_t)x * cin + ci) * cout + co;
                    if (own_gemm(st))
                        uh[(size_t)x * cin * cout + gemm_bf16_index(cin, cout, ci, co)] =
                            bf16_round(u[x / 4][x % 4]);
                    else if (!packed && (bf16 || wide))
                        uh[at] = bf16_round(u[x / 4][x % 4]);
                    else
                        uf[at] = u[x / 4][x % 4];
                }
            }
    if (packed) { /* plane x's element (n = co, k = ci) at x * cin * cout + ci * cout + co */
        int rc = gemm_f32_pack_batch(&st->packed, 16, uf, (size_t)cin * cout, 1, (size_t)cout, cout, cin,
                                     wide, err);
        big_free(st->u, st->u_bytes);
        st->u = NULL;
        if (rc) {
            free(st);
            return rc;
        }
        st->u_bytes = st->packed->wbytes;
    }
    l->be_state = st;
    return SD_OK;
}

static int n_tiles(int B, int H, int W) { return B * ((H + 1) / 2) * ((W + 1) / 2); }

/* Tiles per chunk: as many as fit CHUNK_FLOATS (V counted at its element
 * size, so bf16 layers get longer chunks), at least CHUNK_MIN_TILES, then
 * evened out so that the last chunk is not a short one padded with zero
 * rows (1800 tiles: 8 x 240, not 8 x 256 with 248 zero rows; a padded
 * tail cost 3-6% of a layer). */
static int chunk_tiles(const struct nn_conv2d *l, int tiles, int bf16)
{
    unsigned vin = bf16 ? (unsigned)(l->cin + 1) / 2 : (unsigned)l->cin;
    int c = (int)(CHUNK_FLOATS / (16u * (vin + (unsigned)l->cout)));
    int cmin = bf16 && !GEMM_BF16_NATIVE ? CHUNK_MIN_TILES_BF16 : CHUNK_MIN_TILES;
    c = c < cmin ? cmin : c;
    if (c >= tiles)
        return tiles;
    int n = (tiles + c - 1) / c;
    return ((tiles + n - 1) / n + 15) / 16 * 16;
}

static struct wino_shape *shape_find(const struct wino_layer *st, int B, int H, int W)
{
    for (int i = 0; i < st->n; i++)
        if (st->s[i].B == B && st->s[i].H == H && st->s[i].W == W)
            return (struct wino_shape *)&st->s[i];
    return NULL;
}

/* Elements from one of the 16 planes of V or M to the next: the plane's
 * n elements (eb bytes each) rounded up to whole 4 KiB pages plus one
 * cache line. Planes a multiple of 4 KiB apart (most chunk sizes) put the
 * 16 streams each tile's transform reads or writes into the same L1 cache
 * sets; spread, the layers take 2-10% less time in float32 and 2-5% in
 * bf16 (bench, in-process A/B over the UNet's and VAE's shapes). */
static size_t plane_elems(size_t n, size_t eb)
{
    return ((n * eb + 4095) / 4096 * 4096 + 64) / eb;
}

static size_t v_plane(const struct nn_conv2d *l, int chunk, int bf16)
{
    return plane_elems((size_t)chunk * l->cin, bf16 ? 2 : 4);
}

/* M is float32 in both. */
static size_t m_plane(const struct nn_conv2d *l, int chunk)
{
    return plane_elems((size_t)chunk * l->cout, 4);
}

/* Floats of V (float32 or bf16 elements) in a chunk. */
static size_t v_floats(const struct nn_conv2d *l, int chunk, int bf16)
{
    size_t n = 16 * v_plane(l, chunk, bf16);
    return bf16 ? (n + 1) / 2 : n;
}

int winograd_plan(struct nn_conv2d *l, int B, int H, int W, int accumulate, struct sd_err *err)
{
    struct wino_layer *st = l->be_state;
    if (shape_find(st, B, H, W))
        return SD_OK;
    if (st->n == MAX_SHAPES) { /* forget the oldest size (planned again if it comes back) */
        onednn_bmm_free(st->s[0].bmm);
        memmove(&st->s[0], &st->s[1], sizeof st->s[0] * (MAX_SHAPES - 1));
        st->n--;
    }
    struct wino_shape *s = &st->s[st->n];
    *s = (struct wino_shape){B, H, W, chunk_tiles(l, n_tiles(B, H, W), st->bf16), NULL, 0};
    if (own_gemm(st) || st->packed) {
        st->n++;
        return SD_OK;
    }
    /* wide: with one chunk, one plane per product, each widened just before
     * (its float32 copy stays in cache; 16 of them would not); with several
     * chunks, U widened whole once per run rather than once per chunk
     * (VAE decode at 512x512: 7.5-7.8 s instead of 8.4-8.8 in one run) */
    int rc = SD_OK;
    s->whole = st->wide && s->chunk < n_tiles(B, H, W);
    if (s->whole)
        rc = widen_reserve((size_t)16 * l->cin * l->cout, err);
    if (!rc)
        rc = onednn_bmm_plan(&s->bmm, st->wide && !s->whole ? 1 : 16, s->chunk, l->cin, l->cout,
                             v_plane(l, s->chunk, st->bf16), m_plane(l, s->chunk), st->bf16, err);
    if (!rc)
        st->n++;
    return rc;
}

size_t winograd_ws(const struct nn_conv2d *l, int B, int H, int W)
{
    const struct wino_layer *st = l->be_state;
    int chunk = chunk_tiles(l, n_tiles(B, H, W), st->bf16);
    return v_floats(l, chunk, st->bf16) + 16 * m_plane(l, chunk);
}

/* V[x][r] = B^T d B for the tiles t0 .. t0+nt-1 (rows r of the chunk);
 * B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]. in: float32, or bf16
 * when in16. */
static void input_transform(int C, const void *in, int in16, int H, int W, int t0, int nt, size_t plane,
                            void *V, int bf16)
{
    int TH = (H + 1) / 2, TW = (W + 1) / 2;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < nt; r++) {
        int t = t0 + r, b = t / (TH * TW), y0 = 2 * ((t / TW) % TH) - 1, x0 = 2 * (t % TW) - 1;
        for (int c = 0; c < C; c += 16) {
            v16 d[4][4], e[4][4], v[4][4];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) {
                    int y = y0 + i, x = x0 + j;
                    size_t at = (((size_t)b * H + y) * W + x) * C + c;
                    d[i][j] = !(y >= 0 && y < H && x >= 0 && x < W) ? (v16){0}
                              : in16                                 ? load16_bf16((const uint16_t *)in + at)
                                                                     : load16((const float *)in + at);
                }
            for (int j = 0; j < 4; j++) {
                e[0][j] = d[0][j] - d[2][j];
                e[1][j] = d[1][j] + d[2][j];
                e[2][j] = d[2][j] - d[1][j];
                e[3][j] = d[1][j] - d[3][j];
            }
            for (int i = 0; i < 4; i++) {
                v[i][0] = e[i][0] - e[i][2];
                v[i][1] = e[i][1] + e[i][2];
                v[i][2] = e[i][2] - e[i][1];
                v[i][3] = e[i][1] - e[i][3];
            }
            size_t at = (size_t)r * C + c;
            for (int x = 0; x < 16; x++) {
                if (bf16)
                    store16_bf16((uint16_t *)V + x * plane + at, v[x / 4][x % 4]);
                else
                    store16((float *)V + x * plane + at, v[x / 4][x % 4]);
            }
        }
    }
}

/* out = A^T m A (+ bias, += when accumulating); A^T = [1 1 1 0; 0 1 -1 -1]. */
static void output_transform(int C, const float *bias, const float *M, float *out, int H, int W,
                             int t0, int nt, size_t plane, int accumulate)
{
    int TH = (H + 1) / 2, TW = (W + 1) / 2;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < nt; r++) {
        int t = t0 + r, b = t / (TH * TW), oy = 2 * ((t / TW) % TH), ox = 2 * (t % TW);
        for (int c = 0; c < C; c += 16) {
            v16 m[16], r0[4], r1[4], o[2][2];
            for (int x = 0; x < 16; x++)
                m[x] = load16(M + x * plane + (size_t)r * C + c);
            for (int j = 0; j < 4; j++) {
                r0[j] = m[j] + m[4 + j] + m[8 + j];
                r1[j] = m[4 + j] - m[8 + j] - m[12 + j];
            }
            v16 bv = bias ? load16(bias + c) : (v16){0};
            o[0][0] = r0[0] + r0[1] + r0[2] + bv;
            o[0][1] = r0[1] - r0[2] - r0[3] + bv;
            o[1][0] = r1[0] + r1[1] + r1[2] + bv;
            o[1][1] = r1[1] - r1[2] - r1[3] + bv;
            for (int i = 0; i < 2 && oy + i < H; i++)
                for (int j = 0; j < 2 && ox + j < W; j++) {
                    float *p = out + (((size_t)b * H + oy + i) * W + ox + j) * C + c;
                    store16(p, accumulate ? load16(p) + o[i][j] : o[i][j]);
                }
        }
    }
}

/* M[x] = V[x] U[x] for the 16 planes, nt rows each: 16 x panels
 * independent column panels shared out among the threads. */
static void products_bf16(const struct nn_conv2d *l, int nt, const void *V, size_t vp, const void *U,
                          float *M, size_t mp)
{
    int panels = gemm_bf16_panels(l->cout);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < 16 * panels; i++) {
        int x = i / panels;
        gemm_bf16_panel(nt, l->cin, l->cout, (const uint16_t *)V + x * vp, (size_t)l->cin,
                        (const uint16_t *)U + (size_t)x * l->cin * l->cout, i % panels, M + x * mp,
                        (size_t)l->cout);
    }
}

static void run(const struct nn_conv2d *l, const void *in, int in16, float *out, int B, int H, int W,
                int accumulate, float *ws)
{
    const struct wino_layer *st = l->be_state;
    struct wino_shape *s = shape_find(st, B, H, W);
    SD_ASSERT(s); /* planned in measure mode */
    void *V = ws;
    float *M = ws + v_floats(l, s->chunk, st->bf16);
    size_t vp = v_plane(l, s->chunk, st->bf16), mp = m_plane(l, s->chunk);
    int T = n_tiles(B, H, W);
    const void *U = s->whole ? widen_begin(st->u, (size_t)16 * l->cin * l->cout) : st->u;
    for (int t0 = 0; t0 < T; t0 += s->chunk) {
        int nt = T - t0 < s->chunk ? T - t0 : s->chunk;
        input_transform(l->cin, in, in16, H, W, t0, nt, vp, V, st->bf16);
        if (own_gemm(st) || st->packed) {
            if (st->packed) /* M[x] = V[x] U[x] */
                gemm_f32_run_batch(st->packed, nt, V, vp, (size_t)l->cin, M, mp, (size_t)l->cout, 0);
            else
                products_bf16(l, nt, V, vp, st->u, M, mp);
            output_transform(l->cout, l->b, M, out, H, W, t0, nt, mp, accumulate);
            continue;
        }
        /* A short last chunk: zero the unused rows (their outputs are not
         * read; each product row depends on its own row only). */
        size_t el = st->bf16 ? 2 : 4, row = (size_t)l->cin * el;
        for (int x = 0; nt < s->chunk && x < 16; x++)
            memset((char *)V + x * vp * el + nt * row, 0, (size_t)(s->chunk - nt) * row);
        if (st->wide && !s->whole) {
            size_t plane = (size_t)l->cin * l->cout;
            for (int x = 0; x < 16; x++) {
                onednn_bmm_run(s->bmm, (const float *)V + x * vp,
                               widen_begin((const uint16_t *)st->u + x * plane, plane), M + x * mp);
                widen_end();
            }
        } else {
            onednn_bmm_run(s->bmm, V, U, M);
        }
        output_transform(l->cout, l->b, M, out, H, W, t0, nt, mp, accumulate);
    }
    if (s->whole)
        widen_end();
}

void winograd_run(const struct nn_conv2d *l, const float *in, float *out, int B, int H, int W,
                  int accumulate, float *ws)
{
    run(l, in, 0, out, B, H, W, accumulate, ws);
}

void winograd_run_in16(const struct nn_conv2d *l, const uint16_t *in16, float *out, int B, int H, int W,
                       int accumulate, float *ws)
{
    SD_ASSERT(((const struct wino_layer *)l->be_state)->bf16);
    run(l, in16, 1, out, B, H, W, accumulate, ws);
}

size_t winograd_weight_bytes(const void *be_state)
{
    return ((const struct wino_layer *)be_state)->u_bytes;
}

void winograd_release(void **be_state)
{
    struct wino_layer *st = *be_state;
    for (int i = 0; i < st->n; i++)
        onednn_bmm_free(st->s[i].bmm);
    if (st->packed)
        gemm_f32_free(&st->packed);
    else
        big_free(st->u, st->u_bytes);
    free(st);
    *be_state = NULL;
}

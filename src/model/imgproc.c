/* imgproc.c - see imgproc.h. */
#include "model/imgproc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS (32 - 8 - 2)

static double sinc(double x)
{
    if (x == 0.0)
        return 1.0;
    x = x * M_PI;
    return sin(x) / x;
}

static double lanczos(double x)
{
    return -3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0;
}

/* The integer coefficients of one direction: out position o reads in
 * samples [bounds[2o], bounds[2o] + bounds[2o + 1]) with weights
 * k[o * ksize + ...]. Returns ksize, 0 when out of memory. */
static int coeffs(int in_size, int out_size, int **boundsp, int32_t **kp)
{
    double scale = (double)in_size / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 3.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *kk = malloc((size_t)out_size * ksize * sizeof *kk);
    int *bounds = malloc((size_t)out_size * 2 * sizeof *bounds);
    int32_t *k = malloc((size_t)out_size * ksize * sizeof *k);
    if (!kk || !bounds || !k) {
        free(kk), free(bounds), free(k);
        return 0;
    }
    double inv = 1.0 / filterscale;
    for (int xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale, ww = 0.0;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0)
            xmin = 0;
        if (xmax > in_size)
            xmax = in_size;
        xmax -= xmin;
        double *w = &kk[(size_t)xx * ksize];
        int x = 0;
        for (; x < xmax; x++) {
            w[x] = lanczos((x + xmin - center + 0.5) * inv);
            ww += w[x];
        }
        if (ww != 0.0)
            for (x = 0; x < xmax; x++)
                w[x] /= ww;
        for (; x < ksize; x++)
            w[x] = 0;
        bounds[2 * xx] = xmin;
        bounds[2 * xx + 1] = xmax;
    }
    for (size_t i = 0; i < (size_t)out_size * ksize; i++) /* round half away from zero */
        k[i] = kk[i] < 0 ? (int32_t)(-0.5 + kk[i] * (1 << PRECISION_BITS))
                         : (int32_t)(0.5 + kk[i] * (1 << PRECISION_BITS));
    free(kk);
    *boundsp = bounds;
    *kp = k;
    return ksize;
}

static uint8_t clip8(int32_t v)
{
    int32_t q = v >= 0 ? v >> PRECISION_BITS : -((-v + (1 << PRECISION_BITS) - 1) >> PRECISION_BITS);
    return q < 0 ? 0 : q > 255 ? 255 : (uint8_t)q;
}

int img_resize_lanczos(const uint8_t *src, int sw, int sh, int ch, uint8_t *dst, int dw, int dh)
{
    int *bv, *bh = NULL;
    int32_t *kv, *kh = NULL;
    int ksv = coeffs(sh, dh, &bv, &kv);
    if (!ksv)
        return -1;
    /* rows of the source the vertical pass reads */
    int y0 = bv[0], y1 = bv[2 * dh - 2] + bv[2 * dh - 1];
    const uint8_t *img = src;
    int iw = sw, rows_off = 0;
    uint8_t *tmp = NULL;
    if (dw != sw) { /* horizontal pass into an 8-bit image of the rows needed */
        int ksh = coeffs(sw, dw, &bh, &kh);
        tmp = malloc((size_t)dw * (y1 - y0) * ch + 1);
        if (!ksh || !tmp) {
            free(bv), free(kv), free(bh), free(kh), free(tmp);
            return -1;
        }
        for (int y = y0; y < y1; y++)
            for (int xx = 0; xx < dw; xx++) {
                const int32_t *k = &kh[(size_t)xx * ksh];
                int xmin = bh[2 * xx], xmax = bh[2 * xx + 1];
                for (int c = 0; c < ch; c++) {
                    int32_t ss = 1 << (PRECISION_BITS - 1);
                    for (int x = 0; x < xmax; x++)
                        ss += src[((size_t)y * sw + x + xmin) * ch + c] * k[x];
                    tmp[((size_t)(y - y0) * dw + xx) * ch + c] = clip8(ss);
                }
            }
        img = tmp, iw = dw, rows_off = y0;
    }
    if (dh != sh) {
        for (int yy = 0; yy < dh; yy++) {
            const int32_t *k = &kv[(size_t)yy * ksv];
            int ymin = bv[2 * yy] - rows_off, ymax = bv[2 * yy + 1];
            for (int xx = 0; xx < iw; xx++)
                for (int c = 0; c < ch; c++) {
                    int32_t ss = 1 << (PRECISION_BITS - 1);
                    for (int y = 0; y < ymax; y++)
                        ss += img[((size_t)(y + ymin) * iw + xx) * ch + c] * k[y];
                    dst[((size_t)yy * dw + xx) * ch + c] = clip8(ss);
                }
        }
    } else if (img != src) {
        memcpy(dst, img, (size_t)dw * dh * ch);
    } else {
        memcpy(dst, src, (size_t)dw * dh * ch);
    }
    free(bv), free(kv), free(bh), free(kh), free(tmp);
    return 0;
}

void img_rgb_to_gray(const uint8_t *rgb, long npix, uint8_t *gray)
{
    for (long i = 0; i < npix; i++)
        gray[i] = (uint8_t)((rgb[3 * i] * 19595 + rgb[3 * i + 1] * 38470 + rgb[3 * i + 2] * 7471 + 0x8000) >> 16);
}

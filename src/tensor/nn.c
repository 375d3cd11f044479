/* nn.c - execution context helpers (see nn.h). */
#include "tensor/nn.h"

#include <string.h>
#include <time.h>

struct nn_profile nn_prof;
const char *const nn_op_names[NN_OP_COUNT] = {
    "conv", "linear", "attention", "groupnorm", "layernorm", "geglu", "layernorm+linear",
    "geglu+linear", "feed-forward", "attention block", "groupnorm+conv", "activation", "add",
    "upsample", "concat",
};

double nn_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

void nn_init(struct nn *nn, const struct nn_backend *be)
{
    memset(nn, 0, sizeof *nn);
    nn->be = be;
    arena_init(&nn->own);
    nn->arena = &nn->own;
}

void nn_free(struct nn *nn)
{
    arena_free(&nn->own);
}

void nn_share_arena(struct nn *nn, struct arena *shared)
{
    arena_free(&nn->own);
    nn->arena = shared;
}

void nn_conv2d_release(const struct nn_backend *be, struct nn_conv2d *l)
{
    if (l->be_state && be->layer_release)
        be->layer_release(&l->be_state);
}

void nn_linear_release(const struct nn_backend *be, struct nn_linear *l)
{
    if (l->be_state && be->layer_release)
        be->layer_release(&l->be_state);
}

void nn_upconv_weights(float *w2, float *b2, const float *w3, const float *b3, int cin, int cout)
{
    /* tap[a][k]: the 2x2 tap that 3x3 tap k lands on in phase a (see nn.h):
     * phase 0 reads rows i-1 (k = 0) and i (k = 1, 2); phase 1 rows i
     * (k = 0, 1) and i+1 (k = 2). */
    static const int tap[2][3] = {{0, 1, 1}, {0, 0, 1}};
    memset(w2, 0, (size_t)4 * cout * cin * 4 * sizeof(float));
    for (int a = 0; a < 2; a++)
        for (int c = 0; c < 2; c++)
            for (int o = 0; o < cout; o++) {
                float *dst = w2 + ((size_t)(2 * a + c) * cout + o) * cin * 4;
                const float *src = w3 + (size_t)o * cin * 9;
                for (int i = 0; i < cin; i++)
                    for (int ky = 0; ky < 3; ky++)
                        for (int kx = 0; kx < 3; kx++)
                            dst[i * 4 + tap[a][ky] * 2 + tap[c][kx]] += src[i * 9 + ky * 3 + kx];
                if (b2)
                    b2[(2 * a + c) * cout + o] = b3 ? b3[o] : 0.0f;
            }
}

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

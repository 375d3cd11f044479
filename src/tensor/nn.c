/* nn.c - execution context helpers (see nn.h). */
#include "tensor/nn.h"

#include <string.h>

void nn_init(struct nn *nn, const struct nn_backend *be)
{
    memset(nn, 0, sizeof *nn);
    nn->be = be;
    arena_init(&nn->arena);
}

void nn_free(struct nn *nn)
{
    arena_free(&nn->arena);
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

/* clip.h - the CLIP text encoder (transformers' CLIPTextModel).
 *
 * Turns 77 token ids into the [77, hidden] conditioning the UNet attends to
 * (sd-reference.md 4.1): token + position embeddings, pre-LayerNorm
 * transformer layers with causal self-attention, final LayerNorm.
 * SD 1.x uses OpenAI's ViT-L/14 text tower (12 layers, quick_gelu), SD 2.x
 * OpenCLIP ViT-H/14's (23 layers, gelu); the config says which.
 */
#ifndef SD_CLIP_H
#define SD_CLIP_H

#include <stdint.h>

#include "model/config.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "tensor/nn.h"

struct clip_layer {
    struct nn_norm ln1, ln2;
    struct nn_linear qkv, o;     /* q, k, v stacked: [3H, H]; o [H, H]; with bias */
    struct nn_linear fc1;        /* [I, H] */
    struct nn_linear fc2;        /* [H, I] */
};

struct clip {
    struct clip_config cfg;
    struct weights w;
    struct st_tensor tok_emb;    /* [vocab, H] as the file holds it (rows converted as read) */
    const float *pos_emb;        /* [max_positions, H] */
    struct clip_layer *layers;   /* cfg.layers */
    struct nn_norm final_ln;
    struct nn_linear proj;       /* text_projection [P, H], no bias (WithProjection) */
    struct nn nn;
    int planned_T;               /* sequence length the arena is sized for */
};

/* Load <dir>/text_encoder (config.json + model[.variant].safetensors). */
int clip_load(struct clip *c, const char *dir, const char *variant, const struct nn_backend *be,
              struct sd_err *err);
/* The same from any source (text_encoder_2, a single-file checkpoint). */
int clip_load_src(struct clip *c, const struct weights_src *src, const struct nn_backend *be,
                  struct sd_err *err);

/* out[T, H] for ids[T] (T <= max_positions). clip_skip 0: last_hidden_state;
 * k > 0: final_layer_norm of the output of layer (layers - k), as diffusers'
 * clip_skip. */
int clip_encode(struct clip *c, const int32_t *ids, int T, int clip_skip, float *out,
                struct sd_err *err);

/* As StableDiffusionXLPipeline reads an encoder: hidden[T, H] = the output
 * of layer (layers - 1 - skip), without the final LayerNorm (transformers'
 * hidden_states[-(skip + 2)]); and, when pooled is not NULL (a model with
 * text_projection), pooled[projection_dim] = text_projection(
 * final_layer_norm(last layer)) at the end-of-text token (the first maximal
 * id when the config's eos_token_id is 2, else the first eos_token_id). */
int clip_encode_hidden(struct clip *c, const int32_t *ids, int T, int skip, float *hidden, float *pooled,
                       struct sd_err *err);

/* Size activations and kernels for T tokens now (clip_encode does it when
 * T changes; allocates). */
int clip_prepare(struct clip *c, int T, struct sd_err *err);

void clip_free(struct clip *c);

#endif

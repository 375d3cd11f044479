/* lora.h - LoRA adapters merged into a loaded model's weights.
 *
 * Formats (model-formats.md section 3): kohya / A1111 LoRA and LoCon files
 * (`lora_unet_*`, `lora_te_*`, SDXL's `lora_te1_*` / `lora_te2_*`, with
 * `lora_down` / `lora_up` / `alpha`; UNet module paths in either diffusers'
 * or the original UNet's spelling), and diffusers / PEFT files
 * (`unet.<path>.lora_A.weight` / `lora_B`, `text_encoder[_2].<path>`, and
 * the older `...processor.to_q_lora.down.weight` spelling). Every module of
 * a file must land on a layer of the model: a file with keys that fit
 * nothing is refused with the keys listed, never applied in part.
 *
 * Merging: W = W0 + sum_i weight_i * scale_i * (up_i @ down_i), scale =
 * alpha / rank (1 without alpha), into the backend's prepared copy of each
 * layer. W0 is read again from the model file every time, so a set is never
 * removed by subtraction: going back to no LoRA restores the exact weights.
 * A set stays merged while consecutive generations ask for the same one.
 */
#ifndef SD_LORA_H
#define SD_LORA_H

#include "sd.h"
#include "util/err.h"

struct weights;

/* What a model remembers of the set merged into it. */
struct lora_state {
    char dir[1024];                 /* --lora-dir; "" when none */
    int n;
    char names[SD_MAX_LORAS][SD_LORA_NAME_MAX];
    float weights[SD_MAX_LORAS];
    /* Layers whose prepared weights are not the originals now. */
    void **touched;
    int n_touched, cap_touched;
};

/* Make m's weights the originals plus `set` (names resolved in the
 * model's LoRA folder). A no-op when the same set is merged already. On
 * failure the model is left with its original weights. Sets *te_changed
 * when a text encoder's weights changed (cached prompts are stale). */
int lora_apply(sd_model *m, const struct sd_lora *set, int n, int *te_changed, struct sd_err *err);

/* The path of LoRA `name` in dir, checking the name: no path separators,
 * no leading dot, at most SD_LORA_NAME_MAX - 1 bytes; the file must exist.
 * Tried as given, then with ".safetensors" appended. */
int lora_path(const char *dir, const char *name, char *out, size_t cap, struct sd_err *err);

void lora_state_free(struct lora_state *s);

#endif

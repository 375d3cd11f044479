/* test_detect.c - what a single file is, decided from names and shapes
 * alone, on the key sets of every family (tests/data/keysets: header-only
 * files made by tools/gen_keysets.py), and the one-line refusal of the
 * families diffusiond cannot run. */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "model/checkpoint.h"
#include "test.h"

/* A gzip'd header-only file, parsed with st_parse_header. */
static struct st_file *open_keyset(const char *name, uint8_t **buf)
{
    char path[256];
    snprintf(path, sizeof path, "tests/data/keysets/%s.st-header.gz", name);
    gzFile g = gzopen(path, "rb");
    *buf = NULL;
    if (!g) {
        CHECK_MSG(0, "%s: cannot open", path);
        return NULL;
    }
    size_t cap = 1 << 20, len = 0;
    uint8_t *b = malloc(cap);
    int n;
    while (b && (n = gzread(g, b + len, (unsigned)(cap - len))) > 0) {
        len += (size_t)n;
        if (len == cap)
            b = realloc(b, cap *= 2);
    }
    gzclose(g);
    struct st_file *f = NULL;
    struct sd_err err;
    if (!b || st_parse_header(&f, b, len, path, &err)) {
        CHECK_MSG(0, "%s: %s", path, b ? err.msg : "out of memory");
        free(b);
        return NULL;
    }
    *buf = b;
    return f;
}

TEST(detect_families)
{
    static const struct {
        const char *keyset;
        enum ckpt_family family;
        int unet_in, n_te;
        const char *te_prefix; /* first text encoder's */
        const char *error;     /* ckpt_check_runnable's message, or NULL when runnable */
    } cases[] = {
        {"sd15", CKPT_SD1, 4, 1, "cond_stage_model.transformer.", NULL},
        {"sd15-inpainting", CKPT_SD1, 9, 1, "cond_stage_model.transformer.", NULL},
        {"sd21-768-v", CKPT_SD2, 4, 1, "cond_stage_model.model.", NULL},
        {"sd21-base", CKPT_SD2, 4, 1, "cond_stage_model.model.", NULL},
        {"sd-turbo", CKPT_SD2, 4, 1, "conditioner.embedders.0.model.", NULL},
        {"sdxl-base", CKPT_SDXL, 4, 2, "conditioner.embedders.0.transformer.", NULL},
        {"sdxl-vpred", CKPT_SDXL, 4, 2, "conditioner.embedders.0.transformer.", NULL},
        {"sdxl-refiner", CKPT_SDXL_REFINER, 4, 0, "", "SDXL refiner checkpoint: not supported"},
        {"playground-v2.5", CKPT_PLAYGROUND25, 4, 0, "", "Playground v2.5 checkpoint: not supported"},
        {"flux-dev", CKPT_FLUX, 4, 0, "", "a Flux checkpoint: not supported"},
        {"sd3-medium", CKPT_SD3, 4, 0, "", "a Stable Diffusion 3 checkpoint: not supported"},
        {"cascade-stage-c", CKPT_CASCADE, 4, 0, "", "Stable Cascade checkpoint: not supported"},
        {"lora-kohya-sd15", CKPT_LORA, 4, 0, "", "a LoRA, not a model"},
        {"vae-ldm", CKPT_VAE, 4, 0, "", "a VAE alone"},
        {"diffusers-unet", CKPT_DIFFUSERS, 4, 0, "", "one network of a diffusers folder"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t *buf;
        struct st_file *f = open_keyset(cases[i].keyset, &buf);
        if (!f)
            continue;
        struct ckpt_info in;
        ckpt_detect(f, &in);
        CHECK_MSG(in.family == cases[i].family, "%s: detected %s", cases[i].keyset,
                  ckpt_family_name(in.family));
        CHECK_MSG(in.unet_in == cases[i].unet_in && in.n_te == cases[i].n_te &&
                  !strcmp(in.te_prefix[0], cases[i].te_prefix),
                  "%s: unet_in %d, %d text encoders, '%s'", cases[i].keyset, in.unet_in, in.n_te, in.te_prefix[0]);
        struct sd_err err;
        int rc = ckpt_check_runnable(cases[i].keyset, &in, &err);
        if (cases[i].error)
            CHECK_MSG(rc == SD_ERR_UNSUPPORTED && strstr(err.msg, cases[i].error) && !strchr(err.msg, '\n'),
                      "%s: %s", cases[i].keyset, rc ? err.msg : "accepted");
        else
            CHECK_MSG(rc == SD_OK, "%s: %s", cases[i].keyset, err.msg);
        printf("    %-18s %-16s %s\n", cases[i].keyset, ckpt_family_name(in.family), rc ? err.msg : "runs");
        st_close(f);
        free(buf);
    }
}

/* What the files say about prediction: SDXL's v_pred/ztsnr keys, SD 2.x
 * modelspec metadata. */
TEST(detect_prediction_keys)
{
    uint8_t *buf;
    struct ckpt_info in;
    struct st_file *f = open_keyset("sdxl-vpred", &buf);
    if (f) {
        ckpt_detect(f, &in);
        CHECK(in.v_pred && in.ztsnr && !in.prediction);
        st_close(f), free(buf);
    }
    f = open_keyset("sd21-base", &buf);
    if (f) {
        ckpt_detect(f, &in);
        CHECK(in.prediction && !strcmp(in.prediction, "epsilon") && !in.v_pred);
        st_close(f), free(buf);
    }
    f = open_keyset("sdxl-base", &buf);
    if (f) {
        ckpt_detect(f, &in);
        CHECK(!in.v_pred && !in.ztsnr && !in.prediction && in.global_step == -1);
        st_close(f), free(buf);
    }
}

/* The real layouts' names: every UNet, VAE and text encoder tensor of the
 * standard configs has its counterpart in the real key sets, and the
 * OpenCLIP q/k/v views are row thirds of in_proj. */
TEST(detect_translation_covers_real_keysets)
{
    uint8_t *buf;
    struct st_file *f = open_keyset("sd21-768-v", &buf);
    if (!f)
        return;
    struct ckpt_map m = {.part = CKPT_PART_TE1, .te = CKPT_TE_OPENCLIP, .prefix = "cond_stage_model.model."};
    struct st_tensor v;
    int tr;
    CHECK(ckpt_map_tensor(&m, f, "text_model.encoder.layers.22.self_attn.k_proj.weight", &v, &tr) &&
          v.shape[0] == 1024 && v.shape[1] == 1024 && !tr);
    CHECK(ckpt_map_tensor(&m, f, "text_model.encoder.layers.0.self_attn.v_proj.bias", &v, &tr) &&
          v.ndim == 1 && v.shape[0] == 1024);
    CHECK(ckpt_map_tensor(&m, f, "text_model.embeddings.position_embedding.weight", &v, &tr) &&
          v.shape[0] == 77 && v.shape[1] == 1024);
    CHECK(ckpt_map_tensor(&m, f, "text_projection.weight", &v, &tr) && tr);
    CHECK(!ckpt_map_tensor(&m, f, "text_model.encoder.layers.24.mlp.fc1.weight", &v, &tr));
    struct ckpt_map vm = {.part = CKPT_PART_VAE, .prefix = "first_stage_model.", .vae_blocks = 4};
    CHECK(ckpt_map_tensor(&vm, f, "decoder.mid_block.attentions.0.to_q.weight", &v, &tr) && v.ndim == 2);
    CHECK(ckpt_map_tensor(&vm, f, "decoder.up_blocks.0.resnets.2.conv1.weight", &v, &tr) &&
          v.shape[0] == 512); /* decoder.up.3: the 512-wide level */
    CHECK(ckpt_map_tensor(&vm, f, "decoder.up_blocks.3.resnets.0.conv_shortcut.weight", &v, &tr) &&
          v.shape[0] == 128);
    CHECK(ckpt_map_tensor(&vm, f, "encoder.down_blocks.1.downsamplers.0.conv.weight", &v, &tr));
    st_close(f);
    free(buf);
}

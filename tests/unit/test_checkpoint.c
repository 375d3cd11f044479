/* test_checkpoint.c - single-file checkpoints (model/checkpoint.h).
 *
 * The tiny pipelines converted by diffusers' own conversion scripts
 * (tests/data/single, tools/gen_single_file.py) load with --config <their
 * folder> and give the folder's images bit for bit, and what diffusers'
 * from_single_file gives on the same files; the name translation matches
 * the original layout's; broken and foreign files fail with one line that
 * says what they are. Detection on the real key sets of every family is in
 * test_detect.c. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/checkpoint.h"
#include "sd.h"
#include "test.h"
#include "testutil.h"

void run_model_ex(const char *dir, const char *variant, const char *config, const char *lora_dir,
                  const char *refpath);

static const char *const tiny[][2] = {
    {"tiny-sd1", NULL}, {"tiny-sd2", "fp16"}, {"tiny-sdxl", NULL},
};

TEST(single_file_parity)
{
    for (int i = 0; i < 3; i++) {
        char file[128], folder[128], ref[128];
        snprintf(file, sizeof file, "tests/data/single/%s.safetensors", tiny[i][0]);
        snprintf(folder, sizeof folder, "tests/data/%s", tiny[i][0]);
        snprintf(ref, sizeof ref, "tests/data/ref/single-%s.safetensors", tiny[i][0]);
        run_model_ex(file, NULL, folder, NULL, ref);
    }
}

/* The same pixels from the file as from the folder, bf16 too. */
TEST(single_file_same_as_folder)
{
    for (int i = 0; i < 3; i++) {
        for (int prec = 0; prec < 2; prec++) {
            char file[128], folder[128];
            snprintf(file, sizeof file, "tests/data/single/%s.safetensors", tiny[i][0]);
            snprintf(folder, sizeof folder, "tests/data/%s", tiny[i][0]);
            struct sd_load_opts a = {.dir = folder, .variant = tiny[i][1], .precision = prec};
            struct sd_load_opts b = {.dir = file, .config = folder, .precision = prec};
            struct sd_err err;
            sd_model *ma = NULL, *mb = NULL;
            CHECK_MSG(sd_model_load(&ma, &a, &err) == SD_OK, "%s", err.msg);
            CHECK_MSG(sd_model_load(&mb, &b, &err) == SD_OK, "%s", err.msg);
            if (!ma || !mb) {
                sd_model_free(ma), sd_model_free(mb);
                continue;
            }
            CHECK(!strcmp(sd_model_get_info(mb)->format, "single-file"));
            CHECK(!strcmp(sd_model_get_info(ma)->family, sd_model_get_info(mb)->family));
            struct sd_params p;
            sd_params_default(&p);
            p.prompt = "a lighthouse on a cliff";
            p.negative_prompt = "fog";
            p.steps = 3;
            p.seed_set = 1;
            p.seed = 11;
            struct sd_image x, y;
            CHECK(sd_generate(ma, &p, NULL, &x, &err) == SD_OK);
            CHECK(sd_generate(mb, &p, NULL, &y, &err) == SD_OK);
            CHECK_MSG(x.rgb && y.rgb && !memcmp(x.rgb, y.rgb, (size_t)x.width * x.height * 3),
                      "%s %s: single file and folder differ", tiny[i][0], prec ? "bf16" : "fp32");
            sd_image_free(&x), sd_image_free(&y);
            sd_model_free(ma), sd_model_free(mb);
        }
    }
}

TEST(single_file_detect_tiny)
{
    static const enum ckpt_family want[3] = {CKPT_SD1, CKPT_SD1, CKPT_SDXL}; /* tiny SD2: 32-wide context */
    for (int i = 0; i < 3; i++) {
        char file[128];
        snprintf(file, sizeof file, "tests/data/single/%s.safetensors", tiny[i][0]);
        struct st_file *f;
        struct sd_err err;
        if (st_open(&f, file, &err)) {
            CHECK_MSG(0, "%s", err.msg);
            continue;
        }
        struct ckpt_info in;
        ckpt_detect(f, &in);
        CHECK_MSG(in.family == want[i], "%s: %s", file, ckpt_family_name(in.family));
        CHECK(in.unet_in == 4 && !strcmp(in.unet_prefix, "model.diffusion_model.") &&
              !strcmp(in.vae_prefix, "first_stage_model."));
        CHECK(in.te_kind[0] == (i == 1 ? CKPT_TE_OPENCLIP : CKPT_TE_HF));
        if (i == 2)
            CHECK(in.n_te == 2 && in.te_kind[1] == CKPT_TE_OPENCLIP &&
                  !strcmp(in.te_prefix[1], "conditioner.embedders.1.model."));
        st_close(f);
    }
}

/* Diffusers names -> the original UNet's, for SD 1.x's block layout. */
TEST(single_file_unet_names)
{
    struct unet_config c = {.n_blocks = 4, .layers_per_block = 2, .down_attn = {1, 1, 1, 0},
                            .up_attn = {0, 1, 1, 1}};
    static const char *const pairs[][2] = {
        {"conv_in.weight", "input_blocks.0.0.weight"},
        {"time_embedding.linear_2.bias", "time_embed.2.bias"},
        {"down_blocks.0.resnets.1.conv2.weight", "input_blocks.2.0.out_layers.3.weight"},
        {"down_blocks.1.attentions.0.proj_in.weight", "input_blocks.4.1.proj_in.weight"},
        {"down_blocks.2.downsamplers.0.conv.bias", "input_blocks.9.0.op.bias"},
        {"down_blocks.3.resnets.1.time_emb_proj.weight", "input_blocks.11.0.emb_layers.1.weight"},
        {"mid_block.resnets.1.norm1.weight", "middle_block.2.in_layers.0.weight"},
        {"mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight",
         "middle_block.1.transformer_blocks.0.attn2.to_k.weight"},
        {"up_blocks.0.upsamplers.0.conv.weight", "output_blocks.2.1.conv.weight"},
        {"up_blocks.1.upsamplers.0.conv.weight", "output_blocks.5.2.conv.weight"},
        {"up_blocks.3.resnets.2.conv_shortcut.weight", "output_blocks.11.0.skip_connection.weight"},
        {"up_blocks.3.attentions.2.proj_out.bias", "output_blocks.11.1.proj_out.bias"},
        {"conv_norm_out.weight", "out.0.weight"},
        {"add_embedding.linear_1.weight", "label_emb.0.0.weight"},
    };
    char out[256];
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        int ok = ckpt_unet_ldm_name(&c, pairs[i][0], out, sizeof out);
        CHECK_MSG(ok && !strcmp(out, pairs[i][1]), "%s -> %s (want %s)", pairs[i][0], ok ? out : "-",
                  pairs[i][1]);
    }
    CHECK(!ckpt_unet_ldm_name(&c, "down_blocks.4.resnets.0.conv1.weight", out, sizeof out));
    CHECK(!ckpt_unet_ldm_name(&c, "bogus.weight", out, sizeof out));
}

/* A file whose architecture differs from the config does not half-load. */
TEST(single_file_errors)
{
    struct sd_err err;
    sd_model *m = NULL;
    /* the standard SD 1.5 config against the tiny file: the first shape that differs is named */
    struct sd_load_opts o = {.dir = "tests/data/single/tiny-sd1.safetensors"};
    CHECK(sd_model_load(&m, &o, &err) == SD_ERR_FORMAT);
    CHECK(strstr(err.msg, "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight") &&
          strstr(err.msg, "[49408,768]"));
    /* an SDXL file with an SD config, and the other way round */
    o = (struct sd_load_opts){.dir = "tests/data/single/tiny-sdxl.safetensors", .config = "tests/data/tiny-sd1"};
    CHECK(sd_model_load(&m, &o, &err) == SD_ERR_FORMAT && strstr(err.msg, "config"));
    /* --config for a folder, an unknown bundled name, a bad prediction type */
    o = (struct sd_load_opts){.dir = "tests/data/tiny-sd1", .config = "sd15"};
    CHECK(sd_model_load(&m, &o, &err) == SD_ERR_ARG);
    o = (struct sd_load_opts){.dir = "tests/data/single/tiny-sd1.safetensors", .config = "sd9"};
    CHECK(sd_model_load(&m, &o, &err) == SD_ERR_IO && strstr(err.msg, "sd9"));
    o = (struct sd_load_opts){.dir = "tests/data/tiny-sd1", .prediction_type = "x0"};
    CHECK(sd_model_load(&m, &o, &err) == SD_ERR_ARG);
    /* one tensor more than the architecture has (a deeper transformer,
     * say): refused, naming it, rather than silently ignored */
    struct st_file *f;
    if (st_open(&f, "tests/data/single/tiny-sd1.safetensors", &err) == SD_OK) {
        int n = st_count(f);
        struct st_tensor *ts = calloc(n + 1, sizeof *ts);
        for (int i = 0; i < n; i++)
            ts[i] = *st_at(f, i);
        ts[n] = *st_find(f, "model.diffusion_model.middle_block.1.transformer_blocks.0.norm1.weight");
        ts[n].name = "model.diffusion_model.middle_block.1.transformer_blocks.1.norm1.weight";
        char tmp[] = "/tmp/diffusiond-test-XXXXXX.safetensors";
        int fd = mkstemps(tmp, 12);
        close(fd);
        CHECK(st_write(tmp, ts, n + 1, NULL, &err) == SD_OK);
        o = (struct sd_load_opts){.dir = tmp, .config = "tests/data/tiny-sd1"};
        CHECK(sd_model_load(&m, &o, &err) == SD_ERR_FORMAT);
        CHECK_MSG(strstr(err.msg, "1 tensor of the checkpoint fit no layer") &&
                  strstr(err.msg, "middle_block.1.transformer_blocks.1.norm1.weight"), "%s", err.msg);
        unlink(tmp);
        free(ts);
        st_close(f);
    }
    /* a pickle */
    o = (struct sd_load_opts){.dir = "tests/data/tiny-sd1/model_index.json"};
    CHECK(sd_model_load(&m, &o, &err) != SD_OK);
    CHECK(m == NULL);
}

/* Write the tensors of f under `prefix` to a new file, the prefix replaced
 * by `as`; returns the path (static) or NULL. */
static const char *extract(struct st_file *f, const char *prefix, const char *as)
{
    static char tmp[64];
    snprintf(tmp, sizeof tmp, "/tmp/diffusiond-vae-XXXXXX.safetensors");
    int fd = mkstemps(tmp, 12);
    if (fd < 0)
        return NULL;
    close(fd);
    int n = st_count(f), k = 0;
    struct st_tensor *ts = calloc(n, sizeof *ts);
    char (*names)[256] = calloc(n, 256);
    for (int i = 0; i < n; i++) {
        const struct st_tensor *t = st_at(f, i);
        if (strncmp(t->name, prefix, strlen(prefix)))
            continue;
        ts[k] = *t;
        snprintf(names[k], 256, "%s%s", as, t->name + strlen(prefix));
        ts[k].name = names[k];
        k++;
    }
    struct sd_err err;
    int rc = st_write(tmp, ts, k, NULL, &err);
    free(ts), free(names);
    return rc ? NULL : tmp;
}

/* --vae: a diffusers vae folder, or a file in the original layout with or
 * without its "first_stage_model." prefix (vae-ft-mse style). */
TEST(single_file_vae_override)
{
    struct sd_err err;
    struct st_file *f;
    if (st_open(&f, "tests/data/single/tiny-sd1.safetensors", &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    struct sd_params p;
    sd_params_default(&p);
    p.prompt = "a harbour at dawn";
    p.steps = 2;
    p.seed_set = 1;
    p.seed = 3;
    struct sd_image ref = {0}, img;
    sd_model *m;
    struct sd_load_opts o = {.dir = "tests/data/tiny-sd1"};
    CHECK(sd_model_load(&m, &o, &err) == SD_OK && sd_generate(m, &p, NULL, &ref, &err) == SD_OK);
    sd_model_free(m);
    const char *as[] = {"", "first_stage_model."};
    for (int i = 0; i < 2; i++) {
        const char *vae = extract(f, "first_stage_model.", as[i]);
        CHECK(vae != NULL);
        o = (struct sd_load_opts){.dir = "tests/data/tiny-sd1", .vae = vae};
        int rc = sd_model_load(&m, &o, &err);
        CHECK_MSG(rc == SD_OK, "%s", err.msg);
        if (!rc) {
            CHECK(sd_generate(m, &p, NULL, &img, &err) == SD_OK);
            CHECK(ref.rgb && img.rgb && !memcmp(ref.rgb, img.rgb, (size_t)img.width * img.height * 3));
            sd_image_free(&img);
            sd_model_free(m);
        }
        if (vae)
            unlink(vae);
    }
    /* another VAE (its own folder and config) changes the picture */
    o = (struct sd_load_opts){.dir = "tests/data/tiny-sd1", .vae = "tests/data/tiny-sdxl/vae"};
    CHECK_MSG(sd_model_load(&m, &o, &err) == SD_OK, "%s", err.msg);
    if (m) {
        CHECK(sd_generate(m, &p, NULL, &img, &err) == SD_OK);
        CHECK(ref.rgb && img.rgb && memcmp(ref.rgb, img.rgb, (size_t)img.width * img.height * 3));
        sd_image_free(&img);
        sd_model_free(m);
    }
    /* a file with no VAE in it */
    o = (struct sd_load_opts){.dir = "tests/data/tiny-sd1", .vae = "tests/data/ref/tiny-sd1.safetensors"};
    CHECK(sd_model_load(&m, &o, &err) == SD_ERR_FORMAT && strstr(err.msg, "no VAE"));
    sd_image_free(&ref);
    st_close(f);
}

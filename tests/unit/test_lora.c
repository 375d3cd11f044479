/* test_lora.c - LoRA merging (model/lora.h) against diffusers'
 * load_lora_weights + fuse_lora on the tiny pipelines (tests/data/lora,
 * tests/data/ref/lora-*.safetensors, tools/gen_lora.py): PEFT and kohya
 * spellings (SDXL's in the original UNet names), LoCon convolutions,
 * weights 0 / 0.5 / 1, two at once, a <lora:NAME:W> prompt tag; then what
 * the merge promises besides the pixels: the original weights come back
 * exactly, a file that does not fit is refused whole, names stay in the
 * LoRA folder. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sd.h"
#include "test.h"
#include "testutil.h"

void run_model_ex(const char *dir, const char *variant, const char *config, const char *lora_dir,
                  const char *refpath);

#define LORAS "tests/data/lora"

TEST(lora_parity_sd1)
{
    run_model_ex("tests/data/tiny-sd1", NULL, NULL, LORAS, "tests/data/ref/lora-tiny-sd1.safetensors");
}

TEST(lora_parity_sdxl)
{
    run_model_ex("tests/data/tiny-sdxl", NULL, NULL, LORAS, "tests/data/ref/lora-tiny-sdxl.safetensors");
}

static int gen(sd_model *m, const struct sd_lora *l, int n, const char *prompt, struct sd_image *img,
               struct sd_err *err)
{
    struct sd_params p;
    sd_params_default(&p);
    p.prompt = prompt;
    p.steps = 2;
    p.seed_set = 1;
    p.seed = 9;
    p.loras = l;
    p.n_loras = n;
    return sd_generate(m, &p, NULL, img, err);
}

static int same(const struct sd_image *a, const struct sd_image *b)
{
    return a->rgb && b->rgb && a->width == b->width && !memcmp(a->rgb, b->rgb, (size_t)a->width * a->height * 3);
}

/* Merged, changed, removed: back to the very same pixels (the originals
 * are re-read, never subtracted), in fp32 and bf16, text encoder too. */
TEST(lora_restores_exactly)
{
    for (int prec = 0; prec < 2; prec++) {
        struct sd_err err;
        sd_model *m;
        struct sd_load_opts o = {.dir = "tests/data/tiny-sd1", .lora_dir = LORAS, .precision = prec};
        if (sd_model_load(&m, &o, &err)) {
            CHECK_MSG(0, "%s", err.msg);
            return;
        }
        const struct sd_lora style = {"tiny-sd1-style", 1.0f}, detail = {"tiny-sd1-detail.safetensors", 0.6f};
        struct sd_image a, b, c, d, e;
        CHECK(gen(m, NULL, 0, "a red boat", &a, &err) == SD_OK);
        CHECK(gen(m, &style, 1, "a red boat", &b, &err) == SD_OK);
        CHECK(gen(m, &detail, 1, "a red boat", &c, &err) == SD_OK);
        CHECK(gen(m, NULL, 0, "a red boat", &d, &err) == SD_OK);
        CHECK(gen(m, NULL, 0, "<lora:tiny-sd1-style:1>a red boat", &e, &err) == SD_OK);
        CHECK(!same(&a, &b) && !same(&b, &c) && !same(&a, &c));
        CHECK_MSG(same(&a, &d), "%s: weights not restored", prec ? "bf16" : "fp32");
        CHECK(same(&b, &e)); /* the tag is the field */
        sd_image_free(&a), sd_image_free(&b), sd_image_free(&c), sd_image_free(&d), sd_image_free(&e);
        sd_model_free(m);
    }
}

TEST(lora_errors)
{
    struct sd_err err;
    sd_model *m;
    struct sd_load_opts o = {.dir = "tests/data/tiny-sd1", .lora_dir = LORAS};
    if (sd_model_load(&m, &o, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    struct sd_image img, ref;
    CHECK(gen(m, NULL, 0, "a red boat", &ref, &err) == SD_OK);
    /* an SDXL LoRA on an SD 1.x model: refused whole, every unmatched key counted */
    struct sd_lora l = {"tiny-sdxl-style-kohya", 1.0f};
    CHECK(gen(m, &l, 1, "a red boat", &img, &err) == SD_ERR_FORMAT);
    CHECK_MSG(strstr(err.msg, "match no layer of this SD 1.x model") || strstr(err.msg, "another model"), "%s",
              err.msg);
    /* paths, missing files, bad weights, too many, a malformed tag */
    static const char *const bad[] = {"../tiny-sd1-style", "/etc/passwd", ".hidden", "nope"};
    for (int i = 0; i < 4; i++) {
        l = (struct sd_lora){bad[i], 1.0f};
        CHECK_MSG(gen(m, &l, 1, "x", &img, &err) == SD_ERR_ARG, "%s accepted", bad[i]);
    }
    l = (struct sd_lora){"tiny-sd1-style", 50.0f};
    CHECK(gen(m, &l, 1, "x", &img, &err) == SD_ERR_ARG && strstr(err.msg, "weight"));
    CHECK(gen(m, NULL, 0, "<lora:tiny-sd1-style:abc> x", &img, &err) == SD_ERR_ARG);
    CHECK(gen(m, NULL, 0, "<lora:tiny-sd1-style x", &img, &err) == SD_ERR_ARG);
    struct sd_lora many[SD_MAX_LORAS + 1];
    for (int i = 0; i <= SD_MAX_LORAS; i++)
        many[i] = (struct sd_lora){"tiny-sd1-style", 0.1f};
    CHECK(gen(m, many, SD_MAX_LORAS + 1, "x", &img, &err) == SD_ERR_ARG);
    /* none of that changed the model */
    CHECK(gen(m, NULL, 0, "a red boat", &img, &err) == SD_OK && same(&img, &ref));
    sd_image_free(&img), sd_image_free(&ref);
    sd_model_free(m);
    /* no LoRA folder configured */
    o.lora_dir = NULL;
    if (sd_model_load(&m, &o, &err) == SD_OK) {
        l = (struct sd_lora){"tiny-sd1-style", 1.0f};
        CHECK(gen(m, &l, 1, "x", &img, &err) == SD_ERR_ARG && strstr(err.msg, "--lora-dir"));
        sd_model_free(m);
    }
}

TEST(lora_prompt_tags)
{
    char clean[128], names[SD_MAX_LORAS][SD_LORA_NAME_MAX];
    struct sd_lora l[SD_MAX_LORAS];
    struct sd_err err;
    int n = 0;
    CHECK(sd_prompt_loras("a <lora:foo:0.8>cat, <lora:bar> x <lora:baz:0.5:0.2>", clean, sizeof clean, l, names,
                          SD_MAX_LORAS, &n, &err) == SD_OK);
    CHECK(n == 3 && !strcmp(clean, "a cat,  x "));
    CHECK(!strcmp(l[0].name, "foo") && l[0].weight == 0.8f && !strcmp(l[1].name, "bar") && l[1].weight == 1.0f);
    CHECK(!strcmp(l[2].name, "baz") && l[2].weight == 0.5f);
    n = 0;
    CHECK(sd_prompt_loras("no tags <here>", clean, sizeof clean, l, names, SD_MAX_LORAS, &n, &err) == SD_OK &&
          n == 0 && !strcmp(clean, "no tags <here>"));
    n = 0;
    CHECK(sd_prompt_loras("<lora::1>", clean, sizeof clean, l, names, SD_MAX_LORAS, &n, &err) == SD_ERR_ARG);
    n = SD_MAX_LORAS;
    CHECK(sd_prompt_loras("<lora:a>", clean, sizeof clean, l, names, SD_MAX_LORAS, &n, &err) == SD_ERR_ARG);
}

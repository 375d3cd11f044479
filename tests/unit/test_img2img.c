/* test_img2img.c - image-to-image, inpainting and batches against
 * diffusers' StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline
 * (a 9-channel UNet, and an ordinary one with its latent blend),
 * StableDiffusionXLImg2ImgPipeline and num_images_per_prompt / generator
 * lists (tests/data/ref/img2img.safetensors, tools/gen_img2img.py); the
 * PIL-exact resizer; what the blend promises (the unmasked area stays the
 * init image's). */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/imgproc.h"
#include "sd.h"
#include "test.h"
#include "testutil.h"

#define REF "tests/data/ref/img2img.safetensors"

void run_case(sd_model *m, struct st_file *rf, json_t *c, struct totals *tot);

TEST(img2img_parity)
{
    struct st_file *rf = ref_open(REF);
    if (!rf) {
        CHECK(0);
        return;
    }
    json_t *cases = json_loads(st_metadata(rf, "cases"), 0, NULL);
    CHECK(json_array_size(cases) >= 15);
    struct { char name[64]; sd_model *m; } models[6];
    int nm = 0;
    struct totals tot = {0, 1, 0, 0};
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c)
    {
        const char *name = json_string_value(json_object_get(c, "model"));
        sd_model *m = NULL;
        for (int k = 0; k < nm; k++)
            if (!strcmp(models[k].name, name))
                m = models[k].m;
        if (!m && nm < 6) {
            char dir[128];
            snprintf(dir, sizeof dir, "tests/data/%s", name);
            struct sd_load_opts lo = {.dir = dir, .variant = !strcmp(name, "tiny-sd2") ? "fp16" : NULL};
            struct sd_err err;
            if (sd_model_load(&m, &lo, &err)) {
                CHECK_MSG(0, "%s: %s", dir, err.msg);
                continue;
            }
            snprintf(models[nm].name, sizeof models[nm].name, "%s", name);
            models[nm++].m = m;
        }
        run_case(m, rf, c, &tot);
    }
    printf("    %d cases, worst latents rel %.2e, worst identical %.4f%%, worst level %d\n", tot.cases,
           tot.worst_latent, 100 * tot.worst_identical, tot.worst_level);
    for (int k = 0; k < nm; k++)
        sd_model_free(models[k].m);
    json_decref(cases);
    st_close(rf);
}

/* Every byte of PIL's Lanczos resize, RGB and L, up and down. */
TEST(img2img_resize_like_pil)
{
    struct st_file *rf = ref_open(REF);
    if (!rf) {
        CHECK(0);
        return;
    }
    const struct st_tensor *src = st_find(rf, "input.img150x110"), *msrc = st_find(rf, "input.mask60x44");
    for (int i = 0; i < st_count(rf); i++) {
        const struct st_tensor *t = st_at(rf, i);
        if (strncmp(t->name, "resize.", 7))
            continue;
        int rgb = !strncmp(t->name, "resize.rgb.", 11), h = (int)t->shape[0], w = (int)t->shape[1];
        const struct st_tensor *s = rgb ? src : msrc;
        uint8_t *out = malloc(t->nbytes);
        CHECK(img_resize_lanczos(s->data, (int)s->shape[1], (int)s->shape[0], rgb ? 3 : 1, out, w, h) == 0);
        size_t diff = 0;
        for (size_t k = 0; k < t->nbytes; k++)
            diff += out[k] != t->data[k];
        CHECK_MSG(diff == 0, "%s: %zu bytes differ from PIL", t->name, diff);
        free(out);
    }
    const struct st_tensor *img = st_find(rf, "input.img128"), *gray = st_find(rf, "gray.mask128rgb");
    uint8_t g[128 * 128];
    img_rgb_to_gray(img->data, 128 * 128, g);
    CHECK(!memcmp(g, gray->data, sizeof g));
    st_close(rf);
}

/* The latent blend keeps the unmasked area: there the image is the init
 * image through the VAE round trip (close to it, not equal: the VAE is
 * random). Compare the unmasked area with the mask covering almost all
 * against almost nothing. */
TEST(img2img_blend_keeps_unmasked)
{
    struct st_file *rf = ref_open(REF);
    sd_model *m;
    struct sd_err err;
    struct sd_load_opts lo = {.dir = "tests/data/tiny-sd1-i2i"};
    if (!rf || sd_model_load(&m, &lo, &err)) {
        CHECK(0);
        st_close(rf);
        return;
    }
    const struct st_tensor *img = st_find(rf, "input.img128");
    uint8_t mask[128 * 128];
    for (int y = 0; y < 128; y++)
        for (int x = 0; x < 128; x++)
            mask[y * 128 + x] = x < 64 ? 0 : 255; /* repaint the right half */
    struct sd_params p;
    sd_params_default(&p);
    p.prompt = "a red boat";
    p.steps = 4;
    p.seed_set = 1;
    p.init_image = img->data, p.init_width = p.init_height = 128;
    p.mask = mask, p.mask_width = p.mask_height = 128, p.mask_channels = 1;
    struct sd_image a, b;
    CHECK(sd_generate(m, &p, NULL, &a, &err) == SD_OK);
    p.seed = 99; /* another seed: the repainted half changes, the kept half does not */
    CHECK(sd_generate(m, &p, NULL, &b, &err) == SD_OK);
    double kept = 0, repainted = 0;
    for (int y = 0; y < 128; y++)
        for (int x = 0; x < 128; x++)
            for (int c = 0; c < 3; c++) {
                int d = abs((int)a.rgb[(y * 128 + x) * 3 + c] - (int)b.rgb[(y * 128 + x) * 3 + c]);
                if (x < 56) /* away from the seam (the VAE's receptive field) */
                    kept += d;
                else if (x >= 72)
                    repainted += d;
            }
    printf("    mean |seed 0 - seed 99|: kept half %.3f levels, repainted half %.3f\n", kept / (56 * 128 * 3),
           repainted / (56 * 128 * 3));
    CHECK(kept / (56 * 128 * 3) < 0.1 * repainted / (56 * 128 * 3));
    sd_image_free(&a), sd_image_free(&b);
    sd_model_free(m);
    st_close(rf);
}

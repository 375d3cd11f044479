/* test_sdxl.c - SDXL's networks against diffusers on the tiny SDXL pipeline
 * (tests/data/ref/tiny-sdxl.safetensors, tools/gen_tiny_sdxl.py): both text
 * encoders as StableDiffusionXLPipeline reads them (hidden_states[-2], the
 * second's pooled projection), and the UNet with its added conditioning
 * (pooled text embeddings and micro-conditioning time ids), on the fast and
 * the reference backend. Whole pipeline runs are in test_pipeline.c. */
#include <stdlib.h>
#include <string.h>

#include "model/clip.h"
#include "model/unet.h"
#include "test.h"
#include "testutil.h"

#define DIR "tests/data/tiny-sdxl"
#define REF "tests/data/ref/tiny-sdxl.safetensors"

static void compare(const char *what, const float *ours, const float *ref, size_t n)
{
    double d = max_abs_diff(ours, ref, n), m = max_abs(ref, n);
    double tol = 1e-4 * (m > 1 ? m : 1);
    printf("    %-44s max|diff| %.3g (max|ref| %.3g)\n", what, d, m);
    CHECK_MSG(d <= tol, "%s: %g > %g", what, d, tol);
}

static void ids_of(struct st_file *rf, const char *name, int32_t *ids)
{
    float *f = ref_f32(rf, name, NULL);
    CHECK(f != NULL);
    for (int i = 0; i < 77; i++)
        ids[i] = f ? (int32_t)f[i] : 0;
    free(f);
}

TEST(sdxl_text_encoders)
{
    struct st_file *rf = ref_open(REF);
    struct sd_err err;
    struct clip c1, c2;
    struct weights_src src;
    CHECK_MSG(clip_load(&c1, DIR, NULL, &nn_backend_cpu, &err) == SD_OK, "%s", err.msg);
    weights_src_folder(&src, DIR, "text_encoder_2", "model", NULL);
    CHECK_MSG(clip_load_src(&c2, &src, &nn_backend_cpu, &err) == SD_OK, "%s", err.msg);
    CHECK(c2.cfg.with_projection && !c1.cfg.with_projection);
    int H1 = c1.cfg.hidden, H2 = c2.cfg.hidden, P = c2.cfg.projection_dim;
    float *h = malloc(77 * (size_t)(H1 > H2 ? H1 : H2) * sizeof(float)), pooled[64];
    for (int k = 0; rf && k < 5; k++) {
        char name[64], what[64];
        int32_t ids[77];
        snprintf(name, sizeof name, "text.ids.%d", k);
        ids_of(rf, name, ids);
        snprintf(name, sizeof name, "text.hidden.%d", k);
        float *ref = ref_f32(rf, name, NULL);
        CHECK(clip_encode_hidden(&c1, ids, 77, 0, h, NULL, &err) == SD_OK);
        snprintf(what, sizeof what, "text_encoder hidden[-2] %d", k);
        if (ref)
            compare(what, h, ref, 77 * (size_t)H1);
        free(ref);
        snprintf(name, sizeof name, "text2.ids.%d", k);
        ids_of(rf, name, ids);
        snprintf(name, sizeof name, "text2.hidden.%d", k);
        ref = ref_f32(rf, name, NULL);
        snprintf(name, sizeof name, "text2.pooled.%d", k);
        float *refp = ref_f32(rf, name, NULL);
        CHECK(clip_encode_hidden(&c2, ids, 77, 0, h, pooled, &err) == SD_OK);
        snprintf(what, sizeof what, "text_encoder_2 hidden[-2] %d", k);
        if (ref)
            compare(what, h, ref, 77 * (size_t)H2);
        snprintf(what, sizeof what, "text_encoder_2 pooled %d", k);
        if (refp)
            compare(what, pooled, refp, (size_t)P);
        free(ref), free(refp);
    }
    /* the skip is bounded by the layers before the penultimate one */
    int32_t ids[77] = {0};
    CHECK(clip_encode_hidden(&c1, ids, 77, c1.cfg.layers - 1, h, NULL, &err) == SD_ERR_ARG);
    free(h);
    clip_free(&c1);
    clip_free(&c2);
    st_close(rf);
}

static void run_unet(const char *set, const struct nn_backend *be)
{
    struct st_file *rf = ref_open(REF);
    struct sd_err err;
    struct unet u;
    int rc = unet_load(&u, DIR, NULL, be, 0, &err);
    CHECK_MSG(rc == SD_OK, "%s", err.msg);
    char name[64];
    snprintf(name, sizeof name, "%s.sample", set);
    const struct st_tensor *ts = rf ? st_find(rf, name) : NULL;
    if (rc || !ts) {
        CHECK(0);
        unet_free(&u);
        st_close(rf);
        return;
    }
    int B = ts->shape[0], h = ts->shape[2], w = ts->shape[3];
    size_t n, nctx;
    float *sample = ref_f32(rf, name, &n);
#define GET(field, cnt) (snprintf(name, sizeof name, "%s." field, set), ref_f32(rf, name, cnt))
    float *t = GET("timestep", NULL), *ctx = GET("context", &nctx), *te = GET("text_embeds", NULL),
          *ti = GET("time_ids", NULL), *ref = GET("out", NULL);
#undef GET
    float *out = calloc(n, sizeof(float));
    int T = (int)(nctx / B / u.cfg.cross_attention_dim);
    struct unet_cond cond = {.text_embeds = te, .time_ids = ti};
    rc = unet_forward(&u, sample, t[0], ctx, T, &cond, out, B, h, w, &err);
    CHECK_MSG(rc == SD_OK, "%s", err.msg);
    snprintf(name, sizeof name, "sdxl %s %dx%d (%s)", set, h, w, be->name);
    compare(name, out, ref, n);
    /* the added conditioning is required, and it matters */
    CHECK(unet_forward(&u, sample, t[0], ctx, T, NULL, out, B, h, w, &err) == SD_ERR_ARG);
    ti[0] += 64;
    float *out2 = calloc(n, sizeof(float));
    CHECK(unet_forward(&u, sample, t[0], ctx, T, &cond, out2, B, h, w, &err) == SD_OK);
    CHECK(max_abs_diff(out, out2, n / 2) > 1e-3);
    free(sample), free(t), free(ctx), free(te), free(ti), free(ref), free(out), free(out2);
    unet_free(&u);
    st_close(rf);
}

TEST(sdxl_unet)
{
    run_unet("unet", &nn_backend_cpu);
    run_unet("unet2", &nn_backend_cpu);
    run_unet("unet", &nn_backend_ref);
}

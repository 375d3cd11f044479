/* test_nets.c - each network against diffusers' outputs for the tiny
 * pipelines (tests/data/ref/<model>.safetensors), on both backends.
 *
 * Tolerance: max |ours - diffusers| <= 1e-4 * max(1, max|diffusers|). The
 * worst difference of each comparison is printed. */
#include <stdlib.h>
#include <string.h>

#include "model/clip.h"
#include "model/unet.h"
#include "model/vae.h"
#include "test.h"
#include "testutil.h"

#define TOL 1e-4

static void compare(const char *what, const float *ours, const float *ref, size_t n)
{
    double d = max_abs_diff(ours, ref, n), m = max_abs(ref, n);
    double tol = TOL * (m > 1 ? m : 1);
    printf("    %-40s max|diff| %.3g (max|ref| %.3g)\n", what, d, m);
    CHECK_MSG(d <= tol, "%s: %g > %g", what, d, tol);
}

struct model_case {
    const char *dir, *variant, *ref;
};
static const struct model_case models[] = {
    {"tests/data/tiny-sd1", NULL, "tests/data/ref/tiny-sd1.safetensors"},
    {"tests/data/tiny-sd2", "fp16", "tests/data/ref/tiny-sd2.safetensors"},
};

static void run_clip(const struct model_case *mc, const struct nn_backend *be)
{
    struct sd_err err;
    struct clip c;
    struct st_file *rf = ref_open(mc->ref);
    if (!rf) {
        CHECK(0);
        return;
    }
    int rc = clip_load(&c, mc->dir, mc->variant, be, &err);
    CHECK_MSG(rc == SD_OK, "%s", err.msg);
    if (rc) {
        clip_free(&c);
        st_close(rf);
        return;
    }
    int H = c.cfg.hidden;
    float *out = malloc(77 * H * sizeof(float));
    for (int k = 0; k < 5; k++) {
        char name[64];
        snprintf(name, sizeof name, "text.ids.%d", k);
        float *fids = ref_f32(rf, name, NULL);
        snprintf(name, sizeof name, "text.hidden.%d", k);
        float *hid = ref_f32(rf, name, NULL);
        if (!fids || !hid) {
            CHECK(0);
            break;
        }
        int32_t ids[77];
        for (int i = 0; i < 77; i++)
            ids[i] = (int32_t)fids[i];
        CHECK(clip_encode(&c, ids, 77, 0, out, &err) == SD_OK);
        snprintf(name, sizeof name, "%s text %d (%s)", mc->dir + 11, k, be->name);
        compare(name, out, hid, 77 * (size_t)H);
        if (k == 0) {
            float *cs = ref_f32(rf, "text.clipskip1.0", NULL);
            CHECK(clip_encode(&c, ids, 77, 1, out, &err) == SD_OK);
            compare("  clip_skip 1", out, cs, 77 * (size_t)H);
            free(cs);
        }
        free(fids);
        free(hid);
    }
    free(out);
    clip_free(&c);
    st_close(rf);
}

TEST(nets_clip)
{
    for (size_t i = 0; i < 2; i++)
        run_clip(&models[i], &nn_backend_cpu);
    run_clip(&models[0], &nn_backend_ref);
}

static void run_unet(const struct model_case *mc, const char *set, const struct nn_backend *be)
{
    struct sd_err err;
    struct unet u;
    struct st_file *rf = ref_open(mc->ref);
    if (!rf) {
        CHECK(0);
        return;
    }
    int rc = unet_load(&u, mc->dir, mc->variant, be, 0, &err);
    CHECK_MSG(rc == SD_OK, "%s", err.msg);
    char name[64];
    snprintf(name, sizeof name, "%s.sample", set);
    const struct st_tensor *ts = st_find(rf, name);
    if (rc || !ts) {
        CHECK(0);
        unet_free(&u);
        st_close(rf);
        return;
    }
    int B = ts->shape[0], h = ts->shape[2], w = ts->shape[3];
    size_t n;
    float *sample = ref_f32(rf, name, &n);
    snprintf(name, sizeof name, "%s.timestep", set);
    float *t = ref_f32(rf, name, NULL);
    snprintf(name, sizeof name, "%s.context", set);
    size_t nctx;
    float *ctx = ref_f32(rf, name, &nctx);
    snprintf(name, sizeof name, "%s.out", set);
    float *ref = ref_f32(rf, name, NULL);
    float *out = calloc(n, sizeof(float));
    int T = (int)(nctx / B / u.cfg.cross_attention_dim);
    rc = unet_forward(&u, sample, t[0], ctx, T, NULL, out, B, h, w, &err);
    CHECK_MSG(rc == SD_OK, "%s", err.msg);
    snprintf(name, sizeof name, "%s %s %dx%d t=%g (%s)", mc->dir + 11, set, h, w, t[0], be->name);
    compare(name, out, ref, n);
    /* a second call reuses the prepared arena and gives the same result */
    float *out2 = calloc(n, sizeof(float));
    unet_forward(&u, sample, t[0], ctx, T, NULL, out2, B, h, w, &err);
    CHECK(memcmp(out, out2, n * sizeof(float)) == 0);
    free(sample), free(t), free(ctx), free(ref), free(out), free(out2);
    unet_free(&u);
    st_close(rf);
}

TEST(nets_unet)
{
    for (size_t i = 0; i < 2; i++) {
        run_unet(&models[i], "unet", &nn_backend_cpu);
        run_unet(&models[i], "unet2", &nn_backend_cpu);
    }
    run_unet(&models[0], "unet", &nn_backend_ref);
}

/* The cross-attention keys and values are computed once per context: a
 * forward after the context changed in place (same buffer, other values)
 * must match a fresh UNet's, and going back to the first context must give
 * the first result again. */
TEST(nets_unet_kv_cache)
{
    const struct model_case *mc = &models[0];
    struct sd_err err;
    struct unet u, fresh;
    CHECK_MSG(unet_load(&u, mc->dir, mc->variant, &nn_backend_cpu, 0, &err) == SD_OK, "%s", err.msg);
    CHECK_MSG(unet_load(&fresh, mc->dir, mc->variant, &nn_backend_cpu, 0, &err) == SD_OK, "%s", err.msg);
    int B = 2, h = 8, w = 8, T = 7, C = u.cfg.in_channels, D = u.cfg.cross_attention_dim;
    size_t n = (size_t)B * C * h * w, nctx = (size_t)B * T * D;
    float *x = malloc(n * 4), *ctx = malloc(nctx * 4), *o1 = malloc(n * 4), *o2 = malloc(n * 4),
          *o3 = malloc(n * 4);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    for (size_t i = 0; i < nctx; i++)
        ctx[i] = (float)((i * 40503u) % 997) / 498.5f - 1.0f;
    CHECK(unet_forward(&u, x, 500, ctx, T, NULL, o1, B, h, w, &err) == SD_OK);
    CHECK(unet_forward(&u, x, 400, ctx, T, NULL, o2, B, h, w, &err) == SD_OK); /* cached K, V */
    CHECK(unet_forward(&fresh, x, 400, ctx, T, NULL, o3, B, h, w, &err) == SD_OK);
    CHECK(memcmp(o2, o3, n * 4) == 0);
    ctx[nctx - 1] += 0.5f; /* one value of the second prompt */
    unet_free(&fresh);
    CHECK_MSG(unet_load(&fresh, mc->dir, mc->variant, &nn_backend_cpu, 0, &err) == SD_OK, "%s", err.msg);
    CHECK(unet_forward(&u, x, 500, ctx, T, NULL, o2, B, h, w, &err) == SD_OK);
    CHECK(unet_forward(&fresh, x, 500, ctx, T, NULL, o3, B, h, w, &err) == SD_OK);
    CHECK(memcmp(o2, o3, n * 4) == 0);
    CHECK(memcmp(o1, o2, n * 4) != 0);
    ctx[nctx - 1] -= 0.5f;
    CHECK(unet_forward(&u, x, 500, ctx, T, NULL, o2, B, h, w, &err) == SD_OK);
    CHECK(memcmp(o1, o2, n * 4) == 0);
    free(x), free(ctx), free(o1), free(o2), free(o3);
    unet_free(&u);
    unet_free(&fresh);
}

static void run_vae(const struct model_case *mc, const char *set, const struct nn_backend *be)
{
    struct sd_err err;
    struct vae v;
    struct st_file *rf = ref_open(mc->ref);
    if (!rf) {
        CHECK(0);
        return;
    }
    int rc = vae_load(&v, mc->dir, mc->variant, be, 0, &err);
    CHECK_MSG(rc == SD_OK, "%s", err.msg);
    char name[96];
    snprintf(name, sizeof name, "%s.decoded", set);
    const struct st_tensor *td = st_find(rf, name);
    if (rc || !td) {
        CHECK(0);
        vae_free(&v);
        st_close(rf);
        return;
    }
    int H = td->shape[2], W = td->shape[3], f = v.scale_factor, C = td->shape[1];
    size_t n;
    float *dec = ref_f32(rf, name, &n);
    snprintf(name, sizeof name, "%s.latents", set);
    float *lat = ref_f32(rf, name, NULL);
    float *img = malloc(n * sizeof(float)), *ref = malloc(n * sizeof(float));
    if (lat) {
        rc = vae_decode(&v, lat, H / f, W / f, img, &err);
        CHECK_MSG(rc == SD_OK, "%s", err.msg);
        to_nhwc(ref, dec, C, H * W);
        snprintf(name, sizeof name, "%s %s decode %dx%d (%s)", mc->dir + 11, set, W, H, be->name);
        compare(name, img, ref, n);
    }
    /* encoder */
    snprintf(name, sizeof name, "%s.enc.image", set);
    float *eimg = ref_f32(rf, name, NULL);
    snprintf(name, sizeof name, "%s.enc.mean", set);
    size_t nl;
    float *mean = ref_f32(rf, name, &nl);
    snprintf(name, sizeof name, "%s.enc.logvar", set);
    float *logvar = ref_f32(rf, name, NULL);
    if (eimg && mean && logvar) {
        to_nhwc(img, eimg, 3, H * W);
        float *m = malloc(nl * sizeof(float)), *lv = malloc(nl * sizeof(float));
        CHECK(v.has_encoder && !v.enc_loaded); /* prepared on first use only */
        rc = vae_encode(&v, img, H, W, m, lv, &err);
        CHECK_MSG(rc == SD_OK, "%s", err.msg);
        CHECK(v.enc_loaded);
        snprintf(name, sizeof name, "%s %s encode mean (%s)", mc->dir + 11, set, be->name);
        compare(name, m, mean, nl);
        compare("  logvar", lv, logvar, nl);
        free(m), free(lv);
    }
    free(dec), free(lat), free(img), free(ref), free(eimg), free(mean), free(logvar);
    vae_free(&v);
    st_close(rf);
}

TEST(nets_vae)
{
    for (size_t i = 0; i < 2; i++) {
        run_vae(&models[i], "vae", &nn_backend_cpu);
        run_vae(&models[i], "vae2", &nn_backend_cpu);
    }
    run_vae(&models[0], "vae", &nn_backend_ref);
}

/* The size hint reaches every convolution as the pixels it will see
 * (nn_conv2d.px): the default is the config's sample size; each UNet level
 * quarters it, each VAE decoder level quadruples it. */
TEST(nets_size_hint)
{
    struct sd_err err;
    struct unet u;
    const char *dir = models[0].dir;
    CHECK_MSG(unet_load(&u, dir, NULL, &nn_backend_ref, 0, &err) == SD_OK, "%s", err.msg);
    long S = u.cfg.sample_size;
    CHECK(u.conv_in.px == S * S && u.conv_out.px == S * S);
    CHECK(u.down[1].res[0].conv1.px == (S / 2) * (S / 2));
    unet_free(&u);
    CHECK_MSG(unet_load(&u, dir, NULL, &nn_backend_ref, 24 * 40, &err) == SD_OK, "%s", err.msg);
    CHECK(u.conv_in.px == 24 * 40 && u.down[1].res[0].conv1.px == 12 * 20);
    CHECK(u.up[0].res[0].conv1.px == (24 * 40) >> (2 * (u.cfg.n_blocks - 1)));
    unet_free(&u);
    struct vae v;
    CHECK_MSG(vae_load(&v, dir, NULL, &nn_backend_ref, 64 * 48, &err) == SD_OK, "%s", err.msg);
    int nb = v.cfg.n_blocks, f = v.scale_factor;
    CHECK(v.dec.conv_in.px == 64 * 48 / (f * f));
    CHECK(v.dec.level[nb - 1].res[0].conv1.px == 64 * 48 && v.dec.conv_out.px == 64 * 48);
    vae_free(&v);
}

/* transformers 5 saves CLIPTextModel weights without the "text_model."
 * prefix that every released SD checkpoint has; both must load. */
TEST(nets_clip_unprefixed_names)
{
    struct sd_err err;
    char dir[] = "/tmp/sdtest-clipXXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0);
        return;
    }
    char sub[128], path[192], cmd[512];
    snprintf(sub, sizeof sub, "%s/text_encoder", dir);
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp tests/data/tiny-sd1/text_encoder/config.json %s/", sub, sub);
    CHECK(system(cmd) == 0);
    struct st_file *f = ref_open("tests/data/tiny-sd1/text_encoder/model.safetensors");
    if (!f) {
        CHECK(0);
        return;
    }
    int n = st_count(f);
    struct st_tensor *ts = calloc(n, sizeof *ts);
    for (int i = 0; i < n; i++) {
        ts[i] = *st_at(f, i);
        if (!strncmp(ts[i].name, "text_model.", 11))
            ts[i].name += 11;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", sub);
    CHECK(st_write(path, ts, n, NULL, &err) == SD_OK);
    struct clip a, b;
    int ra = clip_load(&a, "tests/data/tiny-sd1", NULL, &nn_backend_cpu, &err);
    int rb = clip_load(&b, dir, NULL, &nn_backend_cpu, &err);
    CHECK_MSG(ra == SD_OK && rb == SD_OK, "%s", err.msg);
    if (!ra && !rb) {
        int32_t ids[77];
        for (int i = 0; i < 77; i++)
            ids[i] = i ? 999 : 998;
        float *oa = malloc(77 * 32 * 4), *ob = malloc(77 * 32 * 4);
        CHECK(clip_encode(&a, ids, 77, 0, oa, &err) == SD_OK);
        CHECK(clip_encode(&b, ids, 77, 0, ob, &err) == SD_OK);
        CHECK(memcmp(oa, ob, 77 * 32 * 4) == 0);
        free(oa), free(ob);
    }
    clip_free(&a);
    clip_free(&b);
    free(ts);
    st_close(f);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

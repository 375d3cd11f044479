/* sdbench.c - measure and cross-check the engine on a real model folder.
 *
 *   sdbench unet  --model DIR --in IN.safetensors --out OUT.safetensors [--variant V]
 *       Runs one UNet forward on IN's tensors "sample" [B,C,h,w], "timestep" [1]
 *       and "context" [B,T,D]; writes "out". Used by tools/fullsize_check.py to
 *       compare with diffusers.
 *   sdbench time  --model DIR [--size 512] [--repeat 3] [--precision fp32|bf16] [--profile]
 *       (bf16: the backend sd_model_load picks, bf16 products or, on a CPU
 *       without them, bf16 weights widened for float32 products)
 *       Times the text encoder, one UNet step (batch 2, guidance on) and the
 *       VAE decode at the given size (best of --repeat after a warm-up);
 *       --profile adds time and GFLOP/s per op kind (last round).
 *   sdbench pair  --model DIR [--size 512] [--images 3] [--steps 20] [--every 1]
 *       bf16 against fp32 per image, with the machine's drift cancelled: the
 *       fp32 and the bf16 model generate the same image (Euler, guidance
 *       7.5, same prompt and seed) as two coroutines that hand over at every
 *       progress callback, so their text encoders, steps and VAE decodes
 *       alternate second by second (--every K: every K-th callback). Each
 *       image's time is the sum of its own segments; prints both, their
 *       ratio, and the median ratio.
 *   sdbench batch --model DIR [--size 512] [--images 2] [--repeat 3] [--precision fp32|bf16]
 *       One UNet forward of batch 2N (N images with guidance, as sd_generate
 *       runs a batch) against N forwards of batch 2, interleaved; medians.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "model/clip.h"
#include "model/safetensors.h"
#include "model/unet.h"
#include "model/vae.h"
#include "sd.h"
#include "tensor/cpu.h"
#include "tensor/onednn.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int die(const struct sd_err *e)
{
    fprintf(stderr, "sdbench: %s\n", e->msg);
    return 1;
}

static float *tensor_f32(struct st_file *f, const char *name, const struct st_tensor **t)
{
    *t = st_find(f, name);
    if (!*t) {
        fprintf(stderr, "sdbench: %s has no tensor '%s'\n", st_path(f), name);
        exit(1);
    }
    float *p = malloc((*t)->numel * sizeof(float));
    struct sd_err err;
    if (st_to_f32(*t, p, &err))
        exit(die(&err));
    return p;
}

static int cmd_unet(const char *model, const char *variant, const char *in, const char *outp)
{
    struct sd_err err;
    struct st_file *f;
    if (st_open(&f, in, &err))
        return die(&err);
    const struct st_tensor *ts, *tt, *tc;
    float *sample = tensor_f32(f, "sample", &ts), *t = tensor_f32(f, "timestep", &tt),
          *ctx = tensor_f32(f, "context", &tc);
    struct unet u;
    if (unet_load(&u, model, variant, &nn_backend_cpu, 0, &err))
        return die(&err);
    int B = ts->shape[0], C = ts->shape[1], h = ts->shape[2], w = ts->shape[3], T = tc->shape[1];
    float *out = malloc(ts->numel * sizeof(float));
    /* SDXL: the added conditioning comes in the input file too */
    struct unet_cond cond = {0};
    const struct st_tensor *tmp;
    if (st_find(f, "text_embeds"))
        cond.text_embeds = tensor_f32(f, "text_embeds", &tmp), cond.time_ids = tensor_f32(f, "time_ids", &tmp);
    double t0 = now_s();
    if (unet_forward(&u, sample, t[0], ctx, T, u.cfg.addition_time_embed_dim ? &cond : NULL, out, B, h, w, &err))
        return die(&err);
    fprintf(stderr, "unet forward %dx%dx%dx%d: %.2f s\n", B, C, h, w, now_s() - t0);
    struct st_tensor o = {.name = "out", .dtype = ST_F32, .ndim = 4,
                          .shape = {B, u.cfg.out_channels, h, w}, .data = (const uint8_t *)out};
    if (st_write(outp, &o, 1, NULL, &err))
        return die(&err);
    unet_free(&u);
    st_close(f);
    free(sample), free(t), free(ctx), free(out);
    return 0;
}

static double peak_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

static void profile_print(const char *what, double total)
{
    if (!nn_prof.enabled)
        return;
    printf("  %s by op:\n", what);
    for (int i = 0; i < NN_OP_COUNT; i++) {
        if (!nn_prof.calls[i])
            continue;
        printf("    %-11s %8.3f s %5.1f%%  %6ld calls", nn_op_names[i], nn_prof.seconds[i],
               100 * nn_prof.seconds[i] / total, nn_prof.calls[i]);
        if (nn_prof.flops[i] > 0)
            printf("  %7.1f GFLOP/s", nn_prof.flops[i] / nn_prof.seconds[i] / 1e9);
        printf("\n");
    }
    memset(nn_prof.seconds, 0, sizeof nn_prof.seconds);
    memset(nn_prof.flops, 0, sizeof nn_prof.flops);
    memset(nn_prof.calls, 0, sizeof nn_prof.calls);
}

static int cmd_time(const char *model, const char *variant, int size, int repeat,
                    const struct nn_backend *be)
{
    struct sd_err err;
    struct clip c, c2 = {0};
    struct unet u;
    struct vae v;
    double t0 = now_s();
    char idx[1200];
    snprintf(idx, sizeof idx, "%s/text_encoder_2/config.json", model);
    int xl = access(idx, F_OK) == 0; /* SDXL: a second text encoder, the VAE in float32 */
    struct weights_src src2;
    weights_src_folder(&src2, model, "text_encoder_2", "model", variant);
    if (clip_load(&c, model, variant, be, &err) || (xl && clip_load_src(&c2, &src2, be, &err)) ||
        vae_load(&v, model, variant, xl ? &nn_backend_cpu : be, (long)size * size, &err) ||
        unet_load(&u, model, variant, be, (long)size * size / ((long)v.scale_factor * v.scale_factor), &err))
        return die(&err);
    printf("load            %8.2f s   (%s, weights %.0f MB)\n", now_s() - t0, be->name,
           (weights_resident(&c.w) + weights_resident(&c2.w) + weights_resident(&u.w) + weights_resident(&v.w)) / 1e6);
    int T = c.cfg.max_positions, D = u.cfg.cross_attention_dim, f = v.scale_factor, h = size / f, w = size / f;
    float *te = calloc(2 * 4096, sizeof(float)), ti[12] = {(float)size, (float)size, 0, 0, (float)size, (float)size,
                                                          (float)size, (float)size, 0, 0, (float)size, (float)size};
    struct unet_cond cond = {.text_embeds = te, .time_ids = ti};
    float *h2 = xl ? calloc((size_t)T * (c2.cfg.hidden > c.cfg.hidden ? c2.cfg.hidden : c.cfg.hidden), sizeof(float))
                   : NULL;
    int32_t ids[77];
    for (int i = 0; i < 77; i++)
        ids[i] = i < T ? (i * 7919) % c.cfg.vocab_size : 0;
    float *ctx = calloc(2 * (size_t)T * D, sizeof(float));
    size_t n = (size_t)u.cfg.in_channels * h * w;
    float *x = calloc(2 * n, sizeof(float)), *y = calloc(2 * n, sizeof(float));
    float *img = calloc((size_t)size * size * 3, sizeof(float));
    for (size_t i = 0; i < 2 * n; i++)
        x[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    double best_t = 1e9, best_u = 1e9, best_v = 1e9, first[3] = {0};
    int profile = nn_prof.enabled;
    for (int r = 0; r < repeat + 1; r++) { /* first round plans and warms up */
        nn_prof.enabled = profile && r == repeat;
        double a = now_s();
        if (xl) { /* prompt and negative, both encoders (the layout of ctx does not matter here) */
            for (int k = 0; k < 2; k++)
                if (clip_encode_hidden(&c, ids, T, 0, h2, NULL, &err) ||
                    clip_encode_hidden(&c2, ids, T, 0, h2, te + k * c2.cfg.projection_dim, &err))
                    return die(&err);
        } else if (clip_encode(&c, ids, T, 0, ctx, &err) || clip_encode(&c, ids, T, 0, ctx + (size_t)T * D, &err))
            return die(&err);
        double b = now_s();
        profile_print("text encoder", b - a);
        if (unet_forward(&u, x, 500.0f, ctx, T, xl ? &cond : NULL, y, 2, h, w, &err))
            return die(&err);
        double d = now_s();
        profile_print("unet", d - b);
        if (vae_decode(&v, x, h, w, img, &err))
            return die(&err);
        double e = now_s();
        profile_print("vae decode", e - d);
        if (!r)
            first[0] = b - a, first[1] = d - b, first[2] = e - d;
        else {
            best_t = b - a < best_t ? b - a : best_t;
            best_u = d - b < best_u ? d - b : best_u;
            best_v = e - d < best_v ? e - d : best_v;
        }
    }
    printf("text encoder x2 %8.3f s\n", best_t);
    printf("unet step (B=2) %8.3f s   at %dx%d\n", best_u, size, size);
    printf("vae decode      %8.3f s\n", best_v);
    printf("first round     %8.3f s   (planning, first touch: text %.3f, unet %.3f, vae %.3f)\n",
           first[0] + first[1] + first[2] - best_t - best_u - best_v, first[0], first[1], first[2]);
    printf("peak rss        %8.0f MB  (weight copies for other layouts: %.0f MB)\n", peak_rss_mb(),
           onednn_extra_weight_bytes / 1e6);
    clip_free(&c);
    clip_free(&c2);
    unet_free(&u);
    vae_free(&v);
    free(ctx), free(x), free(y), free(img), free(te), free(h2);
    return 0;
}

/* ------------------------------------------------------------ pair */

/* The two generations run as coroutines on this one thread (ucontext), so
 * they share its OpenMP thread team: two threads would make two teams,
 * and libgomp throttles its spin-waiting when it manages more threads
 * than there are CPUs, slowing both sides by 10-20%. */
struct side {
    int id; /* 0 fp32, 1 bf16 */
    sd_model *m;
    struct sd_params p;
    double seg0, text, steps, decode, total; /* seconds of this side's own work */
    int calls, rc, finished;
    struct sd_err err;
    ucontext_t ctx;
};

static struct side *pair_sides[2];
static ucontext_t pair_main;
static int pair_every = 1; /* hand over at every pair_every-th callback */

/* At each progress callback: book the time since the last one to this
 * side, and every pair_every-th time run the other side (if it has work
 * left) until it hands back. */
static void side_progress(void *user, const struct sd_progress *p)
{
    struct side *s = user;
    double t = now_s() - s->seg0;
    s->total += t;
    *(p->phase == SD_PHASE_TEXT ? &s->text : p->phase == SD_PHASE_DECODE ? &s->decode : &s->steps) += t;
    struct side *o = pair_sides[1 - s->id];
    if (++s->calls % pair_every == 0 && !o->finished)
        swapcontext(&s->ctx, &o->ctx);
    s->seg0 = now_s();
}

static void side_run(int id)
{
    struct side *s = pair_sides[id];
    struct sd_callbacks cb = {.progress = side_progress, .user = s};
    struct sd_image img;
    s->seg0 = now_s();
    s->rc = sd_generate(s->m, &s->p, &cb, &img, &s->err);
    s->total += now_s() - s->seg0;
    s->finished = 1;
    if (!s->rc)
        sd_image_free(&img);
    struct side *o = pair_sides[1 - id];
    if (!o->finished)
        setcontext(&o->ctx); /* the other side's last steps; it returns to main */
    /* both done: uc_link returns to pair_main */
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One image on both sides, interleaved; prints its line. */
static int pair_image(sd_model *m[2], int i, int size, int steps, double *ratio, double sum[2])
{
    static char stacks[2][8 << 20]; /* sd_generate's stack on each side */
    static struct side s[2];
    char prompt[128]; /* a new prompt per image: the text encoder runs every time */
    snprintf(prompt, sizeof prompt, "a photo of an astronaut riding a horse on mars, %d", i);
    for (int k = 0; k < 2; k++) {
        s[k] = (struct side){.id = k, .m = m[k]};
        sd_params_default(&s[k].p);
        s[k].p.prompt = prompt;
        s[k].p.steps = steps;
        s[k].p.guidance = 7.5f;
        s[k].p.seed_set = 1;
        s[k].p.seed = 1000 + (uint64_t)i;
        s[k].p.width = s[k].p.height = size;
        s[k].p.scheduler = sd_scheduler_from_name("euler");
        pair_sides[k] = &s[k];
        getcontext(&s[k].ctx);
        s[k].ctx.uc_stack.ss_sp = stacks[k];
        s[k].ctx.uc_stack.ss_size = sizeof stacks[k];
        s[k].ctx.uc_link = &pair_main;
        makecontext(&s[k].ctx, (void (*)(void))side_run, 1, k);
    }
    swapcontext(&pair_main, &s[i % 2].ctx); /* alternate which side starts */
    for (int k = 0; k < 2; k++)
        if (s[k].rc) {
            fprintf(stderr, "sdbench: %s\n", s[k].err.msg);
            return 1;
        }
    *ratio = s[0].total / s[1].total;
    sum[0] += s[0].total, sum[1] += s[1].total;
    printf("image %d: fp32 %.2f s (text %.2f, %d steps %.2f, decode %.2f), bf16 %.2f s (text %.2f, "
           "steps %.2f, decode %.2f): %.3fx\n",
           i, s[0].total, s[0].text, steps, s[0].steps, s[0].decode, s[1].total, s[1].text, s[1].steps,
           s[1].decode, *ratio);
    fflush(stdout);
    return 0;
}

static int cmd_pair(const char *model, int size, int images, int steps)
{
    struct sd_err err;
    sd_model *m[2] = {NULL, NULL};
    enum sd_precision prec[2] = {SD_PRECISION_FP32, SD_PRECISION_BF16};
    int rc = 1;
    for (int k = 0; k < 2; k++) {
        struct sd_load_opts lo = {.dir = model, .precision = prec[k], .width = size, .height = size};
        if (sd_model_load(&m[k], &lo, &err)) {
            fprintf(stderr, "sdbench: %s\n", err.msg);
            goto out;
        }
    }
    double ratios[64], sum[2] = {0, 0};
    images = images < 1 ? 1 : images > 64 ? 64 : images;
    for (int i = 0; i < images; i++) {
        if (pair_image(m, i, size, steps, &ratios[i], sum))
            goto out;
    }
    qsort(ratios, (size_t)images, sizeof *ratios, cmp_double);
    printf("bf16 vs fp32 per image, %dx%d, %d steps: median %.3fx over %d images (ratio of sums %.3fx)\n",
           size, size, steps, images % 2 ? ratios[images / 2] : (ratios[images / 2 - 1] + ratios[images / 2]) / 2,
           images, sum[0] / sum[1]);
    rc = 0;
out:
    for (int k = 0; k < 2; k++)
        sd_model_free(m[k]);
    return rc;
}

/* One UNet batch of 2N (N images with guidance) against N batches of 2,
 * interleaved round by round so the machine's drift hits both alike. */
static int cmd_batch(const char *model, const char *variant, int size, int images, int repeat,
                     const struct nn_backend *be)
{
    struct sd_err err;
    struct unet u;
    int f = 8, h = size / f, w = size / f, N = images < 1 ? 1 : images;
    if (unet_load(&u, model, variant, be, (long)h * w, &err))
        return die(&err);
    int T = 77, D = u.cfg.cross_attention_dim;
    size_t n = (size_t)u.cfg.in_channels * h * w;
    float *x = calloc(2 * N * n, sizeof(float)), *y = calloc(2 * N * n, sizeof(float));
    float *ctx = calloc((size_t)2 * N * T * D, sizeof(float));
    float te[2 * 16 * 1280] = {0}, ti[2 * 16 * 6] = {0};
    struct unet_cond cond = {.text_embeds = te, .time_ids = ti};
    const struct unet_cond *cp = u.cfg.addition_time_embed_dim ? &cond : NULL;
    if (!x || !y || !ctx || 2 * N > 32)
        return fprintf(stderr, "sdbench: out of memory or --images over 16\n"), 1;
    for (size_t i = 0; i < 2 * N * n; i++)
        x[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    for (size_t i = 0; i < (size_t)2 * N * T * D; i++)
        ctx[i] = (float)((i * 40503u) % 1000) / 1000.0f - 0.5f;
    double tb[64], ts[64];
    repeat = repeat < 1 ? 1 : repeat > 63 ? 63 : repeat;
    for (int r = 0; r <= repeat; r++) { /* round 0 plans both shapes */
        double a = now_s();
        if (unet_forward(&u, x, 500.0f, ctx, T, cp, y, 2 * N, h, w, &err))
            return die(&err);
        double b = now_s();
        for (int k = 0; k < N; k++)
            if (unet_forward(&u, x + 2 * k * n, 500.0f, ctx + (size_t)2 * k * T * D, T, cp, y + 2 * k * n, 2, h, w,
                             &err))
                return die(&err);
        double c = now_s();
        if (r) {
            tb[r - 1] = b - a, ts[r - 1] = c - b;
            printf("round %d: batch of %d %.3f s, %d x batch of 2 %.3f s\n", r, 2 * N, b - a, N, c - b);
        }
    }
    qsort(tb, (size_t)repeat, sizeof *tb, cmp_double);
    qsort(ts, (size_t)repeat, sizeof *ts, cmp_double);
    double mb = tb[repeat / 2], ms = ts[repeat / 2];
    printf("%dx%d, %d images, %s: one batch of %d %.3f s, %d batches of 2 %.3f s (medians of %d): "
           "batch is %.3fx the speed\n", size, size, N, be->name, 2 * N, mb, N, ms, repeat, ms / mb);
    free(x), free(y), free(ctx);
    unet_free(&u);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: sdbench unet|time|pair|batch --model DIR ...\n");
        return 2;
    }
    const char *cmd = argv[1], *model = NULL, *variant = NULL, *in = NULL, *out = NULL;
    int size = 512, repeat = 3, images = 3, steps = 20, ch;
    const struct nn_backend *be = &nn_backend_cpu;
    static const struct option opts[] = {
        {"model", 1, 0, 'm'}, {"variant", 1, 0, 'V'}, {"in", 1, 0, 'i'}, {"out", 1, 0, 'o'},
        {"size", 1, 0, 's'},  {"repeat", 1, 0, 'r'},  {"profile", 0, 0, 'p'},
        {"precision", 1, 0, 'P'}, {"images", 1, 0, 'n'},  {"steps", 1, 0, 'S'}, {"every", 1, 0, 'e'},
        {0, 0, 0, 0}};
    optind = 2;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'm': model = optarg; break;
        case 'V': variant = optarg; break;
        case 'i': in = optarg; break;
        case 'o': out = optarg; break;
        case 's': size = atoi(optarg); break;
        case 'r': repeat = atoi(optarg); break;
        case 'n': images = atoi(optarg); break;
        case 'S': steps = atoi(optarg); break;
        case 'e': pair_every = atoi(optarg) > 0 ? atoi(optarg) : 1; break;
        case 'p': nn_prof.enabled = 1; break;
        case 'P':
            if (strcmp(optarg, "fp32") && strcmp(optarg, "bf16"))
                return fprintf(stderr, "sdbench: --precision fp32|bf16\n"), 2;
            /* as sd_model_load chooses: bf16 products where native, else
             * bf16 weights widened for float32 products */
            be = strcmp(optarg, "bf16")  ? &nn_backend_cpu
                 : cpu_bf16_native()     ? &nn_backend_cpu_bf16
                                         : &nn_backend_cpu_wide;
            break;
        default: return 2;
        }
    }
    if (!model)
        return fprintf(stderr, "sdbench: --model is required\n"), 2;
    if (!strcmp(cmd, "unet") && in && out)
        return cmd_unet(model, variant, in, out);
    if (!strcmp(cmd, "time"))
        return cmd_time(model, variant, size, repeat, be);
    if (!strcmp(cmd, "pair"))
        return cmd_pair(model, size, images, steps);
    if (!strcmp(cmd, "batch"))
        return cmd_batch(model, variant, size, images, repeat, be);
    fprintf(stderr, "sdbench: bad command or missing --in/--out\n");
    return 2;
}

/* generate.c - `diffusiond generate`: one prompt, one PNG. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "sd.h"
#include "util/paths.h"
#include "util/imgdec.h"
#include "util/png.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: diffusiond generate --prompt TEXT --output FILE.png [--model DIR] [options]\n"
            "\n"
            "  --model DIR|FILE        diffusers model folder, or a single-file checkpoint\n"
            "                          (.safetensors of SD 1.x, SD 2.x, SDXL) (or $DIFFUSIOND_MODEL;\n"
            "                          default: the tiny test model bundled in the repository)\n"
            "  --variant NAME          weights variant, e.g. fp16 (*.fp16.safetensors)\n"
            "  --config DIR|NAME       single files: the configs and tokenizers of a diffusers folder,\n"
            "                          or a bundled one: sd15 sd21 sd21-base sd-turbo sdxl-base\n"
            "                          sdxl-turbo (default: detected from the file)\n"
            "  --prediction-type T     epsilon or v_prediction (default: the config's; SD 2.x\n"
            "                          single files: v_prediction, as diffusers decides)\n"
            "  --vae DIR|FILE          use this VAE instead of the model's (a diffusers vae folder\n"
            "                          or a .safetensors file)\n"
            "  --lora-dir DIR          where LoRA names resolve (or $DIFFUSIOND_LORA_DIR)\n"
            "  --lora NAME[:W]         merge LoRA DIR/NAME[.safetensors] with weight W (1); repeat\n"
            "                          for several; <lora:NAME:W> in the prompt works too\n"
            "  --prompt TEXT           what to draw\n"
            "  --negative-prompt TEXT  what to avoid (default: empty)\n"
            "  --steps N               denoising steps (50)\n"
            "  --guidance G            classifier-free guidance scale (7.5, SDXL 5.0; <= 1\n"
            "                          disables it)\n"
            "  --seed S                random seed (default: random, printed)\n"
            "  --width W --height H    image size, multiples of 8 (model default)\n"
            "  --scheduler NAME        pndm ddim euler euler_a dpmpp_2m dpmpp_2m_karras lcm\n"
            "                          (default: the model's)\n"
            "  --eta E                 DDIM eta, 0..1 (0)\n"
            "  --clip-skip N           use the text encoder's N-th last layer (diffusers' clip_skip)\n"
            "  --original-size WxH     SDXL micro-conditioning (default: the image size)\n"
            "  --target-size WxH       SDXL micro-conditioning (default: the image size)\n"
            "  --crop TOP,LEFT         SDXL micro-conditioning crop coordinates (0,0)\n"
            "  --threads N             compute threads (default: all cores)\n"
            "  --precision P           fp32 (default, matches diffusers) or bf16 (weights held in\n"
            "                          16 bits; faster where the CPU has AVX512-BF16, see --version)\n"
            "  --init-image FILE       image-to-image: start from this PNG or JPEG (resized to the\n"
            "                          output size, which defaults to its own, rounded down to /8)\n"
            "  --strength S            how much of the schedule runs from it, 0..1 (0.8; inpainting 1)\n"
            "  --mask FILE             inpainting: white = repaint (PNG/JPEG, any size)\n"
            "  --batch N               N images (output names numbered: out-1.png, ...)\n"
            "  --seed-per-image        image k uses seed + k (A1111) instead of one generator\n"
            "  --output FILE.png       where to write the image\n"
            "  --quiet                 no progress output\n");
}

/* Strict number parsing: the whole argument must be a number in range. */
static int parse_long(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "diffusiond: error: %s must be an integer between %ld and %ld (got '%s')\n",
                opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_float(const char *opt, const char *s, float lo, float hi, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "diffusiond: error: %s must be a number between %g and %g (got '%s')\n", opt,
                (double)lo, (double)hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* "AxB" (sep 'x') or "A,B" (sep ','): two integers in [0, 65536]. */
static int parse_pair(const char *opt, const char *s, char sep, int *a, int *b)
{
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10), y = -1;
    if (!errno && end != s && *end == sep) {
        const char *t = end + 1;
        y = strtol(t, &end, 10);
        if (end == t || *end)
            y = -1;
    }
    if (errno || x < 0 || x > 65536 || y < 0 || y > 65536) {
        fprintf(stderr, "diffusiond: error: %s must be %s (got '%s')\n", opt,
                sep == 'x' ? "WIDTHxHEIGHT" : "TOP,LEFT", s);
        return -1;
    }
    *a = (int)x, *b = (int)y;
    return 0;
}

/* An input image file (PNG or JPEG) as RGB. */
static int read_image(const char *path, uint8_t **rgb, int *w, int *h, struct sd_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return sd_errf(err, SD_ERR_IO, "%s: %s", path, strerror(errno));
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0, got;
    do {
        if (len == cap) {
            cap = cap ? 2 * cap : 1 << 16;
            uint8_t *q = cap <= (256u << 20) ? realloc(buf, cap) : NULL;
            if (!q) {
                free(buf);
                fclose(f);
                return sd_errf(err, SD_ERR_ARG, "%s: too large (over 256 MB) or out of memory", path);
            }
            buf = q;
        }
        got = fread(buf + len, 1, cap - len, f);
        len += got;
    } while (got);
    fclose(f);
    int rc = image_decode_rgb(buf, len, 4096, SD_MAX_INPUT_PIXELS, rgb, w, h, err);
    free(buf);
    return rc ? sd_err_prefix(err, rc, "%s", path) : SD_OK;
}

/* out.png -> out-K.png (K >= 1), or the path itself for K = 0. */
static void numbered(char *out, size_t cap, const char *path, int k)
{
    const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    if (!k)
        snprintf(out, cap, "%s", path);
    else if (dot && (!slash || dot > slash))
        snprintf(out, cap, "%.*s-%d%s", (int)(dot - path), path, k, dot);
    else
        snprintf(out, cap, "%s-%d", path, k);
}

struct bar {
    int tty, quiet;
    double text_s;
};

/* Progress on stderr: a redrawn bar on a terminal, nothing per step otherwise
 * (the summary line comes at the end). */
static void on_progress(void *user, const struct sd_progress *p)
{
    struct bar *b = user;
    if (p->phase == SD_PHASE_TEXT)
        b->text_s = p->elapsed;
    if (b->quiet || !b->tty || p->phase != SD_PHASE_DENOISE)
        return;
    double per = (p->elapsed - b->text_s) / p->step;
    double eta = per * (p->total - p->step);
    int width = 30, fill = p->total ? width * p->step / p->total : width;
    fprintf(stderr, "\r[%.*s%*s] step %d/%d  %.2f s/step  ETA %.0f s ", fill,
            "##############################", width - fill, "", p->step, p->total, per, eta);
    if (p->step == p->total)
        fputc('\n', stderr);
    fflush(stderr);
}

int cli_generate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},  {"variant", required_argument, 0, 'V'},
        {"prompt", required_argument, 0, 'p'}, {"negative-prompt", required_argument, 0, 'n'},
        {"steps", required_argument, 0, 's'},  {"guidance", required_argument, 0, 'g'},
        {"seed", required_argument, 0, 'S'},   {"width", required_argument, 0, 'W'},
        {"height", required_argument, 0, 'H'}, {"scheduler", required_argument, 0, 'x'},
        {"eta", required_argument, 0, 'e'},    {"clip-skip", required_argument, 0, 'c'},
        {"threads", required_argument, 0, 't'}, {"output", required_argument, 0, 'o'},
        {"quiet", no_argument, 0, 'q'},        {"help", no_argument, 0, 'h'},
        {"precision", required_argument, 0, 'P'},
        {"config", required_argument, 0, 'C'}, {"vae", required_argument, 0, 'A'},
        {"prediction-type", required_argument, 0, 'T'},
        {"original-size", required_argument, 0, 'O'}, {"target-size", required_argument, 0, 'G'},
        {"crop", required_argument, 0, 'R'},
        {"lora-dir", required_argument, 0, 'L'}, {"lora", required_argument, 0, 'l'},
        {"init-image", required_argument, 0, 'I'}, {"strength", required_argument, 0, 'Z'},
        {"mask", required_argument, 0, 'K'}, {"batch", required_argument, 0, 'N'},
        {"seed-per-image", no_argument, 0, 'Y'},
        {0, 0, 0, 0},
    };
    struct sd_params p;
    sd_params_default(&p);
    char bundled[4096];
    sd_bundled_model_path(bundled, sizeof bundled);
    struct sd_load_opts lo = {.dir = getenv("DIFFUSIOND_MODEL"), .lora_dir = getenv("DIFFUSIOND_LORA_DIR")};
    struct sd_lora loras[SD_MAX_LORAS];
    char lora_names[SD_MAX_LORAS][SD_LORA_NAME_MAX];
    if (!lo.dir || !*lo.dir)
        lo.dir = bundled;
    const char *output = NULL, *init_path = NULL, *mask_path = NULL;
    struct bar bar = {.tty = isatty(2)};
    long v;
    int c;
    optind = 1;
    opterr = 0; /* one line of our own instead of getopt's */
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': lo.dir = optarg; break;
        case 'V': lo.variant = optarg; break;
        case 'p': p.prompt = optarg; break;
        case 'n': p.negative_prompt = optarg; break;
        case 's':
            if (parse_long("--steps", optarg, 1, SD_MAX_STEPS, &v))
                return 2;
            p.steps = (int)v;
            break;
        case 'g':
            if (parse_float("--guidance", optarg, 0, 100, &p.guidance))
                return 2;
            break;
        case 'S': {
            /* any 64-bit integer; negative ones wrap as torch.manual_seed does */
            char *end;
            errno = 0;
            long long s = strtoll(optarg, &end, 10);
            if (errno == ERANGE && optarg[0] != '-') {
                errno = 0;
                s = (long long)strtoull(optarg, &end, 10);
            }
            if (errno || end == optarg || *end) {
                fprintf(stderr, "diffusiond: error: --seed must be a 64-bit integer (got '%s')\n",
                        optarg);
                return 2;
            }
            p.seed = (uint64_t)s;
            p.seed_set = 1;
            break;
        }
        case 'W':
        case 'H':
            if (parse_long(c == 'W' ? "--width" : "--height", optarg, 8, SD_MAX_SIDE, &v))
                return 2;
            if (v % 8) {
                fprintf(stderr, "diffusiond: error: %s must be a multiple of 8 (got %ld)\n",
                        c == 'W' ? "--width" : "--height", v);
                return 2;
            }
            *(c == 'W' ? &p.width : &p.height) = (int)v;
            break;
        case 'x': {
            int s = sd_scheduler_from_name(optarg);
            if (s < 0) {
                fprintf(stderr, "diffusiond: error: unknown scheduler '%s' (pndm, ddim, euler, euler_a, "
                        "dpmpp_2m, dpmpp_2m_karras, lcm)\n", optarg);
                return 2;
            }
            p.scheduler = s;
            break;
        }
        case 'e':
            if (parse_float("--eta", optarg, 0, 1, &p.eta))
                return 2;
            break;
        case 'c':
            if (parse_long("--clip-skip", optarg, 0, 64, &v))
                return 2;
            p.clip_skip = (int)v;
            break;
        case 't':
            if (parse_long("--threads", optarg, 1, 1024, &v))
                return 2;
            lo.threads = (int)v;
            break;
        case 'P': {
            int pr = sd_precision_from_name(optarg);
            if (pr < 0) {
                fprintf(stderr, "diffusiond: error: --precision must be fp32 or bf16 (got '%s')\n", optarg);
                return 2;
            }
            lo.precision = pr;
            break;
        }
        case 'C': lo.config = optarg; break;
        case 'A': lo.vae = optarg; break;
        case 'T':
            if (strcmp(optarg, "epsilon") && strcmp(optarg, "v_prediction")) {
                fprintf(stderr, "diffusiond: error: --prediction-type must be epsilon or v_prediction "
                        "(got '%s')\n", optarg);
                return 2;
            }
            lo.prediction_type = optarg;
            break;
        case 'O':
            if (parse_pair("--original-size", optarg, 'x', &p.original_width, &p.original_height))
                return 2;
            break;
        case 'G':
            if (parse_pair("--target-size", optarg, 'x', &p.target_width, &p.target_height))
                return 2;
            break;
        case 'R':
            if (parse_pair("--crop", optarg, ',', &p.crop_top, &p.crop_left))
                return 2;
            break;
        case 'L': lo.lora_dir = optarg; break;
        case 'I': init_path = optarg; break;
        case 'K': mask_path = optarg; break;
        case 'Z':
            if (parse_float("--strength", optarg, 0.01f, 1, &p.strength))
                return 2;
            break;
        case 'N':
            if (parse_long("--batch", optarg, 1, SD_MAX_IMAGES, &v))
                return 2;
            p.n_images = (int)v;
            break;
        case 'Y': p.seed_per_image = 1; break;
        case 'l': {
            const char *colon = strrchr(optarg, ':');
            size_t nl = colon ? (size_t)(colon - optarg) : strlen(optarg);
            float w = 1.0f;
            if (p.n_loras == SD_MAX_LORAS || !nl || nl >= SD_LORA_NAME_MAX ||
                (colon && parse_float("--lora weight", colon + 1, -SD_LORA_WEIGHT_MAX, SD_LORA_WEIGHT_MAX, &w))) {
                fprintf(stderr, "diffusiond: error: --lora must be NAME or NAME:WEIGHT, at most %d times "
                        "(got '%s')\n", SD_MAX_LORAS, optarg);
                return 2;
            }
            memcpy(lora_names[p.n_loras], optarg, nl);
            lora_names[p.n_loras][nl] = 0;
            loras[p.n_loras] = (struct sd_lora){lora_names[p.n_loras], w};
            p.n_loras++;
            p.loras = loras;
            break;
        }
        case 'o': output = optarg; break;
        case 'q': bar.quiet = 1; break;
        case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "diffusiond: error: unknown or incomplete option '%s' (see diffusiond "
                    "generate --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "diffusiond: error: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!p.prompt || !output) {
        fprintf(stderr, "diffusiond: error: %s is required (see diffusiond generate --help)\n",
                !p.prompt ? "--prompt" : "--output");
        return 2;
    }
    struct sd_err err;
    uint8_t *init_rgb = NULL, *mask_rgb = NULL;
    if (mask_path && !init_path) {
        fprintf(stderr, "diffusiond: error: --mask needs --init-image\n");
        return 2;
    }
    if ((init_path && read_image(init_path, &init_rgb, &p.init_width, &p.init_height, &err)) ||
        (mask_path && read_image(mask_path, &mask_rgb, &p.mask_width, &p.mask_height, &err))) {
        fprintf(stderr, "diffusiond: error: %s\n", err.msg);
        free(init_rgb);
        return 1;
    }
    p.init_image = init_rgb;
    p.mask = mask_rgb;
    p.mask_channels = 3;
    if (init_rgb && !p.width) /* the output size, which the engine plans for */
        p.width = p.init_width / 8 * 8, p.height = p.init_height / 8 * 8;
    lo.width = p.width, lo.height = p.height; /* the engine plans for this one size */

    sd_model *m;
    if (sd_model_load(&m, &lo, &err)) {
        fprintf(stderr, "diffusiond: error: %s\n", err.msg);
        free(init_rgb), free(mask_rgb);
        return 1;
    }
    int rc = 1;
    if (sd_model_get_info(m)->precision_note[0])
        fprintf(stderr, "diffusiond: note: %s\n", sd_model_get_info(m)->precision_note);
    if (sd_params_check(m, &p, &err)) {
        fprintf(stderr, "diffusiond: error: %s\n", err.msg);
        sd_model_free(m);
        free(init_rgb), free(mask_rgb);
        return 2;
    }
    struct sd_callbacks cb = {.progress = on_progress, .user = &bar};
    struct sd_image img[SD_MAX_IMAGES];
    int n = p.n_images > 0 ? p.n_images : 1;
    if (sd_generate(m, &p, &cb, img, &err)) {
        fprintf(stderr, "diffusiond: error: %s\n", err.msg);
        n = 0;
    } else
        rc = 0;
    for (int k = 0; k < n; k++) {
        char path[4096];
        uint8_t *png = NULL;
        size_t len;
        numbered(path, sizeof path, output, n > 1 ? k + 1 : 0);
        struct sd_params pk = p;
        pk.seed = img[k].seed; /* the parameters that reproduce this one */
        if (sd_image_png(&img[k], &pk, m, &png, &len, &err) || png_write_file(path, png, len, &err)) {
            fprintf(stderr, "diffusiond: error: %s\n", err.msg);
            rc = 1;
        } else if (!bar.quiet)
            fprintf(stderr, "%s: %dx%d, %d steps, %s, %s, seed %llu, %.2f s\n", path, img[k].width,
                    img[k].height, p.steps,
                    sd_scheduler_name(p.scheduler ? p.scheduler : sd_model_get_info(m)->default_scheduler),
                    sd_precision_name(sd_model_get_info(m)->precision), (unsigned long long)img[k].seed,
                    img[k].seconds);
        free(png);
        sd_image_free(&img[k]);
    }
    sd_model_free(m);
    free(init_rgb), free(mask_rgb);
    return rc;
}

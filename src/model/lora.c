/* lora.c - see lora.h. */
#include "model/lora.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model/model.h"

/* ------------------------------------------------------------- names */

int lora_path(const char *dir, const char *name, char *out, size_t cap, struct sd_err *err)
{
    if (!dir || !*dir)
        return sd_errf(err, SD_ERR_ARG, "LoRA '%.60s': no LoRA folder configured (--lora-dir)", name ? name : "");
    size_t n = name ? strlen(name) : 0;
    if (!n || n >= SD_LORA_NAME_MAX || name[0] == '.' || strchr(name, '/') || strchr(name, '\\'))
        return sd_errf(err, SD_ERR_ARG, "LoRA name '%.60s' is not valid (a file name in the LoRA folder, "
                       "without a path)", name ? name : "");
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x20)
            return sd_errf(err, SD_ERR_ARG, "LoRA name has a control character");
    struct stat st;
    snprintf(out, cap, "%s/%s", dir, name);
    if (stat(out, &st) == 0 && S_ISREG(st.st_mode))
        return SD_OK;
    snprintf(out, cap, "%s/%s.safetensors", dir, name);
    if (stat(out, &st) == 0 && S_ISREG(st.st_mode))
        return SD_OK;
    return sd_errf(err, SD_ERR_ARG, "LoRA '%s' not found in the LoRA folder", name);
}

int sd_lora_check(const sd_model *m, const struct sd_lora *loras, int n, struct sd_err *err)
{
    if (n < 0 || n > SD_MAX_LORAS)
        return sd_errf(err, SD_ERR_ARG, "at most %d LoRAs", SD_MAX_LORAS);
    char path[1400];
    for (int i = 0; i < n; i++) {
        if (!isfinite(loras[i].weight) || fabsf(loras[i].weight) > SD_LORA_WEIGHT_MAX)
            return sd_errf(err, SD_ERR_ARG, "LoRA weight must be between %g and %g",
                           -(double)SD_LORA_WEIGHT_MAX, (double)SD_LORA_WEIGHT_MAX);
        int rc = lora_path(m->lora.dir, loras[i].name, path, sizeof path, err);
        if (rc)
            return rc;
    }
    return SD_OK;
}

int sd_prompt_loras(const char *prompt, char *clean, size_t cap, struct sd_lora *loras,
                    char (*names)[SD_LORA_NAME_MAX], int max, int *n, struct sd_err *err)
{
    size_t o = 0;
    const char *p = prompt;
    while (*p) {
        if (strncmp(p, "<lora:", 6)) {
            if (o + 1 < cap)
                clean[o++] = *p;
            p++;
            continue;
        }
        const char *end = strchr(p, '>');
        if (!end)
            return sd_errf(err, SD_ERR_ARG, "prompt: unterminated <lora:...> tag");
        const char *name = p + 6, *colon = memchr(name, ':', (size_t)(end - name));
        size_t nl = (size_t)((colon ? colon : end) - name);
        float w = 1.0f;
        if (colon) {
            /* A1111 also takes <lora:name:te:unet>: the first number weighs both here */
            char num[32];
            const char *ws = colon + 1, *we = memchr(ws, ':', (size_t)(end - ws));
            size_t wl = (size_t)((we ? we : end) - ws);
            char *e;
            if (!wl || wl >= sizeof num)
                return sd_errf(err, SD_ERR_ARG, "prompt: bad LoRA weight in '%.*s'", (int)(end - p + 1), p);
            memcpy(num, ws, wl);
            num[wl] = 0;
            errno = 0;
            w = strtof(num, &e);
            if (errno || *e || !isfinite(w))
                return sd_errf(err, SD_ERR_ARG, "prompt: bad LoRA weight in '%.*s'", (int)(end - p + 1), p);
        }
        if (!nl || nl >= SD_LORA_NAME_MAX)
            return sd_errf(err, SD_ERR_ARG, "prompt: bad LoRA name in '%.*s'", (int)(end - p + 1), p);
        if (*n >= max)
            return sd_errf(err, SD_ERR_ARG, "at most %d LoRAs", max);
        memcpy(names[*n], name, nl);
        names[*n][nl] = 0;
        loras[*n] = (struct sd_lora){names[*n], w};
        (*n)++;
        p = end + 1;
    }
    if (cap)
        clean[o < cap ? o : cap - 1] = 0;
    return SD_OK;
}

/* ----------------------------------------------------------- parsing */

/* One module of a LoRA file: its low-rank factors and alpha. */
struct lmod {
    char name[200];
    const struct st_tensor *down, *up;
    float alpha; /* 0: none */
    int kohya;
};

struct lfile {
    struct st_file *f;
    struct lmod *mods;
    int n;
};

/* The suffixes of the two factors and alpha, in both conventions. */
static const struct {
    const char *suffix;
    int role;  /* 0 down, 1 up, 2 alpha */
    int kohya; /* naming convention of the module name */
    const char *rename_from, *rename_to; /* old diffusers: "processor.to_q_lora" -> "to_q" */
} suffixes[] = {
    {".lora_down.weight", 0, 1, NULL, NULL}, {".lora_up.weight", 1, 1, NULL, NULL},
    {".alpha", 2, -1, NULL, NULL},           {".lora_A.weight", 0, 0, NULL, NULL},
    {".lora_B.weight", 1, 0, NULL, NULL},    {".lora.down.weight", 0, 0, NULL, NULL},
    {".lora.up.weight", 1, 0, NULL, NULL},   {".lora_linear_layer.down.weight", 0, 0, NULL, NULL},
    {".lora_linear_layer.up.weight", 1, 0, NULL, NULL},
    {"_lora.down.weight", 0, 0, NULL, NULL}, {"_lora.up.weight", 1, 0, NULL, NULL},
};

/* diffusers <= 0.20 attention-processor LoRA ("<attn>.processor.to_q_lora.
 * down.weight", the "_lora" already cut) and its text-encoder spelling
 * ("self_attn.to_q_lora", which is q_proj), as diffusers' kohya converter
 * still writes them. */
static void old_diffusers_name(char *s, size_t cap)
{
    static const char *const from[] = {".processor.to_q",  ".processor.to_k",  ".processor.to_v",
                                       ".processor.to_out", ".self_attn.to_q", ".self_attn.to_k",
                                       ".self_attn.to_v",   ".self_attn.to_out"};
    static const char *const to[] = {".to_q",            ".to_k",            ".to_v",
                                     ".to_out.0",        ".self_attn.q_proj", ".self_attn.k_proj",
                                     ".self_attn.v_proj", ".self_attn.out_proj"};
    for (int i = 0; i < 8; i++) {
        size_t n = strlen(s), fl = strlen(from[i]), tl = strlen(to[i]);
        if (n >= fl && !strcmp(s + n - fl, from[i]) && n - fl + tl < cap) {
            memcpy(s + n - fl, to[i], tl + 1);
            return;
        }
    }
}

static float scalar(const struct st_tensor *t)
{
    float v = 0;
    struct sd_err e;
    if (t->numel == 1 && (t->dtype == ST_F32 || t->dtype == ST_F16 || t->dtype == ST_BF16 || t->dtype == ST_F64))
        st_to_f32(t, &v, &e);
    return v;
}

static int lfile_open(struct lfile *lf, const char *path, struct sd_err *err)
{
    memset(lf, 0, sizeof *lf);
    int rc = st_open(&lf->f, path, err);
    if (rc)
        return rc;
    int n = st_count(lf->f);
    lf->mods = calloc(n ? n : 1, sizeof *lf->mods);
    if (!lf->mods)
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");
    const char *bad[3] = {0};
    int nbad = 0;
    for (int i = 0; i < n; i++) {
        const struct st_tensor *t = st_at(lf->f, i);
        size_t len = strlen(t->name);
        int k = -1;
        for (size_t j = 0; j < sizeof suffixes / sizeof suffixes[0] && k < 0; j++) {
            size_t sl = strlen(suffixes[j].suffix);
            if (len > sl && !strcmp(t->name + len - sl, suffixes[j].suffix))
                k = (int)j;
        }
        if (k < 0) {
            if (nbad < 3)
                bad[nbad] = t->name;
            nbad++;
            continue;
        }
        char name[200];
        size_t nl = len - strlen(suffixes[k].suffix);
        if (nl >= sizeof name) {
            if (nbad < 3)
                bad[nbad] = t->name;
            nbad++;
            continue;
        }
        memcpy(name, t->name, nl);
        name[nl] = 0;
        old_diffusers_name(name, sizeof name);
        struct lmod *m = NULL;
        for (int j = lf->n - 1; j >= 0 && !m; j--) /* the file is sorted: a module's keys are near */
            if (!strcmp(lf->mods[j].name, name))
                m = &lf->mods[j];
        if (!m) {
            m = &lf->mods[lf->n++];
            snprintf(m->name, sizeof m->name, "%s", name);
            m->kohya = !strncmp(name, "lora_", 5);
        }
        if (suffixes[k].role == 0)
            m->down = t;
        else if (suffixes[k].role == 1)
            m->up = t;
        else
            m->alpha = scalar(t);
    }
    if (nbad)
        return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: %d key%s of kinds diffusiond does not apply (%s%s%s%s%s%s; "
                       "LoRA/LoCon down/up/alpha and PEFT lora_A/lora_B are supported, not LoHa, LoKr, "
                       "DoRA or full diffs)", path, nbad, nbad > 1 ? "s" : "", bad[0], bad[1] ? ", " : "",
                       bad[1] ? bad[1] : "", bad[2] ? ", " : "", bad[2] ? bad[2] : "", nbad > 3 ? ", ..." : "");
    if (!lf->n)
        return sd_errf(err, SD_ERR_FORMAT, "%s: no LoRA modules in this file", path);
    for (int i = 0; i < lf->n; i++) {
        struct lmod *m = &lf->mods[i];
        if (!m->down || !m->up)
            return sd_errf(err, SD_ERR_FORMAT, "%s: module '%s' has no %s factor", path, m->name,
                           m->down ? "up" : "down");
        if (m->down->ndim < 2 || m->up->ndim < 2 || m->down->shape[0] < 1 ||
            m->up->shape[1] != m->down->shape[0] || m->up->numel != m->up->shape[0] * m->up->shape[1])
            return sd_errf(err, SD_ERR_FORMAT, "%s: module '%s': factors of shapes that do not multiply "
                           "(LoCon with a mid factor is not supported)", path, m->name);
    }
    return SD_OK;
}

static void lfile_close(struct lfile *lf)
{
    st_close(lf->f);
    free(lf->mods);
    memset(lf, 0, sizeof *lf);
}

/* ------------------------------------------------------- the targets */

/* A name a module may be written as, and the layer part it means. */
struct key {
    char name[200];
    struct weights *w;
    const struct nn_backend *be;
    const struct weights_layer *layer;
    int te;
};

static int cmp_key(const void *a, const void *b)
{
    return strcmp(((const struct key *)a)->name, ((const struct key *)b)->name);
}

static void underscore(char *s)
{
    for (; *s; s++)
        if (*s == '.')
            *s = '_';
}

struct keys {
    struct key *k;
    int n, cap;
};

static int add_key(struct keys *ks, const char *prefix, const char *path, int us, struct weights *w,
                   const struct nn_backend *be, const struct weights_layer *l, int te)
{
    if (ks->n == ks->cap) {
        int cap = ks->cap ? 2 * ks->cap : 1024;
        struct key *p = realloc(ks->k, cap * sizeof *p);
        if (!p)
            return -1;
        ks->k = p, ks->cap = cap;
    }
    struct key *k = &ks->k[ks->n++];
    int len = snprintf(k->name, sizeof k->name, "%s%s", prefix, path);
    if (len >= (int)sizeof k->name) {
        ks->n--;
        return 0;
    }
    if (us)
        underscore(k->name + strlen(prefix));
    k->w = w, k->be = be, k->layer = l, k->te = te;
    return 0;
}

/* Every spelling of every layer of the networks a LoRA can touch. */
static int build_keys(sd_model *m, struct keys *ks)
{
    int xl = m->arch == SD_ARCH_SDXL;
    struct {
        struct weights *w;
        const struct nn_backend *be;
        const char *peft, *kohya;
        int te;
    } comps[3] = {
        {&m->unet.w, m->unet.nn.be, "unet.", "lora_unet_", 0},
        {&m->clip.w, m->clip.nn.be, "text_encoder.", xl ? "lora_te1_" : "lora_te_", 1},
        {&m->clip2.w, m->clip2.nn.be, "text_encoder_2.", "lora_te2_", 1},
    };
    for (int c = 0; c < (xl ? 3 : 2); c++) {
        struct weights *w = comps[c].w;
        for (int i = 0; i < w->n_layers; i++) {
            const struct weights_layer *l = &w->layers[i];
            char canon[200], ldm[200];
            /* text encoders: transformers 5 files lack the "text_model." prefix */
            snprintf(canon, sizeof canon, "%s%s", comps[c].te && strncmp(l->name, "text_model.", 11)
                                                      ? "text_model." : "", l->name);
            if (add_key(ks, comps[c].peft, canon, 0, w, comps[c].be, l, comps[c].te) ||
                add_key(ks, comps[c].kohya, canon, 1, w, comps[c].be, l, comps[c].te))
                return -1;
            /* PEFT text-encoder files saved with transformers 5 lack "text_model." */
            if (comps[c].te && add_key(ks, comps[c].peft, canon + 11, 0, w, comps[c].be, l, 1))
                return -1;
            if (!c) {
                /* bare PEFT UNet files (no "unet." prefix), and kohya's
                 * original-UNet spelling (what SDXL LoRAs use) */
                if (add_key(ks, "", canon, 0, w, comps[c].be, l, 0))
                    return -1;
                char wname[220];
                snprintf(wname, sizeof wname, "%s.weight", canon);
                if (ckpt_unet_ldm_name(&m->unet.cfg, wname, ldm, sizeof ldm) && strlen(ldm) > 7) {
                    ldm[strlen(ldm) - 7] = 0; /* ".weight" */
                    if (add_key(ks, comps[c].kohya, ldm, 1, w, comps[c].be, l, 0))
                        return -1;
                }
            }
        }
    }
    if (ks->n)
        qsort(ks->k, ks->n, sizeof *ks->k, cmp_key);
    return 0;
}

static const struct key *find_key(const struct keys *ks, const char *name)
{
    struct key probe;
    snprintf(probe.name, sizeof probe.name, "%s", name);
    return bsearch(&probe, ks->k, ks->n, sizeof *ks->k, cmp_key);
}

/* ------------------------------------------------------------ merge */

/* One factor pair to add to a layer part. */
struct job {
    const struct key *key;
    const struct lmod *mod;
    float scale; /* weight * alpha / rank */
};

static int cmp_job(const void *a, const void *b)
{
    const struct job *x = a, *y = b;
    uintptr_t p = (uintptr_t)x->key->layer->layer, q = (uintptr_t)y->key->layer->layer;
    return p < q ? -1 : p > q;
}

/* dst[rows, cols] += s * up[rows, r] @ down[r, cols] */
static int add_product(float *dst, const struct lmod *m, float s, int rows, int cols, struct sd_err *err)
{
    int r = (int)m->down->shape[0];
    float *down = malloc((size_t)m->down->numel * sizeof(float)), *up = malloc((size_t)m->up->numel * sizeof(float));
    int rc = SD_OK;
    if (!down || !up)
        rc = sd_errf(err, SD_ERR_NOMEM, "out of memory");
    if (!rc)
        rc = st_to_f32(m->down, down, err);
    if (!rc)
        rc = st_to_f32(m->up, up, err);
    if (!rc) {
#pragma omp parallel for schedule(static)
        for (int o = 0; o < rows; o++) {
            float *d = dst + (size_t)o * cols;
            for (int k = 0; k < r; k++) {
                float u = up[(size_t)o * r + k] * s;
                const float *dn = down + (size_t)k * cols;
                for (int c = 0; c < cols; c++)
                    d[c] += u * dn[c];
            }
        }
    }
    free(down), free(up);
    return rc;
}

/* Rebuild one layer: its original weights (every part, from the file)
 * plus the jobs aimed at it; hand them to the backend to prepare. */
static int rebuild(struct weights *w, const struct nn_backend *be, void *layer, const struct job *jobs, int nj,
                   struct sd_err *err)
{
    int rows = 0, cols = 0, conv = 0;
    for (int i = 0; i < w->n_layers; i++)
        if (w->layers[i].layer == layer) {
            const struct weights_layer *l = &w->layers[i];
            rows = l->row0 + l->rows > rows ? l->row0 + l->rows : rows;
            cols = l->cols, conv = l->conv;
        }
    float *buf = malloc((size_t)rows * cols * sizeof(float));
    if (!buf)
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");
    int rc = SD_OK;
    for (int i = 0; !rc && i < w->n_layers; i++)
        if (w->layers[i].layer == layer)
            rc = weights_read(w, w->layers[i].tensor, buf + (size_t)w->layers[i].row0 * cols,
                              (size_t)w->layers[i].rows * cols, err);
    for (int j = 0; !rc && j < nj; j++) {
        const struct weights_layer *l = jobs[j].key->layer;
        rc = add_product(buf + (size_t)l->row0 * cols, jobs[j].mod, jobs[j].scale, l->rows, cols, err);
    }
    if (!rc) {
        struct sd_err e;
        if (conv) {
            struct nn_conv2d *c = layer;
            if (be->layer_bytes)
                w->prepared -= be->layer_bytes(c->be_state);
            nn_conv2d_release(be, c);
            c->w = buf;
            rc = be->conv2d_prepare(c, &e);
            c->w = NULL;
            if (!rc && be->layer_bytes)
                w->prepared += be->layer_bytes(c->be_state);
        } else {
            struct nn_linear *l = layer;
            if (be->layer_bytes)
                w->prepared -= be->layer_bytes(l->be_state);
            nn_linear_release(be, l);
            l->w = buf;
            rc = be->linear_prepare(l, &e);
            l->w = NULL;
            if (!rc && be->layer_bytes)
                w->prepared += be->layer_bytes(l->be_state);
        }
        if (rc)
            sd_errf(err, rc, "preparing a merged layer: %s", e.msg);
    }
    free(buf);
    return rc;
}

static int touched_add(struct lora_state *s, void *layer)
{
    for (int i = 0; i < s->n_touched; i++)
        if (s->touched[i] == layer)
            return 0;
    if (s->n_touched == s->cap_touched) {
        int cap = s->cap_touched ? 2 * s->cap_touched : 256;
        void **p = realloc(s->touched, cap * sizeof *p);
        if (!p)
            return -1;
        s->touched = p, s->cap_touched = cap;
    }
    s->touched[s->n_touched++] = layer;
    return 0;
}

/* Which component a touched layer belongs to. */
static int owner(sd_model *m, void *layer, struct weights **w, const struct nn_backend **be, int *te)
{
    struct weights *ws[3] = {&m->unet.w, &m->clip.w, &m->clip2.w};
    const struct nn_backend *bes[3] = {m->unet.nn.be, m->clip.nn.be, m->clip2.nn.be};
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < ws[c]->n_layers; i++)
            if (ws[c]->layers[i].layer == layer) {
                *w = ws[c], *be = bes[c], *te = c > 0;
                return 1;
            }
    return 0;
}

static int same_set(const struct lora_state *s, const struct sd_lora *set, int n)
{
    if (n != s->n)
        return 0;
    for (int i = 0; i < n; i++)
        if (strcmp(s->names[i], set[i].name) || s->weights[i] != set[i].weight)
            return 0;
    return 1;
}

int lora_apply(sd_model *m, const struct sd_lora *set, int n, int *te_changed, struct sd_err *err)
{
    struct lora_state *s = &m->lora;
    *te_changed = 0;
    if (same_set(s, set, n))
        return SD_OK;
    int rc = sd_lora_check(m, set, n, err);
    if (rc)
        return rc;
    if (!m->unet.nn.be->linear_prepare)
        return sd_errf(err, SD_ERR_UNSUPPORTED, "LoRA needs a backend that prepares weights");
    struct lfile files[SD_MAX_LORAS] = {0};
    struct keys ks = {0};
    struct job *jobs = NULL;
    int nj = 0;
    if (n && build_keys(m, &ks)) {
        rc = sd_errf(err, SD_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* 1. Every module of every file onto a layer part, or a refusal. */
    for (int i = 0; i < n; i++) {
        char path[1400];
        if ((rc = lora_path(s->dir, set[i].name, path, sizeof path, err)) || (rc = lfile_open(&files[i], path, err)))
            goto out;
        const char *miss[3] = {0};
        int nmiss = 0;
        struct job *nj_p = realloc(jobs, (nj + files[i].n) * sizeof *jobs);
        if (!nj_p) {
            rc = sd_errf(err, SD_ERR_NOMEM, "out of memory");
            goto out;
        }
        jobs = nj_p;
        for (int j = 0; j < files[i].n; j++) {
            const struct lmod *mod = &files[i].mods[j];
            const struct key *k = find_key(&ks, mod->name);
            if (!k) {
                if (nmiss < 3)
                    miss[nmiss] = mod->name;
                nmiss++;
                continue;
            }
            int64_t in = mod->down->numel / mod->down->shape[0];
            if (mod->up->shape[0] != k->layer->rows || in != k->layer->cols) {
                rc = sd_errf(err, SD_ERR_FORMAT, "LoRA '%s': module '%s' is [%lld x %lld] but layer '%s' is "
                             "[%d x %d] (a LoRA for another model?)", set[i].name, mod->name,
                             (long long)mod->up->shape[0], (long long)in, k->layer->name, k->layer->rows,
                             k->layer->cols);
                goto out;
            }
            float rank = (float)mod->down->shape[0];
            float scale = mod->alpha != 0 ? mod->alpha / rank : 1.0f;
            jobs[nj++] = (struct job){k, mod, set[i].weight * scale};
        }
        if (nmiss) {
            rc = sd_errf(err, SD_ERR_FORMAT, "LoRA '%s': %d of its %d modules match no layer of this %s model "
                         "(%s%s%s%s%s%s)", set[i].name, nmiss, files[i].n, m->info.family, miss[0],
                         miss[1] ? ", " : "", miss[1] ? miss[1] : "", miss[2] ? ", " : "",
                         miss[2] ? miss[2] : "", nmiss > 3 ? ", ..." : "");
            goto out;
        }
    }
    /* 2. Rebuild every layer the old or the new set touches. */
    if (nj)
        qsort(jobs, nj, sizeof *jobs, cmp_job);
    void **layers = malloc((s->n_touched + nj + 1) * sizeof *layers);
    int nl = 0;
    if (!layers) {
        rc = sd_errf(err, SD_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < s->n_touched; i++)
        layers[nl++] = s->touched[i];
    for (int j = 0; j < nj; j++)
        if (!j || jobs[j].key->layer->layer != jobs[j - 1].key->layer->layer) {
            int seen = 0;
            for (int i = 0; i < s->n_touched && !seen; i++)
                seen = s->touched[i] == jobs[j].key->layer->layer;
            if (!seen)
                layers[nl++] = jobs[j].key->layer->layer;
        }
    s->n_touched = 0;
    for (int i = 0; !rc && i < nl; i++) {
        int a = 0, b;
        while (a < nj && jobs[a].key->layer->layer != layers[i])
            a++;
        for (b = a; b < nj && jobs[b].key->layer->layer == layers[i]; b++)
            ;
        struct weights *w;
        const struct nn_backend *be;
        int te;
        if (!owner(m, layers[i], &w, &be, &te))
            continue;
        rc = rebuild(w, be, layers[i], jobs + a, b - a, err);
        if (!rc && b > a && touched_add(s, layers[i]))
            rc = sd_errf(err, SD_ERR_NOMEM, "out of memory");
        *te_changed |= te;
    }
    if (rc) { /* put every layer back as it was loaded */
        struct sd_err e2;
        for (int i = 0; i < nl; i++) {
            struct weights *w;
            const struct nn_backend *be;
            int te;
            if (owner(m, layers[i], &w, &be, &te))
                rebuild(w, be, layers[i], NULL, 0, &e2);
        }
        s->n_touched = 0;
        *te_changed = 1;
    }
    free(layers);
    /* 3. Plans and caches of the changed networks are stale. */
    m->unet.planned_B = 0;
    m->unet.kv_valid = 0;
    m->clip.planned_T = 0;
    m->clip2.planned_T = 0;
    s->n = 0;
    if (!rc) {
        for (int i = 0; i < n; i++) {
            snprintf(s->names[i], sizeof s->names[i], "%s", set[i].name);
            s->weights[i] = set[i].weight;
        }
        s->n = n;
    }
out:
    for (int i = 0; i < SD_MAX_LORAS; i++)
        lfile_close(&files[i]);
    free(ks.k);
    free(jobs);
    return rc;
}

void lora_state_free(struct lora_state *s)
{
    free(s->touched);
    memset(s, 0, sizeof *s);
}

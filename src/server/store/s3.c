/* store/s3.c - images in S3-compatible object storage, tasks in another store.
 *
 * `--images s3://BUCKET/PREFIX` wraps the task store (SQLite or Redis):
 * a completed task's PNGs are PUT to BUCKET/PREFIX/<id>.png,
 * <id>.<k>.png (deterministic keys, so a task run again overwrites its
 * own objects), and the task store keeps only a reference per image,
 * "s3:<sha256 hex>:<bytes>". Reading an image GETs it and checks size and
 * sha256, so a corrupted or replaced object is an error, not a wrong
 * picture. Expiry deletes the objects. Input files (init image, mask)
 * stay in the task store: they live only until the task ends.
 *
 * Requests are signed with AWS Signature V4 by libcurl (CURLOPT_AWS_SIGV4,
 * curl >= 7.75); the region and service are given explicitly (they cannot
 * be read from a custom endpoint's host name), and the payload hash header
 * is ours (curl 7.88 does not add it; S3 refuses requests without it).
 * URLs are path-style (ENDPOINT/BUCKET/KEY), which AWS, MinIO, Ceph and
 * moto all take. Credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
 * AWS_SESSION_TOKEN (optional), AWS_REGION (us-east-1).
 *
 * An S3 failure fails the call with the status and S3's error code in the
 * message (the worker then fails the task with it); nothing is retried
 * behind the caller's back.
 */
#include "server/store/store.h"

#include <curl/curl.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S3_MAX_OBJECT ((size_t)256 << 20) /* an image read back larger than this is refused */
#define S3_TIMEOUT_S 60L

struct s3 {
    struct store inner;
    char endpoint[512];  /* http(s)://host[:port], no trailing slash */
    char bucket[256];
    char prefix[512];    /* "" or "dir/sub/" */
    char region[64];
    char userpwd[600];   /* AKID:SECRET */
    char token_hdr[2200];/* "x-amz-security-token: ..." or "" */
    char sigv4[128];     /* "aws:amz:<region>:s3" */
    struct store_ops ops;/* the inner's, with images through S3 */
};

/* ------------------------------------------------------------------------ */
/* HTTP */

static void sha256_hex(const uint8_t *data, size_t len, char out[65])
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256(data, len, d);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

struct body {
    const uint8_t *in; /* upload */
    size_t in_len, in_pos;
    uint8_t *out;      /* download */
    size_t out_len, out_cap;
    int too_big;
};

static size_t on_read(char *buf, size_t size, size_t n, void *user)
{
    struct body *b = user;
    size_t left = b->in_len - b->in_pos, want = size * n;
    if (want > left)
        want = left;
    memcpy(buf, b->in + b->in_pos, want);
    b->in_pos += want;
    return want;
}

static size_t on_write(char *data, size_t size, size_t n, void *user)
{
    struct body *b = user;
    size_t len = size * n;
    if (b->out_len + len > S3_MAX_OBJECT) {
        b->too_big = 1;
        return 0;
    }
    if (b->out_len + len > b->out_cap) {
        size_t cap = b->out_cap ? b->out_cap : 1 << 16;
        while (cap < b->out_len + len)
            cap *= 2;
        uint8_t *p = realloc(b->out, cap);
        if (!p)
            return 0;
        b->out = p;
        b->out_cap = cap;
    }
    memcpy(b->out + b->out_len, data, len);
    b->out_len += len;
    return len;
}

/* Keys are ours (a prefix checked at start-up, a UUID, a number): every
 * character is URL-safe as it is. */
static void object_url(const struct s3 *s, const char *id, int k, char *url, size_t cap,
                       char *key, size_t kcap)
{
    if (k)
        snprintf(key, kcap, "%s%s.%d.png", s->prefix, id, k);
    else
        snprintf(key, kcap, "%s%s.png", s->prefix, id);
    snprintf(url, cap, "%s/%s/%s", s->endpoint, s->bucket, key);
}

/* One signed request. method "PUT" (data), "GET" (*b->out), "DELETE".
 * SD_OK for 2xx (and 404 on DELETE); else SD_ERR_IO naming the status and
 * S3's <Code>. */
static int request(const struct s3 *s, const char *method, const char *url, const char *key,
                   struct body *b, struct sd_err *err)
{
    CURL *c = curl_easy_init();
    if (!c)
        return sd_errf(err, SD_ERR_NOMEM, "s3: cannot create a curl handle");
    char hash_hdr[128];
    struct curl_slist *h = NULL;
    if (!strcmp(method, "PUT")) {
        char hex[65];
        sha256_hex(b->in, b->in_len, hex);
        snprintf(hash_hdr, sizeof hash_hdr, "x-amz-content-sha256: %s", hex);
        h = curl_slist_append(h, "Content-Type: image/png");
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, b);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)b->in_len);
    } else { /* the hash of an empty payload */
        snprintf(hash_hdr, sizeof hash_hdr, "x-amz-content-sha256: "
                 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        if (!strcmp(method, "DELETE"))
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "DELETE");
    }
    h = curl_slist_append(h, hash_hdr);
    if (s->token_hdr[0])
        h = curl_slist_append(h, s->token_hdr);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_AWS_SIGV4, s->sigv4);
    curl_easy_setopt(c, CURLOPT_USERPWD, s->userpwd);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, S3_TIMEOUT_S);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode cc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (cc != CURLE_OK)
        return sd_errf(err, SD_ERR_IO, "s3: %s %s: %s", method, key,
                       b->too_big ? "object too large" : curl_easy_strerror(cc));
    if ((status >= 200 && status < 300) || (status == 404 && !strcmp(method, "DELETE")))
        return SD_OK;
    char code[96] = "";
    const char *p = b->out_len ? memmem(b->out, b->out_len, "<Code>", 6) : NULL;
    if (p) {
        p += 6;
        size_t n = 0;
        while (p + n < (const char *)b->out + b->out_len && p[n] != '<' && n + 1 < sizeof code)
            n++;
        memcpy(code, p, n);
        code[n] = '\0';
    }
    return sd_errf(err, SD_ERR_IO, "s3: %s %s: HTTP %ld%s%s", method, key, status, code[0] ? " " : "",
                   code);
}

/* ------------------------------------------------------------------------ */
/* The wrapped operations */

static int s3_complete(void *ctx, const char *id, const char *worker, double now,
                       const struct blob *images, int n, int *owned, struct sd_err *err)
{
    struct s3 *s = ctx;
    char refs[STORE_MAX_IMAGES][96];
    struct blob rb[STORE_MAX_IMAGES];
    *owned = 0;
    for (int k = 0; k < n; k++) {
        char url[1600], key[700], hex[65];
        object_url(s, id, k, url, sizeof url, key, sizeof key);
        struct body b = {.in = images[k].data, .in_len = images[k].len};
        int rc = request(s, "PUT", url, key, &b, err);
        free(b.out);
        if (rc)
            return rc;
        sha256_hex(images[k].data, images[k].len, hex);
        int len = snprintf(refs[k], sizeof refs[k], "s3:%s:%zu", hex, images[k].len);
        rb[k] = (struct blob){(const uint8_t *)refs[k], (size_t)len};
    }
    return store_complete(&s->inner, id, worker, now, rb, n, owned, err);
}

static int s3_image(void *ctx, const char *id, int k, uint8_t **png, size_t *len,
                    struct sd_err *err)
{
    struct s3 *s = ctx;
    uint8_t *ref = NULL;
    size_t rlen = 0;
    int rc = store_image(&s->inner, id, k, &ref, &rlen, err);
    if (rc || !ref || rlen < 3 || memcmp(ref, "s3:", 3)) { /* none, or kept before S3 */
        *png = ref, *len = rlen;
        return rc;
    }
    char want[65] = "";
    size_t want_len = 0;
    int ok = rlen < 96 && sscanf((const char *)ref, "s3:%64[0-9a-f]:%zu", want, &want_len) == 2;
    free(ref);
    *png = NULL, *len = 0;
    if (!ok)
        return sd_errf(err, SD_ERR_FORMAT, "s3: task %s: a malformed image reference", id);
    char url[1600], key[700], hex[65];
    object_url(s, id, k, url, sizeof url, key, sizeof key);
    struct body b = {0};
    if ((rc = request(s, "GET", url, key, &b, err))) {
        free(b.out);
        return rc;
    }
    sha256_hex(b.out ? b.out : (const uint8_t *)"", b.out_len, hex);
    if (b.out_len != want_len || strcmp(hex, want)) {
        free(b.out);
        return sd_errf(err, SD_ERR_FORMAT, "s3: %s: the object is not the image stored (%zu bytes, "
                       "sha256 %.12s..., expected %zu, %.12s...)", key, b.out_len, hex, want_len, want);
    }
    *png = b.out ? b.out : malloc(1);
    *len = b.out_len;
    return *png ? SD_OK : sd_errf(err, SD_ERR_NOMEM, "out of memory");
}

struct gone_ctx {
    struct s3 *s;
    void (*gone)(void *user, const char *id, int n_images);
    void *user;
};

static void on_gone(void *user, const char *id, int n_images)
{
    struct gone_ctx *g = user;
    for (int k = 0; k < n_images && k < STORE_MAX_IMAGES; k++) {
        char url[1600], key[700];
        struct sd_err err = {0};
        object_url(g->s, id, k, url, sizeof url, key, sizeof key);
        struct body b = {0};
        if (request(g->s, "DELETE", url, key, &b, &err))
            fprintf(stderr, "diffusiond: expiring %s: %s (the object stays)\n", id, err.msg);
        free(b.out);
    }
    if (g->gone)
        g->gone(g->user, id, n_images);
}

static int s3_expire(void *ctx, double cutoff, int *n,
                     void (*gone)(void *user, const char *id, int n_images), void *user,
                     struct sd_err *err)
{
    struct s3 *s = ctx;
    struct gone_ctx g = {s, gone, user};
    return s->inner.ops->expire(s->inner.ctx, cutoff, n, on_gone, &g, err);
}

/* The rest goes to the task store as it is. */
#define FWD(ctx) (((struct s3 *)(ctx))->inner)

static int f_put(void *c, const struct task *t, const struct blob *in, int nin, int max, int *acc,
                 struct sd_err *e)
{
    return FWD(c).ops->put(FWD(c).ctx, t, in, nin, max, acc, e);
}
static int f_input(void *c, const char *id, int k, uint8_t **d, size_t *l, struct sd_err *e)
{
    return FWD(c).ops->input(FWD(c).ctx, id, k, d, l, e);
}
static int f_claim(void *c, const char *w, const char *m, double now, double lease, struct task *t,
                   int *cl, struct sd_err *e)
{
    return FWD(c).ops->claim(FWD(c).ctx, w, m, now, lease, t, cl, e);
}
static int f_heartbeat(void *c, const char *id, const char *w, double now, double lease, int *own,
                       int *cancel, struct sd_err *e)
{
    return FWD(c).ops->heartbeat(FWD(c).ctx, id, w, now, lease, own, cancel, e);
}
static int f_progress(void *c, const char *id, const char *w, int st, int tot, struct sd_err *e)
{
    return FWD(c).ops->progress(FWD(c).ctx, id, w, st, tot, e);
}
static int f_fail(void *c, const char *id, const char *w, double now, enum task_status f,
                  const char *msg, int *own, struct sd_err *e)
{
    return FWD(c).ops->fail(FWD(c).ctx, id, w, now, f, msg, own, e);
}
static int f_release(void *c, const char *id, const char *w, int *own, struct sd_err *e)
{
    return FWD(c).ops->release(FWD(c).ctx, id, w, own, e);
}
static int f_cancel(void *c, const char *id, double now, enum cancel_result *r, struct sd_err *e)
{
    return FWD(c).ops->cancel(FWD(c).ctx, id, now, r, e);
}
static int f_get(void *c, const char *id, struct task *t, int *found, struct sd_err *e)
{
    return FWD(c).ops->get(FWD(c).ctx, id, t, found, e);
}
static int f_position(void *c, const char *id, int *pos, struct sd_err *e)
{
    return FWD(c).ops->position(FWD(c).ctx, id, pos, e);
}
static int f_counts(void *c, long long counts[TASK_STATUS_COUNT], struct sd_err *e)
{
    return FWD(c).ops->counts(FWD(c).ctx, counts, e);
}
static int f_requeue(void *c, double now, int max, int *n, struct sd_err *e)
{
    return FWD(c).ops->requeue(FWD(c).ctx, now, max, n, e);
}
static int f_subscribe(void *c, void (*fn)(void *, const char *), void *user, struct sd_err *e)
{
    return store_subscribe(&FWD(c), fn, user, e);
}
static int f_advertise(void *c, const char *w, const char *m, const char *info, double ttl,
                       struct sd_err *e)
{
    return store_advertise(&FWD(c), w, m, info, ttl, e);
}
static int f_models(void *c, char **json, struct sd_err *e)
{
    *json = NULL;
    return FWD(c).ops->models ? FWD(c).ops->models(FWD(c).ctx, json, e) : SD_OK;
}
static int f_rate_take(void *c, const char *client, double pm, int burst, int *ok, double *retry,
                       struct sd_err *e)
{
    *ok = 1;
    return FWD(c).ops->rate_take ? FWD(c).ops->rate_take(FWD(c).ctx, client, pm, burst, ok, retry, e)
                                 : SD_ERR_UNSUPPORTED;
}

static void s3_close(void *ctx)
{
    struct s3 *s = ctx;
    store_close(&s->inner);
    free(s);
}

static int parse_url(struct s3 *s, const char *url, struct sd_err *err)
{
    const char *p = url + 5; /* after "s3://" */
    const char *slash = strchr(p, '/');
    size_t bl = slash ? (size_t)(slash - p) : strlen(p);
    if (bl < 3 || bl >= sizeof s->bucket)
        return sd_errf(err, SD_ERR_ARG, "--images %s: expected s3://BUCKET[/PREFIX]", url);
    memcpy(s->bucket, p, bl);
    for (size_t i = 0; i < bl; i++) {
        char c = s->bucket[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
            return sd_errf(err, SD_ERR_ARG, "--images %s: a bucket name is a-z, 0-9, '-' and '.'", url);
    }
    const char *prefix = slash ? slash + 1 : "";
    size_t pl = strlen(prefix);
    while (pl && prefix[pl - 1] == '/')
        pl--;
    if (pl + 2 >= sizeof s->prefix)
        return sd_errf(err, SD_ERR_ARG, "--images %s: prefix too long", url);
    for (size_t i = 0; i < pl; i++) {
        char c = prefix[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("-_./", c)))
            return sd_errf(err, SD_ERR_ARG, "--images %s: a prefix is letters, digits and -_./", url);
    }
    if (pl)
        snprintf(s->prefix, sizeof s->prefix, "%.*s/", (int)pl, prefix);
    return SD_OK;
}

int store_wrap_s3(struct store *st, const char *url, const char *endpoint,
                  char *(*getenv_fn)(const char *), struct sd_err *err)
{
    if (strncmp(url, "s3://", 5))
        return sd_errf(err, SD_ERR_ARG, "--images %s: expected s3://BUCKET[/PREFIX]", url);
    struct s3 *s = calloc(1, sizeof *s);
    if (!s)
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");
    int rc = parse_url(s, url, err);
    const char *akid = getenv_fn("AWS_ACCESS_KEY_ID"), *secret = getenv_fn("AWS_SECRET_ACCESS_KEY");
    const char *region = getenv_fn("AWS_REGION"), *token = getenv_fn("AWS_SESSION_TOKEN");
    if (!region || !*region)
        region = getenv_fn("AWS_DEFAULT_REGION");
    if (!region || !*region)
        region = "us-east-1";
    if (!rc && (!akid || !*akid || !secret || !*secret))
        rc = sd_errf(err, SD_ERR_ARG, "--images: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
    if (!rc && (strlen(akid) + strlen(secret) + 2 > sizeof s->userpwd || strlen(region) >= sizeof s->region ||
                (token && strlen(token) + 32 > sizeof s->token_hdr)))
        rc = sd_errf(err, SD_ERR_ARG, "--images: credentials too long");
    char ep[512];
    if (!rc) {
        if (endpoint && *endpoint)
            snprintf(ep, sizeof ep, "%s", endpoint);
        else
            snprintf(ep, sizeof ep, "https://s3.%s.amazonaws.com", region);
        size_t n = strlen(ep);
        while (n && ep[n - 1] == '/')
            ep[--n] = '\0';
        if (strncmp(ep, "http://", 7) && strncmp(ep, "https://", 8))
            rc = sd_errf(err, SD_ERR_ARG, "--s3-endpoint %s: expected http(s)://HOST[:PORT]", ep);
    }
    if (rc) {
        free(s);
        return rc;
    }
    snprintf(s->endpoint, sizeof s->endpoint, "%s", ep);
    snprintf(s->region, sizeof s->region, "%s", region);
    snprintf(s->userpwd, sizeof s->userpwd, "%s:%s", akid, secret);
    if (token && *token)
        snprintf(s->token_hdr, sizeof s->token_hdr, "x-amz-security-token: %s", token);
    snprintf(s->sigv4, sizeof s->sigv4, "aws:amz:%s:s3", region);
    s->inner = *st;
    const struct store_ops *in = st->ops;
    s->ops = (struct store_ops){
        .name = in->shared ? "redis+s3" : "sqlite+s3",
        .shared = in->shared,
        .put = f_put, .input = f_input, .claim = f_claim, .heartbeat = f_heartbeat,
        .progress = f_progress, .complete = s3_complete, .fail = f_fail, .release = f_release,
        .cancel = f_cancel, .get = f_get, .image = s3_image, .position = f_position,
        .expire = s3_expire, .counts = f_counts, .requeue = f_requeue,
        .subscribe = in->subscribe ? f_subscribe : NULL,
        .advertise = in->advertise ? f_advertise : NULL,
        .models = in->models ? f_models : NULL,
        .rate_take = in->rate_take ? f_rate_take : NULL,
        .close = s3_close,
    };
    st->ops = &s->ops; /* freed with s by close, after its last use */
    st->ctx = s;
    return SD_OK;
}

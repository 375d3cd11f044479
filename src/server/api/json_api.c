/* api/json_api.c - see json_api.h. Error texts and types are pydantic v2's. */
#include "server/api/json_api.h"

#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/sutil.h"
#include "util/imgdec.h"


/* ------------------------------------------------------------------------ */
/* Error objects */

json_t *api_error_item(const char *type, const char *field, const char *msg, json_t *input,
                       json_t *ctx)
{
    json_t *loc = json_array();
    json_array_append_new(loc, json_string("body"));
    if (field)
        json_array_append_new(loc, json_string(field));
    json_t *e = json_object();
    json_object_set_new(e, "type", json_string(type));
    json_object_set_new(e, "loc", loc);
    json_object_set_new(e, "msg", json_string(msg));
    json_object_set(e, "input", input ? input : json_null());
    if (ctx)
        json_object_set(e, "ctx", ctx);
    return e;
}

json_t *api_detail(const char *msg)
{
    return json_pack("{s:s}", "detail", msg);
}

static void add_error(json_t *errs, const char *type, const char *field, const char *msg,
                      json_t *input, json_t *ctx_new)
{
    json_array_append_new(errs, api_error_item(type, field, msg, input, ctx_new));
    json_decref(ctx_new);
}

/* ------------------------------------------------------------------------ */
/* Lax number parsing, as pydantic does for strings */

/* Skip ASCII whitespace at both ends: [*b, *e). */
static void trim(const char **b, const char **e)
{
    while (*b < *e && isspace((unsigned char)**b))
        (*b)++;
    while (*e > *b && isspace((unsigned char)(*e)[-1]))
        (*e)--;
}

/* Copy digits from [p, e) into out (cap bytes), allowing single underscores
 * between digits (Python's int("1_000")). Returns the number of digits, 0
 * when there are none or an underscore is misplaced, and stops at the first
 * character that is neither digit nor underscore (*end). */
static size_t take_digits(const char *p, const char *e, char *out, size_t cap, const char **end)
{
    size_t n = 0;
    int prev_digit = 0;
    while (p < e) {
        if (isdigit((unsigned char)*p)) {
            if (n + 1 < cap)
                out[n] = *p;
            n++;
            prev_digit = 1;
        } else if (*p == '_' && prev_digit && p + 1 < e && isdigit((unsigned char)p[1])) {
            prev_digit = 0;
        } else {
            break;
        }
        p++;
    }
    *end = p;
    if (n < cap)
        out[n] = '\0';
    else if (cap)
        out[cap - 1] = '\0';
    return (p < e && *p == '_') ? 0 : n;
}

/* "  -1_000.00 " -> -1000. Returns 0 if not an integer string; sets
 * *overflow (and *out to the clamped value) outside the int64 range. */
static int parse_int_string(const char *s, long long *out, int *overflow)
{
    const char *b = s, *e = s + strlen(s);
    trim(&b, &e);
    int neg = 0;
    if (b < e && (*b == '+' || *b == '-'))
        neg = *b++ == '-';
    char digits[64];
    const char *p;
    size_t n = take_digits(b, e, digits, sizeof digits, &p);
    if (n == 0)
        return 0;
    if (p < e) { /* only ".0", ".00", ... may follow */
        if (*p != '.' || p + 1 == e)
            return 0;
        for (p++; p < e; p++)
            if (*p != '0')
                return 0;
    }
    *overflow = 0;
    unsigned long long v = 0;
    for (size_t i = 0; i < n; i++) {
        int d = i < sizeof digits - 1 ? digits[i] - '0' : 0;
        if (i >= sizeof digits - 1 || v > (ULLONG_MAX - (unsigned)d) / 10) {
            *overflow = 1;
            break;
        }
        v = v * 10 + (unsigned)d;
    }
    if (!*overflow && v > (neg ? 9223372036854775808ULL : 9223372036854775807ULL))
        *overflow = 1;
    if (*overflow)
        *out = neg ? LLONG_MIN : LLONG_MAX;
    else
        *out = neg ? (long long)(0 - v) : (long long)v;
    return 1;
}

/* Python/Rust float grammar with underscores between digits, inf and nan. */
static int parse_float_string(const char *s, double *out)
{
    const char *b = s, *e = s + strlen(s);
    trim(&b, &e);
    char buf[128];
    size_t n = 0;
    const char *p = b;
    if (p < e && (*p == '+' || *p == '-'))
        buf[n++] = *p++;
    static const char *const words[] = {"infinity", "inf", "nan"};
    for (size_t w = 0; w < 3; w++) {
        size_t wl = strlen(words[w]);
        if ((size_t)(e - p) == wl && !strncasecmp(p, words[w], wl)) {
            double v = w == 2 ? NAN : INFINITY;
            *out = n && buf[0] == '-' ? -v : v;
            return 1;
        }
    }
    const char *q;
    char part[64];
    size_t ni = take_digits(p, e, part, sizeof part, &q);
    if (ni >= sizeof part)
        return 0;
    memcpy(buf + n, part, ni);
    n += ni;
    size_t nf = 0;
    if (q < e && *q == '.') {
        buf[n++] = '.';
        nf = take_digits(q + 1, e, part, sizeof part, &q);
        if (nf >= sizeof part || (nf == 0 && q < e && *q == '_'))
            return 0;
        memcpy(buf + n, part, nf);
        n += nf;
    }
    if (ni + nf == 0)
        return 0;
    if (q < e && (*q == 'e' || *q == 'E')) {
        buf[n++] = 'e';
        q++;
        if (q < e && (*q == '+' || *q == '-'))
            buf[n++] = *q++;
        size_t ne = take_digits(q, e, part, sizeof part, &q);
        if (ne == 0 || ne >= sizeof part)
            return 0;
        memcpy(buf + n, part, ne);
        n += ne;
    }
    if (q != e)
        return 0;
    buf[n] = '\0';
    *out = strtod(buf, NULL); /* overflow gives +-inf, as Python's float() */
    return 1;
}

int api_json_number(const json_t *v, double *out)
{
    if (json_is_number(v)) {
        *out = json_number_value(v);
    } else if (json_is_boolean(v)) {
        *out = json_is_true(v);
    } else if (json_is_string(v)) {
        if (!parse_float_string(json_string_value(v), out))
            return 0;
    } else {
        return 0;
    }
    return isfinite(*out);
}

/* ------------------------------------------------------------------------ */
/* Field validators: each returns 1 and sets *out, or records errors and
 * returns 0. `v` is NULL when the field is absent. */

struct int_spec {
    const char *field;
    int optional;           /* null or absent -> *present = 0 */
    long long def;
    long long ge, le;       /* bounds; ge > le means none */
    long long multiple_of;  /* 0: none */
};

static int check_int(json_t *errs, const struct int_spec *sp, json_t *v, long long *out,
                     int *present)
{
    *present = 1;
    *out = sp->def;
    if (!v || (sp->optional && json_is_null(v))) {
        *present = v ? 0 : !sp->optional;
        return 1;
    }
    long long x = 0;
    int overflow = 0;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d != floor(d)) {
            add_error(errs, "int_from_float", sp->field,
                      "Input should be a valid integer, got a number with a fractional part", v,
                      NULL);
            return 0;
        }
        if (fabs(d) >= 9223372036854775808.0) {
            add_error(errs, "int_parsing_size", sp->field,
                      "Unable to parse input string as an integer, exceeded maximum size", v,
                      NULL);
            return 0;
        }
        x = (long long)d;
    } else if (json_is_boolean(v)) {
        x = json_is_true(v);
    } else if (json_is_string(v)) {
        if (!parse_int_string(json_string_value(v), &x, &overflow)) {
            add_error(errs, "int_parsing", sp->field,
                      "Input should be a valid integer, unable to parse string as an integer", v,
                      NULL);
            return 0;
        }
        if (overflow && sp->ge > sp->le) {
            add_error(errs, "int_parsing_size", sp->field,
                      "Unable to parse input string as an integer, exceeded maximum size", v,
                      NULL);
            return 0;
        }
    } else {
        add_error(errs, "int_type", sp->field, "Input should be a valid integer", v, NULL);
        return 0;
    }
    char msg[128];
    if (sp->multiple_of && !overflow && x % sp->multiple_of != 0) {
        snprintf(msg, sizeof msg, "Input should be a multiple of %lld", sp->multiple_of);
        add_error(errs, "multiple_of", sp->field, msg, v,
                  json_pack("{s:I}", "multiple_of", (json_int_t)sp->multiple_of));
        return 0;
    }
    if (sp->ge <= sp->le && x > sp->le) {
        snprintf(msg, sizeof msg, "Input should be less than or equal to %lld", sp->le);
        add_error(errs, "less_than_equal", sp->field, msg, v,
                  json_pack("{s:I}", "le", (json_int_t)sp->le));
        return 0;
    }
    if (sp->ge <= sp->le && x < sp->ge) {
        snprintf(msg, sizeof msg, "Input should be greater than or equal to %lld", sp->ge);
        add_error(errs, "greater_than_equal", sp->field, msg, v,
                  json_pack("{s:I}", "ge", (json_int_t)sp->ge));
        return 0;
    }
    *out = x;
    return 1;
}

static int check_float(json_t *errs, const char *field, json_t *v, double def, double ge,
                       double le, double *out)
{
    *out = def;
    if (!v)
        return 1;
    double x;
    if (json_is_number(v)) {
        x = json_number_value(v);
    } else if (json_is_boolean(v)) {
        x = json_is_true(v);
    } else if (json_is_string(v)) {
        if (!parse_float_string(json_string_value(v), &x)) {
            add_error(errs, "float_parsing", field,
                      "Input should be a valid number, unable to parse string as a number", v,
                      NULL);
            return 0;
        }
    } else {
        add_error(errs, "float_type", field, "Input should be a valid number", v, NULL);
        return 0;
    }
    char msg[128];
    if (!(x <= le)) { /* NaN fails here, as in pydantic */
        snprintf(msg, sizeof msg, "Input should be less than or equal to %g", le);
        add_error(errs, "less_than_equal", field, msg, v, json_pack("{s:f}", "le", le));
        return 0;
    }
    if (!(x >= ge)) {
        snprintf(msg, sizeof msg, "Input should be greater than or equal to %g", ge);
        add_error(errs, "greater_than_equal", field, msg, v, json_pack("{s:f}", "ge", ge));
        return 0;
    }
    *out = x;
    return 1;
}

/* A string field; *out is a new copy, or NULL when optional and absent. */
static int check_string(json_t *errs, const char *field, json_t *body, json_t *v, int required,
                        int max_chars, char **out)
{
    *out = NULL;
    if (!v || (!required && json_is_null(v))) {
        if (!required)
            return 1;
        add_error(errs, "missing", field, "Field required", body, NULL);
        return 0;
    }
    if (!json_is_string(v)) {
        add_error(errs, "string_type", field, "Input should be a valid string", v, NULL);
        return 0;
    }
    size_t chars = utf8_length(json_string_value(v), json_string_length(v));
    if (chars > (size_t)max_chars) {
        char msg[128];
        snprintf(msg, sizeof msg, "String should have at most %d characters", max_chars);
        add_error(errs, "string_too_long", field, msg, v,
                  json_pack("{s:i}", "max_length", max_chars));
        return 0;
    }
    *out = strdup(json_string_value(v));
    return 1;
}

/* "'default', 'pndm', ... or 'lcm'" - pydantic's rendering of a Literal. */
static void scheduler_expected(char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (int s = 0; s < SD_SCHED_COUNT; s++) {
        const char *sep = s == 0 ? "" : s == SD_SCHED_COUNT - 1 ? " or " : ", ";
        int w = snprintf(out + n, cap - n, "%s'%s'", sep, sd_scheduler_name((enum sd_scheduler)s));
        if (w < 0 || (size_t)w >= cap - n)
            break;
        n += (size_t)w;
    }
}

static int check_scheduler(json_t *errs, json_t *v, int *out)
{
    *out = SD_SCHED_DEFAULT;
    if (!v || json_is_null(v))
        return 1;
    int s = json_is_string(v) ? sd_scheduler_from_name(json_string_value(v)) : -1;
    if (s >= 0) {
        *out = s;
        return 1;
    }
    char expected[512], msg[600];
    scheduler_expected(expected, sizeof expected);
    snprintf(msg, sizeof msg, "Input should be %s", expected);
    add_error(errs, "literal_error", "scheduler", msg, v, json_pack("{s:s}", "expected", expected));
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The request */

static int json_media_type(const char *ct)
{
    if (!ct)
        return 1; /* FastAPI parses a body without Content-Type as JSON */
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    if (n < 12 || strncasecmp(ct, "application/", 12))
        return 0;
    const char *sub = ct + 12;
    size_t sn = n - 12;
    return (sn == 4 && !strncasecmp(sub, "json", 4)) ||
           (sn > 5 && !strncasecmp(sub + sn - 5, "+json", 5));
}

/* "loras": null, or up to SD_MAX_LORAS objects {"name": str, "weight": number = 1}. */
static void check_loras(json_t *errs, json_t *v, struct gen_request *req)
{
    if (!v || json_is_null(v))
        return;
    if (!json_is_array(v)) {
        add_error(errs, "list_type", "loras", "Input should be a valid list", v, NULL);
        return;
    }
    if (json_array_size(v) > SD_MAX_LORAS) {
        char msg[96];
        snprintf(msg, sizeof msg, "List should have at most %d items after validation, not %zu", SD_MAX_LORAS,
                 json_array_size(v));
        add_error(errs, "too_long", "loras", msg, v,
                  json_pack("{s:s,s:i,s:i}", "field_type", "List", "max_length", SD_MAX_LORAS, "actual_length",
                            (int)json_array_size(v)));
        return;
    }
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        json_t *name = json_object_get(e, "name"), *w = json_object_get(e, "weight");
        const char *s = json_string_value(name);
        if (!json_is_object(e) || !s || !*s || strlen(s) >= SD_LORA_NAME_MAX) {
            add_error(errs, "lora_type", "loras",
                      "Input should be an object {\"name\": \"<LoRA file name>\", \"weight\": <number>}", e,
                      NULL);
            return;
        }
        double x = 1.0;
        if (w && !json_is_null(w)) {
            if (!json_is_number(w)) {
                add_error(errs, "float_type", "loras", "Input should be a valid number", w, NULL);
                return;
            }
            x = json_number_value(w);
            if (!(fabs(x) <= SD_LORA_WEIGHT_MAX)) {
                add_error(errs, "less_than_equal", "loras", "LoRA weight should be between -10 and 10", w, NULL);
                return;
            }
        }
        if (!(req->lora_names[req->n_loras] = strdup(s)))
            return;
        req->lora_weights[req->n_loras++] = x;
    }
}

int api_decode_image(const char *what, const uint8_t *file, size_t len, uint8_t **rgb, int *w,
                     int *h, struct sd_err *err)
{
    struct sd_err e = {0};
    int rc = image_decode_rgb(file, len, API_INPUT_MAX_SIDE, API_INPUT_MAX_PIXELS, rgb, w, h, &e);
    if (rc == SD_ERR_NOMEM)
        return sd_errf(err, rc, "%s: out of memory", what);
    if (rc)
        return sd_errf(err, rc, "%s: %s", what, e.msg);
    return SD_OK;
}

int gen_request_load_images(struct gen_request *r, const uint8_t *init, size_t init_len,
                            const uint8_t *mask, size_t mask_len, struct sd_err *err)
{
    free(r->init_rgb), free(r->mask_rgb);
    r->init_rgb = r->mask_rgb = NULL;
    int rc = api_decode_image("init_image", init, init_len, &r->init_rgb, &r->init_width,
                              &r->init_height, err);
    if (!rc && r->has_mask)
        rc = api_decode_image("mask", mask, mask_len, &r->mask_rgb, &r->mask_width,
                              &r->mask_height, err);
    if (!rc && r->mask_rgb && r->mask_invert)
        for (size_t i = 0; i < (size_t)r->mask_width * (size_t)r->mask_height * 3; i++)
            r->mask_rgb[i] = (uint8_t)(255 - r->mask_rgb[i]);
    return rc;
}

int gen_request_set_image_file(struct gen_request *r, int which, const char *field,
                               const uint8_t *data, size_t len, struct sd_err *err)
{
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return sd_errf(err, SD_ERR_NOMEM, "%s: out of memory", field);
    memcpy(copy, data, len);
    uint8_t **rgb = which ? &r->mask_rgb : &r->init_rgb;
    int *w = which ? &r->mask_width : &r->init_width, *h = which ? &r->mask_height : &r->init_height;
    free(*rgb);
    *rgb = NULL;
    int rc = api_decode_image(field, copy, len, rgb, w, h, err);
    if (rc) {
        free(copy);
        return rc;
    }
    if (which) {
        free(r->mask_file);
        r->mask_file = copy, r->mask_file_len = len, r->has_mask = 1;
        if (r->mask_invert)
            for (size_t i = 0; i < (size_t)*w * (size_t)*h * 3; i++)
                r->mask_rgb[i] = (uint8_t)(255 - r->mask_rgb[i]);
    } else {
        free(r->init_file);
        r->init_file = copy, r->init_file_len = len, r->has_init_image = 1;
    }
    return SD_OK;
}

int gen_request_set_image(struct gen_request *r, int which, const char *field, const char *text,
                          size_t len, size_t max_bytes, struct sd_err *err)
{
    uint8_t *file = NULL;
    size_t n = 0;
    struct sd_err e = {0};
    int rc = image_field_decode(text, len, max_bytes, &file, &n, &e);
    if (rc)
        return sd_errf(err, rc, "%s: %s", field, e.msg);
    rc = gen_request_set_image_file(r, which, field, file, n, err);
    free(file);
    return rc;
}

/* "init_image" / "mask": a base64 (or data: URL) PNG or JPEG, decoded into
 * *file (owned by the caller); or, reading back a stored request, true. */
static void check_image_field(json_t *errs, const char *field, json_t *v,
                              const struct api_limits *lim, int *has, uint8_t **file,
                              size_t *file_len)
{
    *has = 0;
    if (!v || json_is_null(v) || (lim->stored && json_is_false(v)))
        return;
    if (lim->stored && json_is_true(v)) {
        *has = 1;
        return;
    }
    if (!json_is_string(v)) {
        add_error(errs, "string_type", field, "Input should be a valid string", v, NULL);
        return;
    }
    struct sd_err e = {0};
    if (image_field_decode(json_string_value(v), json_string_length(v), lim->max_input_bytes, file,
                           file_len, &e)) {
        char msg[SD_ERR_MSG_MAX + 64];
        snprintf(msg, sizeof msg, "Value error, %s: %s", field, e.msg);
        json_t *input = json_string("<image data>");
        add_error(errs, "value_error", field, msg, input, json_pack("{s:s}", "error", e.msg));
        json_decref(input);
        return;
    }
    *has = 1;
}

static int check_bool(json_t *errs, const char *field, json_t *v, int *out)
{
    *out = 0;
    if (!v || json_is_null(v))
        return 1;
    if (json_is_boolean(v)) {
        *out = json_is_true(v);
        return 1;
    }
    if (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1)) {
        *out = (int)json_integer_value(v);
        return 1;
    }
    const char *sv = json_string_value(v);
    static const char *const yes[] = {"true", "1", "yes", "on", "t", "y"};
    static const char *const no[] = {"false", "0", "no", "off", "f", "n"};
    for (int i = 0; sv && i < 6; i++) {
        if (!strcasecmp(sv, yes[i]))
            return *out = 1;
        if (!strcasecmp(sv, no[i]))
            return 1;
    }
    add_error(errs, "bool_parsing", field, "Input should be a valid boolean, unable to interpret input", v,
              NULL);
    return 0;
}

/* Images of a client request: decoded now, so that a broken one is refused
 * at submission with the reason. */
static void check_images(json_t *errs, json_t *body, const struct api_limits *lim,
                         struct gen_request *req)
{
    check_image_field(errs, "init_image", json_object_get(body, "init_image"), lim,
                      &req->has_init_image, &req->init_file, &req->init_file_len);
    check_image_field(errs, "mask", json_object_get(body, "mask"), lim, &req->has_mask,
                      &req->mask_file, &req->mask_file_len);
    if (req->has_mask && !req->has_init_image && !json_object_get(body, "init_image")) {
        add_error(errs, "missing", "init_image", "Field required", body, NULL);
        return;
    }
    if (lim->stored || json_array_size(errs) || !req->has_init_image)
        return;
    struct sd_err e = {0};
    if (gen_request_load_images(req, req->init_file, req->init_file_len, req->mask_file,
                                req->mask_file_len, &e)) {
        const char *field = strncmp(e.msg, "mask", 4) ? "init_image" : "mask";
        char msg[SD_ERR_MSG_MAX + 16];
        snprintf(msg, sizeof msg, "Value error, %s", e.msg);
        json_t *input = json_string("<image data>");
        add_error(errs, "value_error", field, msg, input, json_pack("{s:s}", "error", e.msg));
        json_decref(input);
    }
}

/* Validate every field of the object `body` into req. */
static void check_fields(json_t *errs, json_t *body, const struct api_limits *lim,
                         struct gen_request *req)
{
    long long v;
    int present;
    check_string(errs, "prompt", body, json_object_get(body, "prompt"), 1, lim->max_prompt,
                 &req->prompt);
    check_string(errs, "negative_prompt", body, json_object_get(body, "negative_prompt"), 0,
                 lim->max_prompt, &req->negative_prompt);
    struct int_spec steps = {"num_inference_steps", 0, 50, 1, lim->max_steps, 0};
    if (check_int(errs, &steps, json_object_get(body, "num_inference_steps"), &v, &present))
        req->steps = (int)v;
    json_t *g = json_object_get(body, "guidance_scale");
    req->has_guidance = g != NULL;
    check_float(errs, "guidance_scale", g, 7.5, 0, API_GUIDANCE_MAX, &req->guidance);
    struct int_spec seed = {"seed", 1, 0, 1, 0, 0};
    if (check_int(errs, &seed, json_object_get(body, "seed"), &v, &present)) {
        req->has_seed = present;
        req->seed = v;
    }
    struct int_spec w = {"width", 1, 0, 8, lim->max_side, 8};
    if (check_int(errs, &w, json_object_get(body, "width"), &v, &present))
        req->width = (int)v;
    struct int_spec h = {"height", 1, 0, 8, lim->max_side, 8};
    if (check_int(errs, &h, json_object_get(body, "height"), &v, &present))
        req->height = (int)v;
    check_scheduler(errs, json_object_get(body, "scheduler"), &req->scheduler);
    check_float(errs, "eta", json_object_get(body, "eta"), 0.0, 0.0, 1.0, &req->eta);
    struct int_spec cs = {"clip_skip", 1, 0, 0, API_CLIP_SKIP_MAX, 0};
    if (check_int(errs, &cs, json_object_get(body, "clip_skip"), &v, &present))
        req->clip_skip = (int)v;
    static const char *const micro[6] = {"original_width", "original_height", "crop_top", "crop_left",
                                         "target_width", "target_height"};
    int *mdst[6] = {&req->original_width, &req->original_height, &req->crop_top, &req->crop_left,
                    &req->target_width, &req->target_height};
    for (int i = 0; i < 6; i++) {
        struct int_spec ms = {micro[i], 1, 0, 0, 16384, 0};
        if (check_int(errs, &ms, json_object_get(body, micro[i]), &v, &present))
            *mdst[i] = (int)v;
    }
    check_loras(errs, json_object_get(body, "loras"), req);
    json_t *st = json_object_get(body, "strength");
    if (st && !json_is_null(st))
        check_float(errs, "strength", st, 0.0, 0.0, 1.0, &req->strength);
    check_bool(errs, "mask_invert", json_object_get(body, "mask_invert"), &req->mask_invert);
    struct int_spec ni = {"num_images", 0, 1, 1, lim->max_images, 0};
    if (check_int(errs, &ni, json_object_get(body, "num_images"), &v, &present))
        req->n_images = (int)v;
    check_bool(errs, "seed_per_image", json_object_get(body, "seed_per_image"),
               &req->seed_per_image);
    check_string(errs, "model", body, json_object_get(body, "model"), 0, 255, &req->model);
    req->model_strict = 1;
    check_images(errs, body, lim, req);
    if (lim->stored) {
        const char *api = json_string_value(json_object_get(body, "api"));
        static const char *const apis[] = {"a1111", "openai"};
        for (int i = 0; api && i < 2; i++)
            if (!strcmp(api, apis[i]))
                req->api = apis[i];
    }
}

int api_parse_generate(const char *body, size_t len, const char *content_type,
                       const struct api_limits *lim, struct gen_request *req, json_t **detail)
{
    memset(req, 0, sizeof *req);
    *detail = NULL;
    json_t *errs = json_array();
    if (!errs)
        return SD_ERR_NOMEM;
    json_t *doc = NULL;
    if (len == 0) {
        add_error(errs, "missing", NULL, "Field required", NULL, NULL);
    } else if (!json_media_type(content_type)) {
        /* FastAPI hands a non-JSON body to pydantic as a string. This
         * refusal also keeps a web page elsewhere from queueing work with a
         * "simple" text/plain cross-origin POST. */
        json_t *raw = json_stringn(body, len); /* NULL unless valid UTF-8 */
        add_error(errs, "model_attributes_type", NULL,
                  "Input should be a valid dictionary or object to extract fields from", raw,
                  NULL);
        json_decref(raw);
    } else {
        json_error_t jerr;
        doc = json_loadb(body, len, JSON_DECODE_ANY, &jerr);
        if (!doc) {
            json_t *e = api_error_item("json_invalid", NULL, "JSON decode error", NULL, NULL);
            json_array_append_new(json_object_get(e, "loc"), json_integer(jerr.position));
            json_object_set_new(e, "input", json_object());
            json_object_set_new(e, "ctx", json_pack("{s:s}", "error", jerr.text));
            json_array_append_new(errs, e);
        } else if (!json_is_object(doc)) {
            add_error(errs, "model_attributes_type", NULL,
                      "Input should be a valid dictionary or object to extract fields from", doc,
                      NULL);
        } else {
            check_fields(errs, doc, lim, req);
        }
    }
    json_decref(doc);
    if (json_array_size(errs) == 0 && req->prompt) {
        json_decref(errs);
        return SD_OK;
    }
    gen_request_free(req);
    if (json_array_size(errs) == 0) { /* a strdup failed */
        json_decref(errs);
        return SD_ERR_NOMEM;
    }
    *detail = errs;
    return SD_ERR_ARG;
}

void gen_request_free(struct gen_request *r)
{
    free(r->prompt);
    free(r->negative_prompt);
    free(r->init_file), free(r->mask_file), free(r->init_rgb), free(r->mask_rgb);
    free(r->model);
    for (int i = 0; i < r->n_loras; i++)
        free(r->lora_names[i]);
    memset(r, 0, sizeof *r);
}

json_t *gen_request_to_json(const struct gen_request *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "prompt", json_string(r->prompt));
    json_object_set_new(o, "negative_prompt",
                        r->negative_prompt ? json_string(r->negative_prompt) : json_null());
    json_object_set_new(o, "num_inference_steps", json_integer(r->steps));
    json_object_set_new(o, "guidance_scale", json_real(r->guidance));
    json_object_set_new(o, "seed", r->has_seed ? json_integer(r->seed) : json_null());
    json_object_set_new(o, "width", r->width ? json_integer(r->width) : json_null());
    json_object_set_new(o, "height", r->height ? json_integer(r->height) : json_null());
    json_object_set_new(o, "scheduler",
                        json_string(sd_scheduler_name((enum sd_scheduler)r->scheduler)));
    json_object_set_new(o, "eta", json_real(r->eta));
    json_object_set_new(o, "clip_skip", r->clip_skip ? json_integer(r->clip_skip) : json_null());
    const int micro[6] = {r->original_width, r->original_height, r->crop_top, r->crop_left, r->target_width,
                          r->target_height};
    static const char *const names[6] = {"original_width", "original_height", "crop_top", "crop_left",
                                         "target_width", "target_height"};
    for (int i = 0; i < 6; i++)
        if (micro[i])
            json_object_set_new(o, names[i], json_integer(micro[i]));
    if (r->has_init_image) {
        json_object_set_new(o, "init_image", json_true());
        json_object_set_new(o, "strength", r->strength > 0 ? json_real(r->strength) : json_null());
    }
    if (r->has_mask) {
        json_object_set_new(o, "mask", json_true());
        json_object_set_new(o, "mask_invert", json_boolean(r->mask_invert));
    }
    json_object_set_new(o, "num_images", json_integer(r->n_images > 0 ? r->n_images : 1));
    if (r->seed_per_image)
        json_object_set_new(o, "seed_per_image", json_true());
    if (r->api)
        json_object_set_new(o, "api", json_string(r->api));
    if (r->model)
        json_object_set_new(o, "model", json_string(r->model));
    if (r->n_loras) {
        json_t *a = json_array();
        for (int i = 0; i < r->n_loras; i++)
            json_array_append_new(a, json_pack("{s:s,s:f}", "name", r->lora_names[i], "weight", r->lora_weights[i]));
        json_object_set_new(o, "loras", a);
    }
    return o;
}

int gen_request_from_text(const char *text, struct gen_request *r, struct sd_err *err)
{
    struct api_limits lim = {SD_MAX_PROMPT, SD_MAX_STEPS, SD_MAX_SIDE, SD_MAX_IMAGES, 0, 1};
    json_t *detail = NULL;
    int rc = api_parse_generate(text, strlen(text), NULL, &lim, r, &detail);
    if (rc == SD_ERR_ARG) {
        json_t *e = json_array_get(detail, 0);
        json_t *loc = json_object_get(e, "loc");
        const char *field = json_string_value(json_array_get(loc, 1));
        rc = sd_errf(err, SD_ERR_FORMAT, "stored parameters: %s: %s", field ? field : "body",
                     json_string_value(json_object_get(e, "msg")));
        json_decref(detail);
    } else if (rc) {
        sd_errf(err, rc, "stored parameters: out of memory");
    }
    return rc;
}

void gen_request_to_params(struct gen_request *r, struct sd_params *p)
{
    sd_params_default(p);
    p->prompt = r->prompt;
    p->negative_prompt = r->negative_prompt;
    p->steps = r->steps;
    p->guidance = (float)r->guidance;
    p->seed_set = r->has_seed;
    p->seed = (uint64_t)r->seed; /* torch reinterprets negative seeds the same way */
    p->width = r->width;
    p->height = r->height;
    p->scheduler = (enum sd_scheduler)r->scheduler;
    p->eta = (float)r->eta;
    p->clip_skip = r->clip_skip;
    p->original_width = r->original_width, p->original_height = r->original_height;
    p->crop_top = r->crop_top, p->crop_left = r->crop_left;
    p->target_width = r->target_width, p->target_height = r->target_height;
    for (int i = 0; i < r->n_loras; i++)
        r->loras[i] = (struct sd_lora){r->lora_names[i], (float)r->lora_weights[i]};
    p->loras = r->n_loras ? r->loras : NULL;
    p->n_loras = r->n_loras;
    p->init_image = r->init_rgb;
    p->init_width = r->init_width, p->init_height = r->init_height;
    p->strength = (float)r->strength;
    p->mask = r->mask_rgb;
    p->mask_width = r->mask_width, p->mask_height = r->mask_height;
    p->mask_channels = r->mask_rgb ? 3 : 0;
    p->n_images = r->n_images > 0 ? r->n_images : 1;
    p->seed_per_image = r->seed_per_image;
}

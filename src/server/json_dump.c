/* json_dump.c - JSON output the way FastAPI writes it (see json_dump.h).
 *
 * Python's json.dumps(separators=(",", ":"), ensure_ascii=False): compact,
 * UTF-8 as is, and floats in repr form (0.1, 50.0, 1e+300) where jansson's
 * own dumper would print 17 significant digits (0.10000000000000001).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/json_dump.h"

struct sbuf {
    char *d;
    size_t n, cap;
    int oom;
};

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *d = realloc(b->d, cap);
        if (!d) {
            b->oom = 1;
            return;
        }
        b->d = d;
        b->cap = cap;
    }
    memcpy(b->d + b->n, s, n);
    b->n += n;
    b->d[b->n] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

/* Python's repr(float): the shortest digits that read back the same, fixed
 * notation for exponents -5 < e < 16 (always with a fraction), otherwise
 * d.ddde+XX. */
static void format_real(double x, char *out, size_t cap)
{
    if (!isfinite(x)) { /* cannot come from JSON; Python would write NaN */
        snprintf(out, cap, "%s", x != x ? "NaN" : x > 0 ? "Infinity" : "-Infinity");
        return;
    }
    char sci[40];
    int p;
    for (p = 0; p < 17; p++) {
        snprintf(sci, sizeof sci, "%.*e", p, x);
        if (strtod(sci, NULL) == x)
            break;
    }
    char *e = strchr(sci, 'e');
    int exp10 = atoi(e + 1);
    *e = '\0';
    char digits[24];
    size_t nd = 0;
    for (const char *q = sci; *q; q++)
        if (*q >= '0' && *q <= '9')
            digits[nd++] = *q;
    digits[nd] = '\0';
    const char *sign = x < 0 ? "-" : "";
    if (exp10 >= 16 || exp10 < -4) {
        snprintf(out, cap, "%s%c%s%se%c%02d", sign, digits[0], nd > 1 ? "." : "", digits + 1,
                 exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    } else if (exp10 < 0) {
        char zeros[8];
        memset(zeros, '0', (size_t)(-exp10 - 1));
        zeros[-exp10 - 1] = '\0';
        snprintf(out, cap, "%s0.%s%s", sign, zeros, digits);
    } else {
        char ip[24], fp[24];
        size_t ni = (size_t)exp10 + 1;
        for (size_t i = 0; i < ni; i++)
            ip[i] = i < nd ? digits[i] : '0';
        ip[ni] = '\0';
        snprintf(fp, sizeof fp, "%s", nd > ni ? digits + ni : "0");
        snprintf(out, cap, "%s%s.%s", sign, ip, fp);
    }
}

static void dump_string(struct sbuf *b, const char *s, size_t n)
{
    sb_put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        sb_put(b, s + run, i - run);
        run = i + 1;
        char esc[8];
        switch (c) {
        case '"': sb_str(b, "\\\""); break;
        case '\\': sb_str(b, "\\\\"); break;
        case '\n': sb_str(b, "\\n"); break;
        case '\r': sb_str(b, "\\r"); break;
        case '\t': sb_str(b, "\\t"); break;
        case '\b': sb_str(b, "\\b"); break;
        case '\f': sb_str(b, "\\f"); break;
        default:
            snprintf(esc, sizeof esc, "\\u%04x", c);
            sb_str(b, esc);
        }
    }
    sb_put(b, s + run, n - run);
    sb_put(b, "\"", 1);
}

static void dump_value(struct sbuf *b, const json_t *v, int depth)
{
    char num[64];
    if (depth > 64) { /* our own documents are shallow; echoed inputs may not be */
        sb_str(b, "null");
        return;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        sb_put(b, "{", 1);
        const char *key;
        json_t *val;
        int first = 1;
        json_object_foreach((json_t *)v, key, val) {
            if (!first)
                sb_put(b, ",", 1);
            first = 0;
            dump_string(b, key, strlen(key));
            sb_put(b, ":", 1);
            dump_value(b, val, depth + 1);
        }
        sb_put(b, "}", 1);
        break;
    }
    case JSON_ARRAY:
        sb_put(b, "[", 1);
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i)
                sb_put(b, ",", 1);
            dump_value(b, json_array_get(v, i), depth + 1);
        }
        sb_put(b, "]", 1);
        break;
    case JSON_STRING:
        dump_string(b, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        sb_str(b, num);
        break;
    case JSON_REAL:
        format_real(json_real_value(v), num, sizeof num);
        sb_str(b, num);
        break;
    case JSON_TRUE:
        sb_str(b, "true");
        break;
    case JSON_FALSE:
        sb_str(b, "false");
        break;
    case JSON_NULL:
        sb_str(b, "null");
        break;
    }
}

char *json_api_dumps(const json_t *v, size_t *len)
{
    struct sbuf b = {0};
    dump_value(&b, v, 0);
    if (b.oom || !b.d) {
        free(b.d);
        return NULL;
    }
    if (len)
        *len = b.n;
    return b.d;
}

/* sutil.c - see sutil.h. */
#include "server/sutil.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

int random_bytes(void *buf, size_t n, struct sd_err *err)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return sd_errf(err, SD_ERR_IO, "getrandom: %s", strerror(errno));
        }
        p += got;
        n -= (size_t)got;
    }
    return SD_OK;
}

int uuid4_new(char out[UUID_STR_LEN], struct sd_err *err)
{
    uint8_t b[16];
    int rc = random_bytes(b, sizeof b, err);
    if (rc)
        return rc;
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        *o++ = hex[b[i] >> 4];
        *o++ = hex[b[i] & 15];
    }
    *o = '\0';
    return SD_OK;
}

int uuid_valid(const char *s)
{
    for (int i = 0; i < UUID_STR_LEN - 1; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return 0;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return 0; /* also stops at a NUL of a short string */
        }
    }
    return s[UUID_STR_LEN - 1] == '\0';
}

double now_unix(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void rfc3339_format(double unix_seconds, char out[RFC3339_LEN])
{
    /* Round to whole milliseconds first so 59.9996 s never prints as
     * ":59.1000". */
    long long ms = (long long)llround(unix_seconds * 1000.0);
    time_t secs = (time_t)(ms / 1000);
    int frac = (int)(ms % 1000);
    if (frac < 0) {
        frac += 1000;
        secs -= 1;
    }
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, RFC3339_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, RFC3339_LEN - n, ".%03dZ", frac);
}

char *base64_encode(const uint8_t *data, size_t len, size_t *out_len)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
        return NULL;
    size_t n = (len + 2) / 3 * 4;
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    char *o = out;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = tab[(v >> 6) & 63];
        *o++ = tab[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)data[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)data[i + 1] << 8;
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < len ? tab[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    *o = '\0';
    if (out_len)
        *out_len = n;
    return out;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

int base64_decode(const char *s, size_t len, size_t max_out, uint8_t **out, size_t *out_len,
                  struct sd_err *err)
{
    *out = NULL;
    *out_len = 0;
    if (len / 4 * 3 > max_out + 3)
        return sd_errf(err, SD_ERR_ARG, "base64 data decodes to more than %zu bytes", max_out);
    uint8_t *buf = malloc(len / 4 * 3 + 3);
    if (!buf)
        return sd_errf(err, SD_ERR_NOMEM, "out of memory decoding base64");
    size_t n = 0, digits = 0, pad = 0;
    uint32_t acc = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
            continue;
        if (c == '=') {
            pad++;
            continue;
        }
        int v = b64_value(c);
        if (v < 0 || pad) {
            free(buf);
            if (pad)
                return sd_errf(err, SD_ERR_FORMAT,
                               "invalid base64: data after '=' padding at offset %zu", i);
            return sd_errf(err, SD_ERR_FORMAT, "invalid base64: character 0x%02x at offset %zu",
                           (unsigned)c, i);
        }
        acc = acc << 6 | (uint32_t)v;
        if (++digits % 4 == 0) {
            buf[n++] = (uint8_t)(acc >> 16);
            buf[n++] = (uint8_t)(acc >> 8);
            buf[n++] = (uint8_t)acc;
            acc = 0;
        }
    }
    size_t tail = digits % 4;
    if (tail == 1 || pad > 2 || (pad && (tail + pad) % 4)) {
        free(buf);
        return sd_errf(err, SD_ERR_FORMAT, "invalid base64: truncated (%zu characters)", digits);
    }
    if (tail == 2) {
        buf[n++] = (uint8_t)(acc >> 4);
    } else if (tail == 3) {
        buf[n++] = (uint8_t)(acc >> 10);
        buf[n++] = (uint8_t)(acc >> 2);
    }
    if (n > max_out) {
        free(buf);
        return sd_errf(err, SD_ERR_ARG, "base64 data decodes to more than %zu bytes", max_out);
    }
    *out = buf;
    *out_len = n;
    return SD_OK;
}

int image_field_decode(const char *s, size_t len, size_t max_out, uint8_t **out,
                       size_t *out_len, struct sd_err *err)
{
    if (len >= 5 && !strncasecmp(s, "data:", 5)) {
        const char *comma = memchr(s, ',', len);
        if (!comma)
            return sd_errf(err, SD_ERR_FORMAT, "a data URL without ','");
        size_t hl = (size_t)(comma - s);
        if (hl < 7 || strncasecmp(comma - 7, ";base64", 7))
            return sd_errf(err, SD_ERR_FORMAT, "a data URL that is not base64-encoded");
        s = comma + 1;
        len -= hl + 1;
    }
    return base64_decode(s, len, max_out, out, out_len, err);
}

size_t utf8_length(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xc0) != 0x80;
    return n;
}

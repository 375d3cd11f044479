/* auth.c - see auth.h. */
#include "server/auth.h"
#include "server/sutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define KEY_MAX 256

struct auth {
    pthread_rwlock_t lock; /* keys and n: read by every request, swapped by auth_reload */
    int n;
    char (*keys)[KEY_MAX + 1];
};

static int add_key(struct auth *a, const char *key, size_t len)
{
    if (a->n % 16 == 0) {
        void *k = realloc(a->keys, (size_t)(a->n + 16) * sizeof *a->keys);
        if (!k)
            return SD_ERR_NOMEM;
        a->keys = k;
    }
    memcpy(a->keys[a->n], key, len);
    a->keys[a->n][len] = '\0';
    a->n++;
    return SD_OK;
}

int auth_load(struct auth **out, const char *path, struct sd_err *err)
{
    *out = NULL;
    FILE *f = fopen(path, "r");
    if (!f)
        return sd_errf(err, SD_ERR_IO, "%s: %s", path, strerror(errno));
    struct auth *a = calloc(1, sizeof *a);
    if (!a || pthread_rwlock_init(&a->lock, NULL)) {
        free(a);
        fclose(f);
        return sd_errf(err, SD_ERR_NOMEM, "%s: out of memory", path);
    }
    char line[4096];
    int lineno = 0, rc = SD_OK;
    while (!rc && fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            rc = sd_errf(err, SD_ERR_FORMAT, "%s:%d: line too long", path, lineno);
            break;
        }
        char *b = line, *e = line + len;
        while (b < e && (*b == ' ' || *b == '\t' || *b == '\r' || *b == '\n'))
            b++;
        while (e > b && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
            e--;
        if (b == e || *b == '#')
            continue;
        size_t klen = (size_t)(e - b);
        for (char *p = b; p < e && !rc; p++)
            if (*p <= ' ' || *p > '~')
                rc = sd_errf(err, SD_ERR_FORMAT,
                             "%s:%d: a key must be visible ASCII without spaces", path, lineno);
        if (!rc && klen > KEY_MAX)
            rc = sd_errf(err, SD_ERR_FORMAT, "%s:%d: key longer than %d characters", path,
                         lineno, KEY_MAX);
        if (!rc && add_key(a, b, klen))
            rc = sd_errf(err, SD_ERR_NOMEM, "%s: out of memory", path);
    }
    if (!rc && ferror(f))
        rc = sd_errf(err, SD_ERR_IO, "%s: read error", path);
    if (!rc && a->n == 0)
        rc = sd_errf(err, SD_ERR_FORMAT, "%s: no keys in the file", path);
    fclose(f);
    if (rc) {
        auth_free(a);
        return rc;
    }
    *out = a;
    return SD_OK;
}

int auth_reload(struct auth *a, const char *path, struct sd_err *err)
{
    struct auth *fresh;
    int rc = auth_load(&fresh, path, err);
    if (rc)
        return rc;
    pthread_rwlock_wrlock(&a->lock);
    char(*old)[KEY_MAX + 1] = a->keys;
    a->keys = fresh->keys;
    a->n = fresh->n;
    pthread_rwlock_unlock(&a->lock);
    fresh->keys = old;
    auth_free(fresh);
    return SD_OK;
}

void auth_free(struct auth *a)
{
    if (!a)
        return;
    pthread_rwlock_destroy(&a->lock);
    free(a->keys);
    free(a);
}

int auth_count(struct auth *a)
{
    if (!a)
        return 0;
    pthread_rwlock_rdlock(&a->lock);
    int n = a->n;
    pthread_rwlock_unlock(&a->lock);
    return n;
}

/* Constant time in the position of the first difference. */
static int same_key(const char *stored, const char *given, size_t glen)
{
    size_t slen = strlen(stored);
    unsigned diff = slen != glen;
    for (size_t i = 0; i < KEY_MAX; i++) {
        unsigned char s = i < slen ? (unsigned char)stored[i] : 0;
        unsigned char g = i < glen ? (unsigned char)given[i] : 0;
        diff |= (unsigned)(s ^ g);
    }
    return diff == 0;
}

/* The credentials after scheme ("Bearer", "Basic") and blanks, trimmed;
 * NULL when header uses another scheme. */
static const char *credentials(const char *header, const char *scheme, size_t *len)
{
    size_t n = strlen(scheme);
    while (*header == ' ' || *header == '\t')
        header++;
    if (strncasecmp(header, scheme, n) || (header[n] != ' ' && header[n] != '\t'))
        return NULL;
    const char *c = header + n;
    while (*c == ' ' || *c == '\t')
        c++;
    *len = strlen(c);
    while (*len > 0 && (c[*len - 1] == ' ' || c[*len - 1] == '\t'))
        (*len)--;
    return c;
}

int auth_check(struct auth *a, const char *header)
{
    if (!a || !header)
        return 0;
    size_t len = 0;
    const char *key = credentials(header, "Bearer", &len);
    char password[KEY_MAX + 1];
    if (!key && (key = credentials(header, "Basic", &len))) {
        /* A1111 clients: base64("user:KEY"); the user name is not checked. */
        uint8_t *plain = NULL;
        size_t plen = 0;
        if (len > 4 * (KEY_MAX + 256) ||
            base64_decode(key, len, KEY_MAX + 256, &plain, &plen, NULL) != SD_OK)
            return 0;
        uint8_t *colon = memchr(plain, ':', plen);
        len = colon ? plen - (size_t)(colon + 1 - plain) : 0;
        if (len <= KEY_MAX)
            memcpy(password, colon + 1, len);
        free(plain);
        key = password;
    }
    if (!key || len == 0 || len > KEY_MAX)
        return 0;
    int ok = 0;
    pthread_rwlock_rdlock(&a->lock);
    for (int i = 0; i < a->n; i++)
        ok |= same_key(a->keys[i], key, len);
    pthread_rwlock_unlock(&a->lock);
    return ok;
}

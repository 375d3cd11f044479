/* sutil.h - small helpers shared by the HTTP service: task ids, clocks,
 * RFC 3339 timestamps, base64, bounded string building.
 *
 * Everything here is pure or thread-safe; nothing allocates except
 * base64_encode (caller frees).
 */
#ifndef SD_SERVER_SUTIL_H
#define SD_SERVER_SUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx" plus NUL. */
#define UUID_STR_LEN 37

/* A random (version 4) UUID in canonical lowercase form, from getrandom(2).
 * Fails only if the kernel has no entropy source to give. */
int uuid4_new(char out[UUID_STR_LEN], struct sd_err *err);

/* 1 if s is a canonical lowercase 8-4-4-4-12 hex UUID (any version). Path
 * parameters are checked with this before they reach the store. */
int uuid_valid(const char *s);

/* Fill buf with n random bytes from getrandom(2). */
int random_bytes(void *buf, size_t n, struct sd_err *err);

/* Wall clock, seconds since the epoch (for stored timestamps). */
double now_unix(void);
/* Monotonic clock, seconds (for durations and timers). */
double now_mono(void);

/* "2025-11-26T13:58:00.123Z" (UTC, milliseconds); 25 bytes with the NUL. */
#define RFC3339_LEN 32
void rfc3339_format(double unix_seconds, char out[RFC3339_LEN]);

/* Standard base64 (RFC 4648, with padding). Returns a malloc'd NUL-terminated
 * string, or NULL when out of memory; *out_len (may be NULL) gets strlen. */
char *base64_encode(const uint8_t *data, size_t len, size_t *out_len);

/* Decode standard base64 (RFC 4648 alphabet; "-" and "_" of the URL-safe
 * one accepted too; ASCII whitespace skipped; padding optional, as
 * browsers' btoa output and Python's b64decode are both met). At most
 * max_out bytes. Returns SD_OK with *out malloc'd (caller frees),
 * SD_ERR_FORMAT with a message naming the first bad character or a
 * truncated final group, SD_ERR_ARG when over max_out, SD_ERR_NOMEM. */
int base64_decode(const char *s, size_t len, size_t max_out, uint8_t **out, size_t *out_len,
                  struct sd_err *err);

/* An image field as clients send it: bare base64, or a data URL
 * ("data:image/png;base64,...."; media type and parameters are not
 * checked, the bytes are). Decodes into *out like base64_decode. A data URL
 * that is not base64-encoded is SD_ERR_FORMAT. */
int image_field_decode(const char *s, size_t len, size_t max_out, uint8_t **out,
                       size_t *out_len, struct sd_err *err);

/* Number of Unicode code points in a valid UTF-8 string of len bytes
 * (counts bytes that do not start with 10xxxxxx). */
size_t utf8_length(const char *s, size_t len);

#endif

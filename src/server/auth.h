/* auth.h - optional API keys ("Authorization: Bearer <key>", or Basic).
 *
 * Keys come from a file: one key per line, surrounding whitespace ignored,
 * blank lines and lines starting with # skipped. A key is 1..256 visible
 * ASCII characters. Loading fails (naming the file and line) on a malformed
 * key or a file with no keys at all, so a typo never opens the service.
 *
 * Comparison takes the same time whichever byte differs, so response timing
 * does not reveal how much of a key was right.
 */
#ifndef SD_SERVER_AUTH_H
#define SD_SERVER_AUTH_H

#include "util/err.h"

struct auth;

int auth_load(struct auth **out, const char *path, struct sd_err *err);
void auth_free(struct auth *a);
int auth_count(struct auth *a);

/* Read the file again and replace the keys (SIGHUP), safe while requests
 * are checked on other threads. On failure the old keys stay in force. */
int auth_reload(struct auth *a, const char *path, struct sd_err *err);

/* 1 when header (the Authorization value, may be NULL) is "Bearer <key>"
 * or "Basic base64(<any user>:<key>)" (A1111 clients) with a known key;
 * the scheme name is case-insensitive. */
int auth_check(struct auth *a, const char *header);

#endif

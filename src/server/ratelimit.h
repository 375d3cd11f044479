/* ratelimit.h - per-client token buckets for submissions.
 *
 * Each client key (its IP address) owns a bucket of `burst` tokens that
 * refills at per_minute/60 tokens a second; a submission takes one token.
 * An empty bucket means 429 with Retry-After = the time until the next
 * token. Buckets that have refilled completely carry no information and
 * are dropped when the table needs room, so memory follows the number of
 * recently active clients (at most 1M buckets, ~80 MB; beyond that new
 * clients are refused until old ones go idle).
 *
 * Thread-safe (one mutex; each call is a hash lookup).
 */
#ifndef SD_SERVER_RATELIMIT_H
#define SD_SERVER_RATELIMIT_H

struct ratelimit;

/* per_minute <= 0 disables limiting (every take succeeds). NULL when out
 * of memory. */
struct ratelimit *ratelimit_new(double per_minute, int burst);
void ratelimit_free(struct ratelimit *rl);

/* Take a token for key at monotonic time now (seconds). Returns 1 when
 * allowed; otherwise 0 and *retry_after (seconds, > 0) says when to retry. */
int ratelimit_take(struct ratelimit *rl, const char *key, double now, double *retry_after);

/* Number of buckets currently tracked (for tests and metrics). */
int ratelimit_size(struct ratelimit *rl);

#endif

/* tokenizer.c - CLIP byte-level BPE, matching transformers' CLIPTokenizer.
 * See tokenizer.h for the pipeline; the comments here say why each step is
 * the way it is. The ground truth is transformers 5.x on top of the
 * tokenizers crate (0.23), checked by tools/gen_tokenizer_ref.py.
 */
#include "model/tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unicase.h>
#include <unictype.h>
#include <uninorm.h>
#include <unistr.h>

/* An added token: cut out of the text before BPE, as one id. `pattern` is
 * what is searched for: the content itself, or for `normalized` tokens the
 * content passed through our normalizer (then matched on normalized text). */
struct added_token {
    char *content;
    char *pattern;
    size_t pattern_len;
    int32_t id;
    bool normalized;
};

/* Open-addressing hash table from token string to id. */
struct vocab_entry {
    uint32_t off, len; /* the string, in `strings` */
    int32_t id;
};

/* Open-addressing hash table from (left id, right id) to merge. */
struct merge_slot {
    uint64_t key;   /* left << 32 | right */
    int32_t rank;   /* -1: empty slot */
    int32_t new_id; /* id of left+right */
};

struct tokenizer {
    char *strings;               /* all vocab strings, back to back */
    struct vocab_entry *entries; /* n_vocab */
    uint32_t *slots;             /* entry index + 1; 0 = empty */
    uint32_t vocab_mask;
    int n_vocab;

    struct merge_slot *merges;
    uint32_t merge_mask;

    int32_t byte_id[256];     /* id of each byte's symbol, -1 if absent */
    int32_t byte_eow_id[256]; /* id of symbol + "</w>", -1 if absent */
    int32_t unk_id;           /* BPE fallback for absent symbols; -1 */

    struct added_token *added;
    int n_added;

    int32_t bos_id, eos_id, pad_id;
    int max_length;
    int n_ids; /* 1 + largest id */
};

static const char EOW[] = "</w>";

/* Ids in files stay below this, so new ids and counts cannot overflow. */
#define MAX_ID (1 << 30)

/* ------------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------- */

static uint64_t hash_bytes(const void *p, size_t n)
{
    const uint8_t *s = p;
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint64_t hash_pair(uint64_t key)
{
    key *= 0x9E3779B97F4A7C15ull;
    return key ^ (key >> 31);
}

static uint32_t table_size(size_t n)
{
    uint32_t size = 16;
    while (size < 2 * n)
        size *= 2;
    return size;
}

static char *path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (p) {
        memcpy(p, dir, a);
        p[a] = '/';
        memcpy(p + a + 1, name, b + 1);
    }
    return p;
}

static bool file_exists(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f)
        fclose(f);
    return f != NULL || errno != ENOENT;
}

/* Load an optional JSON file: *out = NULL when it does not exist. */
static int load_json(const char *dir, const char *name, bool required,
                     json_t **out, struct sd_err *err)
{
    *out = NULL;
    char *path = path_join(dir, name);
    if (!path)
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");
    int rc = SD_OK;
    if (!file_exists(path)) {
        if (required)
            rc = sd_errf(err, SD_ERR_IO, "%s: %s", path, strerror(ENOENT));
        free(path);
        return rc;
    }
    /* Configs may hold model_max_length 1e30 as a 31-digit integer, which
     * jansson only accepts as a real. */
    json_error_t je;
    *out = json_load_file(path, required ? 0 : JSON_DECODE_INT_AS_REAL, &je);
    if (!*out) {
        FILE *f = fopen(path, "rb");
        if (!f)
            rc = sd_errf(err, SD_ERR_IO, "%s: %s", path, strerror(errno));
        else
            rc = sd_errf(err, SD_ERR_FORMAT, "%s: invalid JSON at line %d: %s",
                         path, je.line, je.text);
        if (f)
            fclose(f);
    } else if (!json_is_object(*out)) {
        rc = sd_errf(err, SD_ERR_FORMAT, "%s: not a JSON object", path);
        json_decref(*out);
        *out = NULL;
    }
    free(path);
    return rc;
}

/* ------------------------------------------------------------------------
 * Vocabulary and merges
 * ---------------------------------------------------------------------- */

static int32_t vocab_find(const struct tokenizer *t, const void *s, size_t n)
{
    if (!t->slots)
        return -1;
    for (uint32_t i = hash_bytes(s, n) & t->vocab_mask;; i = (i + 1) & t->vocab_mask) {
        uint32_t slot = t->slots[i];
        if (!slot)
            return -1;
        const struct vocab_entry *e = &t->entries[slot - 1];
        if (e->len == n && !memcmp(t->strings + e->off, s, n))
            return e->id;
    }
}

uint32_t tok_byte_symbol(uint8_t b)
{
    /* Printable Latin-1 stands for itself; the 68 others (controls, space,
     * DEL, NBSP, soft hyphen) take U+0100.. in byte order. */
    if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae)
        return b;
    uint32_t k = 0;
    for (int i = 0; i < b; i++)
        if (!((i >= 0x21 && i <= 0x7e) || (i >= 0xa1 && i <= 0xac) || i >= 0xae))
            k++;
    return 256 + k;
}

static int load_vocab(struct tokenizer *t, const char *dir, struct sd_err *err)
{
    json_t *root;
    int rc = load_json(dir, "vocab.json", true, &root, err);
    if (rc)
        return rc;
    size_t n = json_object_size(root), bytes = 0;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) bytes += strlen(key);
    if (n > INT_MAX / 4 || bytes > UINT32_MAX) {
        json_decref(root);
        return sd_errf(err, SD_ERR_FORMAT, "%s/vocab.json: too large", dir);
    }
    t->vocab_mask = table_size(n) - 1;
    t->strings = malloc(bytes + 1);
    t->entries = malloc((n + 1) * sizeof *t->entries);
    t->slots = calloc((size_t)t->vocab_mask + 1, sizeof *t->slots);
    if (!t->strings || !t->entries || !t->slots) {
        json_decref(root);
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");
    }
    uint32_t off = 0;
    json_object_foreach(root, key, val) {
        json_int_t id = json_is_integer(val) ? json_integer_value(val) : -1;
        if (id < 0 || id >= MAX_ID) {
            rc = sd_errf(err, SD_ERR_FORMAT,
                         "%s/vocab.json: \"%.40s\": id must be an integer in [0, 2^30)",
                         dir, key);
            break;
        }
        size_t len = strlen(key);
        memcpy(t->strings + off, key, len);
        uint32_t i = hash_bytes(key, len) & t->vocab_mask;
        while (t->slots[i])
            i = (i + 1) & t->vocab_mask; /* jansson keys are unique */
        t->entries[t->n_vocab] = (struct vocab_entry){off, (uint32_t)len, (int32_t)id};
        t->slots[i] = (uint32_t)++t->n_vocab;
        off += (uint32_t)len;
        if (id >= t->n_ids)
            t->n_ids = (int)id + 1;
    }
    json_decref(root);
    return rc;
}

/* merges.txt: "#version..." lines are skipped, every other line is "a b"
 * and its rank is its index among those lines (the tokenizers crate's
 * rule). Both parts and their concatenation must be in the vocabulary. */
static int load_merges(struct tokenizer *t, const char *dir, struct sd_err *err)
{
    char *path = path_join(dir, "merges.txt");
    if (!path)
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");
    FILE *f = fopen(path, "rb");
    if (!f) {
        int rc = sd_errf(err, SD_ERR_IO, "%s: %s", path, strerror(errno));
        free(path);
        return rc;
    }
    /* Whole file in memory; the number of lines bounds the table. */
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (cap - len < 65536) {
            cap = cap ? cap * 2 : 1 << 20;
            char *nb = realloc(buf, cap + 1);
            if (!nb) {
                free(buf), fclose(f), free(path);
                return sd_errf(err, SD_ERR_NOMEM, "out of memory");
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    bool read_error = ferror(f);
    fclose(f);
    if (read_error) {
        free(buf);
        int rc = sd_errf(err, SD_ERR_IO, "%s: read error", path);
        free(path);
        return rc;
    }
    buf[len] = 0;
    size_t lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += buf[i] == '\n';
    if (lines > (1u << 26)) {
        free(buf);
        int rc = sd_errf(err, SD_ERR_FORMAT, "%s: too many lines", path);
        free(path);
        return rc;
    }
    t->merge_mask = table_size(lines) - 1;
    t->merges = malloc(((size_t)t->merge_mask + 1) * sizeof *t->merges);
    if (!t->merges) {
        free(buf), free(path);
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i <= t->merge_mask; i++)
        t->merges[i].rank = -1;

    int rc = SD_OK;
    char *cat = malloc(len + 1);
    if (!cat)
        rc = sd_errf(err, SD_ERR_NOMEM, "out of memory");
    size_t rank = 0, line_no = 0;
    for (char *p = buf; rc == SD_OK && p < buf + len;) {
        char *end = memchr(p, '\n', (size_t)(buf + len - p));
        char *next = end ? end + 1 : buf + len;
        if (!end)
            end = buf + len;
        if (end > p && end[-1] == '\r')
            end--;
        line_no++;
        size_t n = (size_t)(end - p);
        if (n >= 8 && !memcmp(p, "#version", 8)) {
            p = next;
            continue;
        }
        char *sp = memchr(p, ' ', n);
        if (!sp || memchr(sp + 1, ' ', (size_t)(end - sp - 1)) || rank >= INT32_MAX) {
            rc = sd_errf(err, SD_ERR_FORMAT, "%s:%zu: expected two symbols separated by one space",
                         path, line_no);
            break;
        }
        size_t na = (size_t)(sp - p), nb = (size_t)(end - sp - 1);
        int32_t a = vocab_find(t, p, na), b = vocab_find(t, sp + 1, nb);
        memcpy(cat, p, na);
        memcpy(cat + na, sp + 1, nb);
        int32_t ab = vocab_find(t, cat, na + nb);
        if (a < 0 || b < 0 || ab < 0) {
            rc = sd_errf(err, SD_ERR_FORMAT, "%s:%zu: merge of tokens not in vocab.json",
                         path, line_no);
            break;
        }
        /* A repeated pair keeps its last rank, as a Rust HashMap collect. */
        uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
        uint32_t i = hash_pair(key) & t->merge_mask;
        while (t->merges[i].rank >= 0 && t->merges[i].key != key)
            i = (i + 1) & t->merge_mask;
        t->merges[i] = (struct merge_slot){key, (int32_t)rank++, ab};
        p = next;
    }
    free(cat), free(buf), free(path);
    return rc;
}

static const struct merge_slot *merge_find(const struct tokenizer *t, int32_t a, int32_t b)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint32_t i = hash_pair(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        const struct merge_slot *m = &t->merges[i];
        if (m->rank < 0)
            return NULL;
        if (m->key == key)
            return m;
    }
}

/* The 256 byte symbols, alone and as the last symbol of a word. */
static void resolve_byte_symbols(struct tokenizer *t)
{
    for (int b = 0; b < 256; b++) {
        uint8_t s[8];
        int n = u8_uctomb(s, tok_byte_symbol((uint8_t)b), 4);
        t->byte_id[b] = vocab_find(t, s, (size_t)n);
        memcpy(s + n, EOW, 4);
        t->byte_eow_id[b] = vocab_find(t, s, (size_t)n + 4);
    }
}

/* ------------------------------------------------------------------------
 * Text: UTF-8 repair, normalization, character classes
 * ---------------------------------------------------------------------- */

/* Growable byte buffer for the text stages. */
struct buf {
    uint8_t *p;
    size_t n, cap;
};

static bool buf_reserve(struct buf *b, size_t extra)
{
    if (b->cap - b->n >= extra)
        return true;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->n < extra)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p)
        return false;
    b->p = p;
    b->cap = cap;
    return true;
}

/* Copy `s` to `out`, each ill-formed part replaced by U+FFFD the way Python
 * decodes with errors="replace": one U+FFFD per maximal subpart of a valid
 * sequence (Unicode 3.9, "U+FFFD substitution of maximal subparts"). */
static bool utf8_repair(const uint8_t *s, size_t n, struct buf *out)
{
    static const uint8_t fffd[3] = {0xef, 0xbf, 0xbd};
    if (!buf_reserve(out, 3 * n + 1))
        return false;
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        int len;
        uint8_t lo = 0x80, hi = 0xbf; /* range of the second byte */
        if (b < 0x80)
            len = 1;
        else if (b >= 0xc2 && b <= 0xdf)
            len = 2;
        else if (b >= 0xe0 && b <= 0xef)
            len = 3, lo = b == 0xe0 ? 0xa0 : 0x80, hi = b == 0xed ? 0x9f : 0xbf;
        else if (b >= 0xf0 && b <= 0xf4)
            len = 4, lo = b == 0xf0 ? 0x90 : 0x80, hi = b == 0xf4 ? 0x8f : 0xbf;
        else
            len = 0;
        /* ok: bytes of a valid prefix (0 for a byte that cannot start one) */
        int ok = len > 0;
        for (int k = 1; k < len && ok == k; k++) {
            uint8_t lo_k = k == 1 ? lo : 0x80, hi_k = k == 1 ? hi : 0xbf;
            if (i + (size_t)k < n && s[i + k] >= lo_k && s[i + k] <= hi_k)
                ok++;
        }
        if (len > 0 && ok == len) {
            memcpy(out->p + out->n, s + i, (size_t)len);
            out->n += (size_t)len;
            i += (size_t)len;
        } else {
            memcpy(out->p + out->n, fffd, 3);
            out->n += 3;
            i += ok > 1 ? (size_t)ok : 1;
        }
    }
    return true;
}

/* transformers' CLIP normalizer: NFC, then every run of White_Space
 * becomes one space, then lowercase. The lowercase is the tokenizers
 * crate's: Rust's char::to_lowercase per character, i.e. the full mapping
 * without context (no Final_Sigma: Σ is always σ). The only full mapping
 * longer than the simple one is U+0130 İ -> i + U+0307. Appends to `out`. */
static bool normalize(const uint8_t *s, size_t n, struct buf *out)
{
    if (n == 0)
        return true;
    size_t nn = 0;
    uint8_t *nfc = u8_normalize(UNINORM_NFC, s, n, NULL, &nn);
    if (!nfc)
        return false;
    /* Lowercasing grows a character by at most 1.5x (2 -> 3 bytes). */
    if (!buf_reserve(out, 2 * nn + 4)) {
        free(nfc);
        return false;
    }
    bool in_space = false;
    for (size_t i = 0; i < nn;) {
        ucs4_t c;
        i += (size_t)u8_mbtouc_unsafe(&c, nfc + i, nn - i);
        if (uc_is_property_white_space(c)) {
            if (!in_space)
                out->p[out->n++] = ' ';
            in_space = true;
            continue;
        }
        in_space = false;
        if (c == 0x130) {
            out->p[out->n++] = 'i';
            c = 0x307;
        } else {
            c = uc_tolower(c);
        }
        out->n += (size_t)u8_uctomb(out->p + out->n, c, 4);
    }
    free(nfc);
    return true;
}

enum char_class { CC_SPACE, CC_LETTER, CC_NUMBER, CC_OTHER };

/* The classes of CLIP's pattern: \s, \p{L}, \p{N}, and the rest. */
static enum char_class char_class(ucs4_t c)
{
    if (c < 0x80) { /* fast path, same answers */
        if (c == ' ' || (c >= 0x09 && c <= 0x0d))
            return CC_SPACE;
        if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
            return CC_LETTER;
        return c >= '0' && c <= '9' ? CC_NUMBER : CC_OTHER;
    }
    if (uc_is_property_white_space(c))
        return CC_SPACE;
    if (uc_is_general_category(c, UC_CATEGORY_L))
        return CC_LETTER;
    if (uc_is_general_category(c, UC_CATEGORY_N))
        return CC_NUMBER;
    return CC_OTHER;
}

/* ------------------------------------------------------------------------
 * BPE
 * ---------------------------------------------------------------------- */

/* One encode call's state and scratch (the tokenizer itself is const). */
struct enc {
    const struct tokenizer *t;
    int32_t *ids; /* output, first `cap` ids */
    int cap;
    int count; /* all ids so far, also past cap */
    struct sd_err *err;

    /* BPE scratch for one word of up to `scratch_cap` symbols */
    size_t scratch_cap;
    int32_t *sym, *prev, *next;
    struct heap_ent {
        int32_t rank, pos, new_id;
    } *heap;
    size_t heap_n;
};

static void emit(struct enc *e, int32_t id)
{
    if (e->count < e->cap)
        e->ids[e->count] = id;
    if (e->count < INT_MAX)
        e->count++;
}

static bool heap_less(const struct heap_ent *a, const struct heap_ent *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(struct enc *e, int32_t rank, int32_t pos, int32_t new_id)
{
    struct heap_ent *h = e->heap;
    size_t i = e->heap_n++;
    h[i] = (struct heap_ent){rank, pos, new_id};
    while (i > 0 && heap_less(&h[i], &h[(i - 1) / 2])) {
        struct heap_ent tmp = h[i];
        h[i] = h[(i - 1) / 2];
        h[(i - 1) / 2] = tmp;
        i = (i - 1) / 2;
    }
}

static struct heap_ent heap_pop(struct enc *e)
{
    struct heap_ent *h = e->heap, top = h[0];
    h[0] = h[--e->heap_n];
    for (size_t i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < e->heap_n && heap_less(&h[l], &h[m]))
            m = l;
        if (r < e->heap_n && heap_less(&h[r], &h[m]))
            m = r;
        if (m == i)
            break;
        struct heap_ent tmp = h[i];
        h[i] = h[m];
        h[m] = tmp;
        i = m;
    }
    return top;
}

static bool scratch_reserve(struct enc *e, size_t n)
{
    if (n <= e->scratch_cap)
        return true;
    size_t cap = e->scratch_cap ? e->scratch_cap : 64;
    while (cap < n)
        cap *= 2;
    free(e->sym), free(e->prev), free(e->next), free(e->heap);
    e->sym = malloc(cap * sizeof *e->sym);
    e->prev = malloc(cap * sizeof *e->prev);
    e->next = malloc(cap * sizeof *e->next);
    /* n-1 initial pairs plus at most two new pairs per merge */
    e->heap = malloc(3 * cap * sizeof *e->heap);
    e->scratch_cap = e->sym && e->prev && e->next && e->heap ? cap : 0;
    return e->scratch_cap != 0;
}

/* BPE one pre-tokenized word (its UTF-8 bytes). Each byte is one symbol,
 * the last with "</w>"; a symbol missing from a custom vocab becomes unk,
 * one per byte (fuse_unk false). Then, like the tokenizers crate's
 * Word::merge_all, repeatedly merge the adjacent pair of lowest rank,
 * leftmost on ties, using a heap with lazily discarded stale entries. */
static int bpe_word(struct enc *e, const uint8_t *s, size_t n)
{
    const struct tokenizer *t = e->t;
    if (n == 0)
        return SD_OK;
    if (n > INT32_MAX / 4 || !scratch_reserve(e, n))
        return sd_errf(e->err, SD_ERR_NOMEM, "out of memory");
    int32_t *sym = e->sym, *prev = e->prev, *next = e->next;
    for (size_t i = 0; i < n; i++) {
        int32_t id = i + 1 == n ? t->byte_eow_id[s[i]] : t->byte_id[s[i]];
        if (id < 0)
            id = t->unk_id;
        if (id < 0)
            return sd_errf(e->err, SD_ERR_FORMAT,
                           "vocab.json has no symbol for byte 0x%02x and no unk token", s[i]);
        sym[i] = id;
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 == n ? -1 : (int32_t)i + 1;
    }
    e->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        const struct merge_slot *m = merge_find(t, sym[i], sym[i + 1]);
        if (m)
            heap_push(e, m->rank, (int32_t)i, m->new_id);
    }
    while (e->heap_n) {
        struct heap_ent top = heap_pop(e);
        int32_t pos = top.pos, right = next[pos];
        /* stale: symbol merged away (sym -1), at the end, or pair changed */
        if (sym[pos] < 0 || right < 0)
            continue;
        const struct merge_slot *m = merge_find(t, sym[pos], sym[right]);
        if (!m || m->new_id != top.new_id)
            continue;
        sym[pos] = top.new_id;
        sym[right] = -1;
        next[pos] = next[right];
        if (next[pos] >= 0)
            prev[next[pos]] = pos;
        if (prev[pos] >= 0 && (m = merge_find(t, sym[prev[pos]], sym[pos])))
            heap_push(e, m->rank, prev[pos], m->new_id);
        if (next[pos] >= 0 && (m = merge_find(t, sym[pos], sym[next[pos]])))
            heap_push(e, m->rank, pos, m->new_id);
    }
    for (int32_t i = 0; i >= 0; i = next[i])
        emit(e, sym[i]);
    return SD_OK;
}

/* ------------------------------------------------------------------------
 * Pre-tokenization and the encode pipeline
 * ---------------------------------------------------------------------- */

/* Length of a contraction ('s 't 're 've 'm 'll 'd) at s, or 0. */
static size_t contraction_len(const uint8_t *s, size_t n)
{
    static const char *const forms[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    for (size_t k = 0; k < sizeof forms / sizeof forms[0]; k++) {
        size_t len = strlen(forms[k]);
        if (len <= n && !memcmp(s, forms[k], len))
            return len;
    }
    return 0;
}

/* Split a normalized piece by CLIP's pattern and BPE each match. */
static int pretokenize(struct enc *e, const uint8_t *s, size_t n)
{
    static const char *const literals[] = {"<|startoftext|>", "<|endoftext|>"};
    int rc = SD_OK;
    for (size_t i = 0; i < n && rc == SD_OK;) {
        ucs4_t c;
        size_t l = (size_t)u8_mbtouc_unsafe(&c, s + i, n - i), m = 0;
        enum char_class cls = char_class(c);
        if (cls == CC_SPACE) {
            i += l;
            continue;
        }
        /* The literals come first in the pattern. The byte-level
         * pre-tokenizer's own GPT-2 pattern then splits such a match into
         * "<|", the word and "|>"; every other match it leaves whole. */
        for (int k = 0; k < 2 && c == '<'; k++) {
            size_t len = strlen(literals[k]);
            if (len <= n - i && !memcmp(s + i, literals[k], len)) {
                rc = bpe_word(e, s + i, 2);
                if (!rc)
                    rc = bpe_word(e, s + i + 2, len - 4);
                if (!rc)
                    rc = bpe_word(e, s + i + len - 2, 2);
                m = len;
                break;
            }
        }
        if (m) {
            i += m;
            continue;
        }
        if (c == '\'' && (m = contraction_len(s + i, n - i))) {
            /* the contractions are tried before the other alternatives */
        } else if (cls == CC_NUMBER) {
            m = l; /* [\p{N}]: one character at a time */
        } else {
            /* [\p{L}]+ or [^\s\p{L}\p{N}]+: a run of the same class */
            m = l;
            while (i + m < n) {
                ucs4_t d;
                int dl = u8_mbtouc_unsafe(&d, s + i + m, n - i - m);
                if (char_class(d) != cls)
                    break;
                m += (size_t)dl;
            }
        }
        rc = bpe_word(e, s + i, m);
        i += m;
    }
    return rc;
}

/* Cut the added tokens of one kind (normalized or not) out of `s`,
 * leftmost-longest like the tokenizers crate's Aho-Corasick; the text
 * between them goes to `rest`. */
static int split_added(struct enc *e, const uint8_t *s, size_t n, bool normalized,
                       int (*rest)(struct enc *, const uint8_t *, size_t))
{
    const struct tokenizer *t = e->t;
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        const struct added_token *best = NULL;
        for (int k = 0; k < t->n_added; k++) {
            const struct added_token *a = &t->added[k];
            if (a->normalized != normalized || !a->pattern_len || a->pattern[0] != (char)s[i] ||
                a->pattern_len > n - i || memcmp(s + i, a->pattern, a->pattern_len))
                continue;
            if (!best || a->pattern_len > best->pattern_len)
                best = a;
        }
        if (!best)
            continue;
        int rc = i > start ? rest(e, s + start, i - start) : SD_OK;
        if (rc)
            return rc;
        emit(e, best->id);
        i += best->pattern_len - 1;
        start = i + 1;
    }
    return n > start ? rest(e, s + start, n - start) : SD_OK;
}

static int encode_normalized(struct enc *e, const uint8_t *s, size_t n)
{
    return split_added(e, s, n, true, pretokenize);
}

static int encode_raw_segment(struct enc *e, const uint8_t *s, size_t n)
{
    struct buf norm = {0};
    if (!normalize(s, n, &norm)) {
        free(norm.p);
        return sd_errf(e->err, SD_ERR_NOMEM, "out of memory");
    }
    int rc = encode_normalized(e, norm.p, norm.n);
    free(norm.p);
    return rc;
}

int tok_tokenize(const struct tokenizer *t, const char *text, int32_t *ids,
                 int cap, int *n, struct sd_err *err)
{
    SD_ASSERT(t && text && n && cap >= 0 && (ids || cap == 0));
    *n = 0;
    size_t len = strlen(text);
    if (len > TOK_MAX_TEXT)
        return sd_errf(err, SD_ERR_ARG, "prompt too long (%zu bytes, limit %d)", len,
                       TOK_MAX_TEXT);
    struct buf clean = {0};
    if (!utf8_repair((const uint8_t *)text, len, &clean)) {
        free(clean.p);
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");
    }
    struct enc e = {.t = t, .ids = ids, .cap = cap, .err = err};
    int rc = split_added(&e, clean.p, clean.n, false, encode_raw_segment);
    free(clean.p);
    free(e.sym), free(e.prev), free(e.next), free(e.heap);
    if (rc == SD_OK)
        *n = e.count;
    return rc;
}

int tok_encode(const struct tokenizer *t, const char *text, int32_t *ids,
               int max_len, int *n_prompt_tokens, struct sd_err *err)
{
    SD_ASSERT(t && text && ids);
    if (n_prompt_tokens)
        *n_prompt_tokens = 0;
    if (max_len < 2)
        return sd_errf(err, SD_ERR_ARG, "max_len %d: need room for bos and eos", max_len);
    int n;
    int rc = tok_tokenize(t, text, ids + 1, max_len - 2, &n, err);
    if (rc)
        return rc;
    int kept = n < max_len - 2 ? n : max_len - 2;
    ids[0] = t->bos_id;
    ids[kept + 1] = t->eos_id;
    for (int i = kept + 2; i < max_len; i++)
        ids[i] = t->pad_id;
    if (n_prompt_tokens)
        *n_prompt_tokens = n;
    return SD_OK;
}

/* ------------------------------------------------------------------------
 * Special and added tokens
 *
 * transformers 5 builds the added-token list like this (from_pretrained,
 * TokenizersBackend.__init__), and we follow it because it decides which
 * tokens are cut out of prompts and whether case matters for them:
 *
 *  - If tokenizer_config.json has "added_tokens_decoder", those tokens come
 *    first (by id) and special_tokens_map.json is not read at all.
 *    Otherwise special_tokens_map.json overrides tokenizer_config.json key
 *    by key, and added_tokens.json (if any) supplies the first tokens.
 *  - Then bos, eos, unk, sep, pad, cls, mask (CLIPTokenizer's defaults for
 *    the first four when absent) and the additional special tokens are
 *    appended, each unless its string is already among the first tokens or
 *    an identical token (all flags equal) is already in the list.
 *  - The list is added in order; a token whose string was added before
 *    takes the new flags: the last variant of a string decides whether it
 *    is `normalized`. A plain string is a special, non-normalized token; an
 *    object's "normalized" defaults to !special.
 *
 * E.g. SD 1.x: eos/unk objects say normalized but the pad string comes
 * last, so <|endoftext|> is matched case-sensitively on the raw text while
 * <|startoftext|> is matched after lowercasing. SD 2.x: pad "!" makes "!"
 * an added token.
 * ---------------------------------------------------------------------- */

struct tok_spec {
    const char *content; /* borrowed from the JSON documents */
    bool normalized, special, lstrip, rstrip, single_word;
    int64_t decoder_id; /* id stated by added_tokens_decoder / .json, or -1 */
};

#define MAX_SPECS 4096

static bool spec_equal(const struct tok_spec *a, const struct tok_spec *b)
{
    return !strcmp(a->content, b->content) && a->normalized == b->normalized &&
           a->special == b->special && a->lstrip == b->lstrip && a->rstrip == b->rstrip &&
           a->single_word == b->single_word;
}

static int get_flag(json_t *obj, const char *name, bool dflt, bool *out, const char *file,
                    const char *key, struct sd_err *err)
{
    json_t *v = json_object_get(obj, name);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return SD_OK;
    }
    if (!json_is_boolean(v))
        return sd_errf(err, SD_ERR_FORMAT, "%s: %s.%s must be true or false", file, key, name);
    *out = json_is_true(v);
    return SD_OK;
}

/* A token given as "text" or {"content": "text", ...}. Tokens from
 * special_tokens_map.json are always special (transformers forces it). */
static int parse_spec(json_t *v, bool force_special, const char *file, const char *key,
                      struct tok_spec *out, struct sd_err *err)
{
    *out = (struct tok_spec){.special = true, .decoder_id = -1};
    if (json_is_string(v)) {
        out->content = json_string_value(v);
        return SD_OK;
    }
    json_t *content = json_is_object(v) ? json_object_get(v, "content") : NULL;
    if (!json_is_string(content))
        return sd_errf(err, SD_ERR_FORMAT,
                       "%s: %s must be a string or an object with a \"content\" string", file,
                       key);
    out->content = json_string_value(content);
    int rc = SD_OK;
    if (!force_special)
        rc = get_flag(v, "special", false, &out->special, file, key, err);
    if (!rc)
        rc = get_flag(v, "normalized", !out->special, &out->normalized, file, key, err);
    if (!rc)
        rc = get_flag(v, "lstrip", false, &out->lstrip, file, key, err);
    if (!rc)
        rc = get_flag(v, "rstrip", false, &out->rstrip, file, key, err);
    if (!rc)
        rc = get_flag(v, "single_word", false, &out->single_word, file, key, err);
    return rc;
}

static int cmp_spec_id(const void *a, const void *b)
{
    int64_t x = ((const struct tok_spec *)a)->decoder_id;
    int64_t y = ((const struct tok_spec *)b)->decoder_id;
    return (x > y) - (x < y);
}

/* Everything tok_load needs from the three optional JSON files. */
struct token_config {
    json_t *cfg, *stm, *added_json; /* any may be NULL */
    const char *dir;
    char cfg_name[4200], stm_name[4200], added_name[4200]; /* paths */
    struct tok_spec list[MAX_SPECS];
    int n;
    int n_first;           /* list[0..n_first) came from the decoder */
    struct tok_spec named[7]; /* bos eos unk sep pad cls mask */
    bool has_named[7];
};

static const char *const NAMED_KEYS[7] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                          "pad_token", "cls_token", "mask_token"};

static int append_spec(struct token_config *c, const struct tok_spec *s, struct sd_err *err)
{
    if (c->n == MAX_SPECS)
        return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: more than %d added tokens", c->dir,
                       MAX_SPECS);
    c->list[c->n++] = *s;
    return SD_OK;
}

/* Append unless the string is among the decoder's tokens or an identical
 * token is already listed (TokenizersBackend.__init__). */
static int offer_spec(struct token_config *c, const struct tok_spec *s, struct sd_err *err)
{
    for (int i = 0; i < c->n; i++)
        if ((i < c->n_first && !strcmp(c->list[i].content, s->content)) ||
            spec_equal(&c->list[i], s))
            return SD_OK;
    return append_spec(c, s, err);
}

static int resolve_named(struct token_config *c, bool legacy, struct sd_err *err)
{
    static const char *const defaults[7] = {"<|startoftext|>", "<|endoftext|>",
                                             "<|endoftext|>", NULL, "<|endoftext|>"};
    for (int k = 0; k < 7; k++) {
        json_t *v = legacy && c->stm ? json_object_get(c->stm, NAMED_KEYS[k]) : NULL;
        const char *file = c->stm_name;
        bool from_stm = v != NULL;
        if (!v && c->cfg) {
            v = json_object_get(c->cfg, NAMED_KEYS[k]);
            file = c->cfg_name;
        }
        c->has_named[k] = false;
        if (!v) {
            if (defaults[k]) {
                c->named[k] = (struct tok_spec){defaults[k], false, true, false, false, false, -1};
                c->has_named[k] = true;
            }
            continue;
        }
        if (json_is_null(v))
            continue;
        int rc = parse_spec(v, from_stm, file, NAMED_KEYS[k], &c->named[k], err);
        if (rc)
            return rc;
        c->has_named[k] = true;
    }
    return SD_OK;
}

/* additional_special_tokens (or extra_special_tokens): a list, from
 * special_tokens_map.json first when that file is read. */
static json_t *extra_list(const struct token_config *c, bool legacy, const char **file)
{
    json_t *docs[2] = {legacy ? c->stm : NULL, c->cfg};
    const char *names[2] = {c->stm_name, c->cfg_name};
    for (int d = 0; d < 2; d++)
        for (int k = 0; k < 2 && docs[d]; k++) {
            json_t *v = json_object_get(docs[d], k ? "additional_special_tokens"
                                                   : "extra_special_tokens");
            if (json_is_array(v)) {
                *file = names[d];
                return v;
            }
        }
    return NULL;
}

static bool is_named_or_extra(const struct token_config *c, json_t *extras, const char *s)
{
    for (int k = 0; k < 7; k++)
        if (c->has_named[k] && !strcmp(c->named[k].content, s))
            return true;
    size_t i;
    json_t *v;
    json_array_foreach(extras, i, v) {
        json_t *str = json_is_object(v) ? json_object_get(v, "content") : v;
        if (json_is_string(str) && !strcmp(json_string_value(str), s))
            return true;
    }
    return false;
}

/* The first tokens: added_tokens_decoder, or legacy added_tokens.json. */
static int collect_first(struct token_config *c, json_t *extras, struct sd_err *err)
{
    json_t *dec = c->cfg ? json_object_get(c->cfg, "added_tokens_decoder") : NULL;
    const char *key;
    json_t *v;
    if (dec) {
        if (!json_is_object(dec))
            return sd_errf(err, SD_ERR_FORMAT, "%s: added_tokens_decoder must be an object",
                           c->cfg_name);
        json_object_foreach(dec, key, v) {
            char *end;
            errno = 0;
            long long id = strtoll(key, &end, 10);
            if (end == key || *end || errno || id < 0 || id >= MAX_ID)
                return sd_errf(err, SD_ERR_FORMAT,
                               "%s: added_tokens_decoder key \"%.20s\" is not an id",
                               c->cfg_name, key);
            struct tok_spec s;
            int rc = parse_spec(v, false, c->cfg_name, "added_tokens_decoder entry", &s, err);
            if (!rc && !json_is_object(v))
                rc = sd_errf(err, SD_ERR_FORMAT, "%s: added_tokens_decoder entries must be objects",
                             c->cfg_name);
            if (!rc) {
                s.decoder_id = id;
                rc = append_spec(c, &s, err);
            }
            if (rc)
                return rc;
        }
    } else if (c->added_json) {
        json_object_foreach(c->added_json, key, v) {
            double x = json_is_number(v) ? json_number_value(v) : -1;
            int64_t id = x >= 0 && x < MAX_ID ? (int64_t)x : -1;
            if (id < 0 || (double)id != x)
                return sd_errf(err, SD_ERR_FORMAT, "%s: \"%.40s\": id must be an integer",
                               c->added_name, key);
            bool special = is_named_or_extra(c, extras, key);
            struct tok_spec s = {key, !special, special, false, false, false, id};
            int rc = append_spec(c, &s, err);
            if (rc)
                return rc;
        }
    }
    qsort(c->list, (size_t)c->n, sizeof c->list[0], cmp_spec_id);
    c->n_first = c->n;
    return SD_OK;
}

static int build_token_list(struct token_config *c, struct sd_err *err)
{
    bool legacy = !(c->cfg && json_object_get(c->cfg, "added_tokens_decoder"));
    int rc = resolve_named(c, legacy, err);
    const char *extras_file = NULL;
    json_t *extras = extra_list(c, legacy, &extras_file);
    if (!rc)
        rc = collect_first(c, extras, err);
    for (int k = 0; k < 7 && !rc; k++)
        if (c->has_named[k])
            rc = offer_spec(c, &c->named[k], err);
    size_t i;
    json_t *v;
    json_array_foreach(extras, i, v) {
        struct tok_spec s;
        if (!rc)
            rc = parse_spec(v, true, extras_file, "additional_special_tokens entry", &s, err);
        if (!rc)
            rc = offer_spec(c, &s, err);
    }
    return rc;
}

/* Add the listed tokens to t->added (ids as the tokenizers crate gives
 * them: the vocab's id, else the next free id), last flags winning. */
static int add_tokens(struct tokenizer *t, const struct token_config *c, struct sd_err *err)
{
    t->added = calloc((size_t)c->n + 1, sizeof *t->added);
    if (!t->added)
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");
    for (int i = 0; i < c->n; i++) {
        const struct tok_spec *s = &c->list[i];
        if (!*s->content)
            continue;
        if (s->lstrip || s->rstrip || s->single_word)
            return sd_errf(err, SD_ERR_UNSUPPORTED,
                           "%s: added token \"%.40s\": lstrip/rstrip/single_word not supported",
                           c->dir, s->content);
        struct added_token *a = NULL;
        int32_t max_added = -1;
        for (int k = 0; k < t->n_added; k++) {
            if (!strcmp(t->added[k].content, s->content))
                a = &t->added[k];
            if (t->added[k].id > max_added)
                max_added = t->added[k].id;
        }
        if (!a) {
            int32_t id = vocab_find(t, s->content, strlen(s->content));
            if (id < 0)
                id = max_added < 0 ? t->n_vocab
                     : max_added >= t->n_vocab || t->n_vocab == 0 ? max_added + 1
                                                                  : t->n_vocab;
            a = &t->added[t->n_added++];
            a->id = id;
            if (!(a->content = strdup(s->content)))
                return sd_errf(err, SD_ERR_NOMEM, "out of memory");
            if (id >= t->n_ids)
                t->n_ids = id + 1;
        }
        if (s->decoder_id >= 0 && s->decoder_id != a->id)
            return sd_errf(err, SD_ERR_FORMAT,
                           "%s: added token \"%.40s\" is listed as id %lld but gets id %d",
                           c->dir, s->content, (long long)s->decoder_id, (int)a->id);
        a->normalized = s->normalized;
    }
    /* Patterns: normalized tokens are searched for in normalized form. */
    for (int k = 0; k < t->n_added; k++) {
        struct added_token *a = &t->added[k];
        struct buf b = {0};
        size_t len = strlen(a->content);
        bool ok;
        if (a->normalized) {
            ok = normalize((const uint8_t *)a->content, len, &b);
        } else if ((ok = buf_reserve(&b, len))) {
            memcpy(b.p, a->content, len);
            b.n = len;
        }
        if (!ok || !buf_reserve(&b, 1)) {
            free(b.p);
            return sd_errf(err, SD_ERR_NOMEM, "out of memory");
        }
        b.p[b.n] = 0;
        a->pattern = (char *)b.p;
        a->pattern_len = b.n;
    }
    return SD_OK;
}

static int32_t added_id(const struct tokenizer *t, const struct tok_spec *s)
{
    for (int k = 0; k < t->n_added; k++)
        if (!strcmp(t->added[k].content, s->content))
            return t->added[k].id;
    return -1;
}

static int read_max_length(struct tokenizer *t, const struct token_config *c,
                           struct sd_err *err)
{
    /* Absent means "no limit" to transformers (1e30), as does a huge value;
     * for CLIP that is 77, its number of position embeddings. */
    t->max_length = 77;
    json_t *v = c->cfg ? json_object_get(c->cfg, "model_max_length") : NULL;
    if (!v || json_is_null(v))
        return SD_OK;
    double x = json_is_number(v) ? json_number_value(v) : NAN;
    if (!(x >= 2) || x != floor(x))
        return sd_errf(err, SD_ERR_FORMAT, "%s: model_max_length must be an integer >= 2",
                       c->cfg_name);
    if (x <= 1e6)
        t->max_length = (int)x;
    return SD_OK;
}

static int load_special_tokens(struct tokenizer *t, const char *dir, struct sd_err *err)
{
    struct token_config *c = calloc(1, sizeof *c);
    if (!c)
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");
    c->dir = dir;
    snprintf(c->cfg_name, sizeof c->cfg_name, "%s/tokenizer_config.json", dir);
    snprintf(c->stm_name, sizeof c->stm_name, "%s/special_tokens_map.json", dir);
    snprintf(c->added_name, sizeof c->added_name, "%s/added_tokens.json", dir);
    int rc = load_json(dir, "tokenizer_config.json", false, &c->cfg, err);
    if (!rc)
        rc = load_json(dir, "special_tokens_map.json", false, &c->stm, err);
    if (!rc)
        rc = load_json(dir, "added_tokens.json", false, &c->added_json, err);
    if (!rc)
        rc = read_max_length(t, c, err);
    if (!rc)
        rc = build_token_list(c, err);
    if (!rc)
        rc = add_tokens(t, c, err);
    if (!rc) {
        static const char *const required[3] = {"bos_token", "eos_token", "pad_token"};
        const int idx[3] = {0, 1, 4};
        int32_t *ids[3] = {&t->bos_id, &t->eos_id, &t->pad_id};
        for (int k = 0; k < 3 && !rc; k++) {
            if (!c->has_named[idx[k]])
                rc = sd_errf(err, SD_ERR_UNSUPPORTED, "%s: %s is null", dir, required[k]);
            else
                *ids[k] = added_id(t, &c->named[idx[k]]);
        }
        const char *unk = c->has_named[2] ? c->named[2].content : NULL;
        t->unk_id = unk ? vocab_find(t, unk, strlen(unk)) : -1;
    }
    json_decref(c->cfg);
    json_decref(c->stm);
    json_decref(c->added_json);
    free(c);
    return rc;
}

/* ------------------------------------------------------------------------
 * Public
 * ---------------------------------------------------------------------- */

int tok_load(struct tokenizer **out, const char *dir, struct sd_err *err)
{
    SD_ASSERT(out && dir);
    *out = NULL;
    struct tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");
    int rc = load_vocab(t, dir, err);
    if (!rc)
        rc = load_merges(t, dir, err);
    if (!rc) {
        resolve_byte_symbols(t);
        rc = load_special_tokens(t, dir, err);
    }
    if (rc) {
        tok_free(t);
        return rc;
    }
    *out = t;
    return SD_OK;
}

void tok_free(struct tokenizer *t)
{
    if (!t)
        return;
    for (int k = 0; k < t->n_added; k++) {
        free(t->added[k].content);
        free(t->added[k].pattern);
    }
    free(t->added);
    free(t->strings);
    free(t->entries);
    free(t->slots);
    free(t->merges);
    free(t);
}

int tok_max_length(const struct tokenizer *t) { return t->max_length; }
int tok_pad_id(const struct tokenizer *t) { return t->pad_id; }
int tok_bos_id(const struct tokenizer *t) { return t->bos_id; }
int tok_eos_id(const struct tokenizer *t) { return t->eos_id; }
int tok_vocab_size(const struct tokenizer *t) { return t->n_ids; }

int tok_token_id(const struct tokenizer *t, const char *token)
{
    for (int k = 0; k < t->n_added; k++)
        if (!strcmp(t->added[k].content, token))
            return t->added[k].id;
    return vocab_find(t, token, strlen(token));
}

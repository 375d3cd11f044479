/* test_tokenizer.c - the CLIP tokenizer against transformers' ids.
 *
 * tests/data/tokenizer_ref.json comes from tools/gen_tokenizer_ref.py;
 * data/tokenizers/clip from tools/make_clip_vocab.py. Config variants are
 * written to a temporary folder beside links to the shared vocab files.
 * Opt-in: TOKENIZER_CODEPOINTS=/tmp/cp.tsv (gen_tokenizer_ref.py
 * --codepoints) compares every Unicode code point.
 */
#include "model/tokenizer.h"
#include "test.h"

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unictype.h>
#include <unistd.h>
#include <unistr.h>

#define VOCAB_DIR "data/tokenizers/clip"
#define REF_PATH "tests/data/tokenizer_ref.json"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static struct tokenizer *load_sd1(void)
{
    struct tokenizer *t = NULL;
    struct sd_err err = {0};
    int rc = tok_load(&t, VOCAB_DIR, &err);
    CHECK_MSG(rc == SD_OK, "%s", err.msg);
    return t;
}

/* ---- temporary tokenizer folders ---- */

struct tmp_dir {
    char path[64];
    char names[8][64];
    int n;
};

static void tmp_write(struct tmp_dir *d, const char *name, const char *text)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", d->path, name);
    FILE *f = fopen(p, "wb");
    CHECK(f != NULL);
    if (!f)
        return;
    fputs(text, f);
    fclose(f);
    snprintf(d->names[d->n++], sizeof d->names[0], "%s", name);
}

static void tmp_link_vocab(struct tmp_dir *d)
{
    const char *files[2] = {"vocab.json", "merges.txt"};
    for (int i = 0; i < 2; i++) {
        char src[PATH_MAX], rel[128], dst[256];
        snprintf(rel, sizeof rel, VOCAB_DIR "/%s", files[i]);
        CHECK(realpath(rel, src) != NULL);
        snprintf(dst, sizeof dst, "%s/%s", d->path, files[i]);
        CHECK(symlink(src, dst) == 0);
        snprintf(d->names[d->n++], sizeof d->names[0], "%s", files[i]);
    }
}

static void tmp_open(struct tmp_dir *d)
{
    memset(d, 0, sizeof *d);
    snprintf(d->path, sizeof d->path, "/tmp/tok_test_XXXXXX");
    CHECK(mkdtemp(d->path) != NULL);
}

static void tmp_close(struct tmp_dir *d)
{
    for (int i = 0; i < d->n; i++) {
        char p[256];
        snprintf(p, sizeof p, "%s/%s", d->path, d->names[i]);
        unlink(p);
    }
    rmdir(d->path);
}

/* Load the folder described by a "configs" entry's "files". */
static struct tokenizer *load_config(json_t *files, struct tmp_dir *d)
{
    tmp_open(d);
    tmp_link_vocab(d);
    const char *name;
    json_t *text;
    json_object_foreach(files, name, text) tmp_write(d, name, json_string_value(text));
    struct tokenizer *t = NULL;
    struct sd_err err = {0};
    int rc = tok_load(&t, d->path, &err);
    CHECK_MSG(rc == SD_OK, "%s", err.msg);
    return t;
}

static json_t *load_ref(void)
{
    json_error_t je;
    json_t *ref = json_load_file(REF_PATH, 0, &je);
    CHECK_MSG(ref != NULL, "%s: %s", REF_PATH, je.text);
    return ref;
}

static json_t *ref_config(json_t *ref, const char *name)
{
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(ref, "configs"), i, c)
        if (!strcmp(json_string_value(json_object_get(c, "name")), name))
            return c;
    return NULL;
}

/* Compare tok_encode's ids with a JSON list; prints the first difference. */
static int check_ids(const struct tokenizer *t, const char *text, json_t *want,
                     const char *what, int *n_tokens)
{
    int n = (int)json_array_size(want);
    int32_t ids[512];
    struct sd_err err = {0};
    if (n < 2 || n > 512)
        return 0;
    int rc = tok_encode(t, text, ids, n, n_tokens, &err);
    CHECK_MSG(rc == SD_OK, "%s", err.msg);
    for (int i = 0; i < n && rc == SD_OK; i++) {
        json_int_t w = json_integer_value(json_array_get(want, (size_t)i));
        if (ids[i] != w) {
            fprintf(stderr, "  %s: \"%.60s\": id[%d] %d, transformers %lld\n", what, text, i,
                    (int)ids[i], (long long)w);
            return 0;
        }
    }
    return rc == SD_OK;
}

static char *hex_decode(const char *hex)
{
    size_t n = strlen(hex) / 2;
    char *s = malloc(n + 1);
    for (size_t i = 0; s && i < n; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        s[i] = (char)v;
    }
    if (s)
        s[n] = 0;
    return s;
}

/* ---- pieces ---- */

TEST(tokenizer_bytes_to_unicode)
{
    CHECK_EQ_INT(tok_byte_symbol('!'), '!');
    CHECK_EQ_INT(tok_byte_symbol('~'), '~');
    CHECK_EQ_INT(tok_byte_symbol(0xa1), 0xa1);
    CHECK_EQ_INT(tok_byte_symbol(0xff), 0xff);
    CHECK_EQ_INT(tok_byte_symbol(0), 0x100);
    CHECK_EQ_INT(tok_byte_symbol(' '), 0x120);
    CHECK_EQ_INT(tok_byte_symbol(0x7f), 0x121);
    CHECK_EQ_INT(tok_byte_symbol(0xa0), 0x142);
    CHECK_EQ_INT(tok_byte_symbol(0xad), 0x143);
    int seen[0x144] = {0};
    for (int b = 0; b < 256; b++) {
        uint32_t c = tok_byte_symbol((uint8_t)b);
        CHECK(c < 0x144 && !seen[c]);
        if (c < 0x144)
            seen[c] = 1;
    }
}

TEST(tokenizer_load_sd1)
{
    double t0 = now_ms();
    struct tokenizer *t = load_sd1();
    double ms = now_ms() - t0;
    fprintf(stderr, "  vocab.json + merges.txt (49408 tokens, 48894 merges): %.1f ms\n", ms);
    if (!t)
        return;
    CHECK(ms < 1000); /* generous: sanitizers, a loaded machine */
    CHECK_EQ_INT(tok_vocab_size(t), 49408);
    CHECK_EQ_INT(tok_bos_id(t), 49406);
    CHECK_EQ_INT(tok_eos_id(t), 49407);
    CHECK_EQ_INT(tok_pad_id(t), 49407);
    CHECK_EQ_INT(tok_max_length(t), 77);
    CHECK_EQ_INT(tok_token_id(t, "!"), 0);
    CHECK_EQ_INT(tok_token_id(t, "!</w>"), 256);
    CHECK_EQ_INT(tok_token_id(t, "a</w>"), 320);
    CHECK_EQ_INT(tok_token_id(t, "<|startoftext|>"), 49406);
    CHECK_EQ_INT(tok_token_id(t, "<|endoftext|>"), 49407);
    CHECK_EQ_INT(tok_token_id(t, "no such token"), -1);
    tok_free(t);
}

/* BPE order: the lowest-rank pair first, leftmost on ties. */
TEST(tokenizer_merge_example)
{
    struct tokenizer *t = load_sd1();
    if (!t)
        return;
    int32_t ids[8];
    int n;
    /* "x" is one symbol, so it is "x</w>" at once */
    CHECK(tok_tokenize(t, "x", ids, 8, &n, NULL) == SD_OK && n == 1 && ids[0] == 343);
    /* a a a a a a a a</w>: "a a" merges pairwise from the left into
     * "aa" "aa" "aa" "aa</w>", then "aaaa" "aaaa</w>" */
    CHECK(tok_tokenize(t, "aaaaaaaa", ids, 8, &n, NULL) == SD_OK && n == 2);
    CHECK(ids[0] == tok_token_id(t, "aaaa") && ids[1] == tok_token_id(t, "aaaa</w>"));
    CHECK(tok_tokenize(t, "aaa", ids, 8, &n, NULL) == SD_OK && n == 1);
    CHECK(ids[0] == tok_token_id(t, "aaa</w>"));
    /* a whole word in the vocab: one id */
    CHECK(tok_tokenize(t, "astronaut", ids, 8, &n, NULL) == SD_OK && n == 1 && ids[0] == 18376);
    /* the reference's 11.1 vectors */
    static const int32_t want[] = {1153, 16157, 279, 330, 13024, 267, 6087, 525, 1486, 2631};
    int32_t got[16];
    CHECK(tok_tokenize(t, "photorealistic 8k render, trending on artstation", got, 16, &n,
                       NULL) == SD_OK);
    CHECK_EQ_INT(n, 10);
    CHECK(!memcmp(got, want, sizeof want));
    tok_free(t);
}

TEST(tokenizer_encode_layout)
{
    struct tokenizer *t = load_sd1();
    if (!t)
        return;
    int32_t ids[77];
    int n = -1;
    struct sd_err err = {0};
    CHECK(tok_encode(t, "", ids, 77, &n, &err) == SD_OK && n == 0);
    CHECK(ids[0] == 49406 && ids[1] == 49407 && ids[76] == 49407);
    CHECK(tok_encode(t, "a photo", ids, 2, &n, &err) == SD_OK && n == 2);
    CHECK(ids[0] == 49406 && ids[1] == 49407);
    CHECK(tok_encode(t, "a photo", ids, 1, &n, &err) == SD_ERR_ARG);
    CHECK(tok_tokenize(t, "a photo", NULL, 0, &n, &err) == SD_OK && n == 2);
    tok_free(t);
}

/* ---- against transformers ---- */

TEST(tokenizer_reference_prompts)
{
    json_t *ref = load_ref();
    struct tokenizer *sd1 = load_sd1();
    struct tmp_dir d;
    json_t *sd2cfg = ref ? ref_config(ref, "sd2") : NULL;
    CHECK(sd2cfg != NULL);
    struct tokenizer *sd2 = sd2cfg ? load_config(json_object_get(sd2cfg, "files"), &d) : NULL;
    if (sd1 && sd2) {
        CHECK_EQ_INT(tok_pad_id(sd2), 0);
        size_t i, ok = 0, total = 0;
        json_t *c;
        json_array_foreach(json_object_get(ref, "cases"), i, c) {
            json_t *hex = json_object_get(c, "text_hex");
            char *text = hex ? hex_decode(json_string_value(hex))
                             : strdup(json_string_value(json_object_get(c, "text")));
            int n1 = -1, n2 = -1;
            int good = check_ids(sd1, text, json_object_get(c, "ids"), "sd1", &n1) &&
                       check_ids(sd2, text, json_object_get(c, "ids_sd2"), "sd2", &n2);
            json_int_t want_n = json_integer_value(json_object_get(c, "n_tokens"));
            if (good && n1 != want_n) {
                fprintf(stderr, "  \"%.60s\": %d prompt tokens, transformers %lld\n", text, n1,
                        (long long)want_n);
                good = 0;
            }
            ok += good;
            total++;
            free(text);
        }
        fprintf(stderr, "  %zu/%zu prompts identical (SD 1.x and SD 2.x padding)\n", ok, total);
        CHECK(total >= 60);
        CHECK_EQ_INT(ok, total);
    }
    tok_free(sd1);
    if (sd2cfg)
        tmp_close(&d);
    tok_free(sd2);
    json_decref(ref);
}

TEST(tokenizer_reference_configs)
{
    json_t *ref = load_ref();
    size_t i, j, ok = 0, total = 0;
    json_t *cfg, *c;
    json_array_foreach(json_object_get(ref, "configs"), i, cfg) {
        const char *name = json_string_value(json_object_get(cfg, "name"));
        struct tmp_dir d;
        struct tokenizer *t = load_config(json_object_get(cfg, "files"), &d);
        total++;
        if (!t) {
            fprintf(stderr, "  config %s did not load\n", name);
            tmp_close(&d);
            continue;
        }
        int good = tok_bos_id(t) == json_integer_value(json_object_get(cfg, "bos_id")) &&
                   tok_eos_id(t) == json_integer_value(json_object_get(cfg, "eos_id")) &&
                   tok_pad_id(t) == json_integer_value(json_object_get(cfg, "pad_id")) &&
                   tok_max_length(t) == json_integer_value(json_object_get(cfg, "max_length")) &&
                   tok_vocab_size(t) == json_integer_value(json_object_get(cfg, "vocab_size"));
        if (!good)
            fprintf(stderr, "  config %s: bos %d eos %d pad %d max %d size %d differ\n", name,
                    tok_bos_id(t), tok_eos_id(t), tok_pad_id(t), tok_max_length(t),
                    tok_vocab_size(t));
        json_array_foreach(json_object_get(cfg, "cases"), j, c) {
            const char *text = json_string_value(json_object_get(c, "text"));
            good &= check_ids(t, text, json_object_get(c, "ids"), name, NULL);
        }
        ok += good;
        tok_free(t);
        tmp_close(&d);
    }
    fprintf(stderr, "  %zu/%zu tokenizer folder variants identical\n", ok, total);
    CHECK(total >= 15);
    CHECK_EQ_INT(ok, total);
    json_decref(ref);
}

/* ---- errors ---- */

/* A folder with the given files (NULL text = absent); returns tok_load's
 * status and leaves its message in *err. */
static int load_files(const char *vocab, const char *merges, const char *config,
                      const char *map, struct sd_err *err)
{
    struct tmp_dir d;
    tmp_open(&d);
    if (vocab)
        tmp_write(&d, "vocab.json", vocab);
    if (merges)
        tmp_write(&d, "merges.txt", merges);
    if (config)
        tmp_write(&d, "tokenizer_config.json", config);
    if (map)
        tmp_write(&d, "special_tokens_map.json", map);
    struct tokenizer *t = NULL;
    memset(err, 0, sizeof *err);
    int rc = tok_load(&t, d.path, err);
    CHECK((rc == SD_OK) == (t != NULL));
    tok_free(t);
    tmp_close(&d);
    return rc;
}

#define TINY_VOCAB "{\"a\": 0, \"b\": 1, \"ab\": 2, \"a</w>\": 3, \"b</w>\": 4, \"ab</w>\": 5, " \
                   "\"<|startoftext|>\": 6, \"<|endoftext|>\": 7}"

TEST(tokenizer_errors)
{
    struct sd_err err;
    struct tokenizer *t = NULL;
    CHECK(tok_load(&t, "/nonexistent/tokenizer", &err) == SD_ERR_IO && t == NULL);
    CHECK(strstr(err.msg, "/nonexistent/tokenizer/vocab.json") != NULL);

    CHECK(load_files(TINY_VOCAB, "#version: 0.2\na b\n", NULL, NULL, &err) == SD_OK);
    CHECK(load_files(TINY_VOCAB, NULL, NULL, NULL, &err) == SD_ERR_IO);
    CHECK(strstr(err.msg, "merges.txt") != NULL);
    CHECK(load_files("{\"a\": 0,", "", NULL, NULL, &err) == SD_ERR_FORMAT);
    CHECK(strstr(err.msg, "vocab.json") != NULL);
    CHECK(load_files("[1, 2]", "", NULL, NULL, &err) == SD_ERR_FORMAT);
    CHECK(load_files("{\"a\": \"x\"}", "", NULL, NULL, &err) == SD_ERR_FORMAT);
    CHECK(load_files("{\"a\": -1}", "", NULL, NULL, &err) == SD_ERR_FORMAT);
    CHECK(load_files(TINY_VOCAB, "a b c\n", NULL, NULL, &err) == SD_ERR_FORMAT);
    CHECK(strstr(err.msg, "merges.txt:1") != NULL);
    CHECK(load_files(TINY_VOCAB, "#version: 0.2\na b\nab\n", NULL, NULL, &err) == SD_ERR_FORMAT);
    CHECK(strstr(err.msg, "merges.txt:3") != NULL);
    CHECK(load_files(TINY_VOCAB, "a b</w>\nb a\n", NULL, NULL, &err) == SD_ERR_FORMAT);
    CHECK(strstr(err.msg, "merges.txt:2: merge of tokens not in vocab.json") != NULL);
    CHECK(load_files(TINY_VOCAB, "a x\n", NULL, NULL, &err) == SD_ERR_FORMAT);

    CHECK(load_files(TINY_VOCAB, "", "{\"model_max_length\": ", NULL, &err) == SD_ERR_FORMAT);
    CHECK(strstr(err.msg, "tokenizer_config.json") != NULL);
    CHECK(load_files(TINY_VOCAB, "", "{\"model_max_length\": 1}", NULL, &err) == SD_ERR_FORMAT);
    CHECK(load_files(TINY_VOCAB, "", "{\"model_max_length\": \"77\"}", NULL, &err) ==
          SD_ERR_FORMAT);
    CHECK(load_files(TINY_VOCAB, "", NULL, "{\"pad_token\": 5}", &err) == SD_ERR_FORMAT);
    CHECK(strstr(err.msg, "special_tokens_map.json: pad_token") != NULL);
    CHECK(load_files(TINY_VOCAB, "", NULL, "{\"pad_token\": {\"text\": \"!\"}}", &err) ==
          SD_ERR_FORMAT);
    CHECK(load_files(TINY_VOCAB, "", NULL, "{\"pad_token\": null}", &err) == SD_ERR_UNSUPPORTED);
    CHECK(load_files(TINY_VOCAB, "", NULL,
                     "{\"pad_token\": {\"content\": \"a\", \"lstrip\": true}}",
                     &err) == SD_ERR_UNSUPPORTED);
    CHECK(load_files(TINY_VOCAB, "", NULL,
                     "{\"pad_token\": {\"content\": \"a\", \"normalized\": 1}}",
                     &err) == SD_ERR_FORMAT);
    CHECK(load_files(TINY_VOCAB, "", "{\"added_tokens_decoder\": {\"x\": {\"content\": \"a\"}}}",
                     NULL, &err) == SD_ERR_FORMAT);
    CHECK(load_files(TINY_VOCAB, "", "{\"added_tokens_decoder\": {\"5\": {\"content\": \"a\"}}}",
                     NULL, &err) == SD_ERR_FORMAT); /* "a" is id 0 */
    CHECK(load_files(TINY_VOCAB, "", "[]", NULL, &err) == SD_ERR_FORMAT);
}

/* A custom vocab lacking byte symbols: unk per missing byte, or an error. */
TEST(tokenizer_tiny_vocab)
{
    struct tmp_dir d;
    tmp_open(&d);
    tmp_write(&d, "vocab.json", TINY_VOCAB);
    tmp_write(&d, "merges.txt", "#version: 0.2\na b</w>\na b\n");
    struct tokenizer *t = NULL;
    struct sd_err err = {0};
    CHECK(tok_load(&t, d.path, &err) == SD_OK);
    if (t) {
        int32_t ids[8];
        int n;
        CHECK(tok_tokenize(t, "ab ba a", ids, 8, &n, &err) == SD_OK && n == 4);
        CHECK(ids[0] == 5 && ids[1] == 1 && ids[2] == 3 && ids[3] == 3);
        /* "c" has no symbol: unk is <|endoftext|> (7), one per byte, as
         * transformers: "cab é" -> 7 5 7 7 */
        CHECK(tok_tokenize(t, "cab \xc3\xa9", ids, 8, &n, &err) == SD_OK && n == 4);
        CHECK(ids[0] == 7 && ids[1] == 5 && ids[2] == 7 && ids[3] == 7);
        tok_free(t);
    }
    tmp_close(&d);

    /* no unk token in the vocab: encoding a missing byte is an error */
    tmp_open(&d);
    tmp_write(&d, "vocab.json", "{\"a\": 0, \"a</w>\": 1, \"<s>\": 2, \"</s>\": 3}");
    tmp_write(&d, "merges.txt", "");
    tmp_write(&d, "tokenizer_config.json",
              "{\"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"unk_token\": \"<unk>\", "
              "\"pad_token\": \"</s>\"}");
    CHECK(tok_load(&t, d.path, &err) == SD_OK);
    if (t) {
        int32_t ids[8];
        int n;
        CHECK(tok_tokenize(t, "aa a", ids, 8, &n, &err) == SD_OK && n == 3);
        CHECK(tok_tokenize(t, "b", ids, 8, &n, &err) == SD_ERR_FORMAT);
        CHECK(strstr(err.msg, "0x62") != NULL);
        CHECK_EQ_INT(tok_vocab_size(t), 5); /* "<unk>" was added as id 4 */
        tok_free(t);
    }
    tmp_close(&d);
}

/* ---- hostile input ---- */

TEST(tokenizer_hostile_input)
{
    struct tokenizer *t = load_sd1();
    if (!t)
        return;
    size_t len = 16384;
    char *s = malloc(TOK_MAX_TEXT + 2);
    int32_t ids[77];
    int n;
    struct sd_err err = {0};
    /* one 16 KB word, the worst case for naive BPE */
    memset(s, 'a', len);
    s[len] = 0;
    double t0 = now_ms();
    CHECK(tok_encode(t, s, ids, 77, &n, &err) == SD_OK);
    fprintf(stderr, "  16 KB word: %d tokens in %.1f ms\n", n, now_ms() - t0);
    /* transformers: 2047 x "aaaaaaaa" (23126), "aaaa", "aaaa</w>" */
    CHECK(n == 2049 && ids[1] == 23126 && ids[75] == 23126);
    /* pseudo-random bytes, mostly invalid UTF-8 */
    uint32_t x = 12345;
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        s[i] = (char)((x >> 16) % 255 + 1);
    }
    t0 = now_ms();
    CHECK(tok_encode(t, s, ids, 77, &n, &err) == SD_OK && n == 15188); /* transformers */
    fprintf(stderr, "  16 KB random bytes: %d tokens in %.1f ms\n", n, now_ms() - t0);
    /* a long run of one combining mark, of emoji, of digits */
    static const char *const units[] = {"\xcc\x81", "\xf0\x9f\x98\x80", "7", "\xe6\x97\xa5"};
    static const int want[] = {16382, 4094, 16383, 5461}; /* transformers */
    for (int u = 0; u < 4; u++) {
        size_t ul = strlen(units[u]), k = 0;
        for (; k + ul < len; k += ul)
            memcpy(s + k, units[u], ul);
        s[k] = 0;
        t0 = now_ms();
        CHECK(tok_encode(t, s, ids, 77, &n, &err) == SD_OK && n == want[u]);
        fprintf(stderr, "  16 KB run of U+%s: %d tokens in %.1f ms\n",
                u == 0 ? "0301" : u == 1 ? "1F600" : u == 2 ? "0037" : "65E5", n, now_ms() - t0);
    }
    memset(s, 'a', TOK_MAX_TEXT + 1);
    s[TOK_MAX_TEXT + 1] = 0;
    CHECK(tok_encode(t, s, ids, 77, &n, &err) == SD_ERR_ARG);
    free(s);
    tok_free(t);
}

/* ---- opt-in: every code point (see tools/gen_tokenizer_ref.py) ----
 *
 * Known differences, all Unicode-version skew, so not failures:
 *  - code points unassigned in Unicode 14 (libunistring 1.0, Debian 12)
 *    but assigned in 15.0-16.0, which the tokenizers crate (Rust std,
 *    Oniguruma) knows: new letters/digits/case pairs (U+1C89, U+A7CB,
 *    U+105C0.., CJK Ext. I, ...): 9420 of them with transformers 5.24;
 *  - U+11935 U+11930 (Dives Akuru, Unicode 13): libunistring composes it
 *    to U+11938, the tokenizers crate's older NFC table does not.
 * Every other probe must match. */

static bool newer_unicode(const char *text)
{
    const uint8_t *s = (const uint8_t *)text;
    size_t n = strlen(text);
    for (size_t i = 0; i < n;) {
        ucs4_t c;
        int l = u8_mbtouc(&c, s + i, n - i);
        if (uc_is_general_category(c, UC_CATEGORY_Cn) || c == 0x11935)
            return true;
        i += (size_t)(l > 0 ? l : 1);
    }
    return false;
}

/* One "hex<TAB>ids" line: does tok_tokenize give those ids? */
static bool probe_matches(const struct tokenizer *t, const char *text, const char *want)
{
    int32_t ids[256];
    int n, k = 0;
    if (tok_tokenize(t, text, ids, 256, &n, NULL) != SD_OK)
        return false;
    for (char *end;; want = end, k++) {
        long v = strtol(want, &end, 10);
        if (end == want)
            break;
        if (k >= n || ids[k] != v)
            return false;
    }
    return k == n;
}

TEST(tokenizer_all_codepoints)
{
    const char *path = getenv("TOKENIZER_CODEPOINTS");
    if (!path)
        SKIP("set TOKENIZER_CODEPOINTS=file from gen_tokenizer_ref.py --codepoints");
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    struct tokenizer *t = load_sd1();
    if (!f || !t) {
        if (f)
            fclose(f);
        tok_free(t);
        return;
    }
    char line[4096];
    long lines = 0, skew = 0, bad = 0;
    while (fgets(line, sizeof line, f)) {
        char *tab = strchr(line, '\t');
        if (!tab)
            continue;
        *tab = 0;
        char *text = hex_decode(line);
        if (!probe_matches(t, text, tab + 1)) {
            if (newer_unicode(text))
                skew++;
            else if (bad++ < 20)
                fprintf(stderr, "  differs: %s\n", line);
        }
        lines++;
        free(text);
    }
    fclose(f);
    tok_free(t);
    fprintf(stderr, "  %ld probes: %ld identical, %ld differ by Unicode version, %ld differ\n",
            lines, lines - skew - bad, skew, bad);
    CHECK(lines > 1000000);
    CHECK_EQ_INT(bad, 0);
}

/* tokenizer.h - the CLIP byte-level BPE tokenizer of Stable Diffusion.
 *
 * Gives the ids that transformers' CLIPTokenizer (v5, tokenizers backend)
 * gives when diffusers' StableDiffusionPipeline calls
 *
 *     tokenizer(text, padding="max_length", max_length=77, truncation=True)
 *
 * on a diffusers `tokenizer/` folder. The steps, in transformers' order:
 *
 *   1. invalid UTF-8 in `text` becomes U+FFFD (as Python's
 *      bytes.decode("utf-8", errors="replace"));
 *   2. "added tokens" (the special tokens: bos, eos, unk, pad, ... and any
 *      added_tokens_decoder entries) are cut out of the raw text, leftmost-
 *      longest, for those not marked `normalized`;
 *   3. the rest is normalized: Unicode NFC, every run of white space (Unicode
 *      White_Space) becomes one " ", then per-character full lowercase;
 *   4. added tokens marked `normalized` are cut out of the normalized text;
 *   5. the rest is split by CLIP's pattern
 *          <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|
 *          [\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 *      (white space dropped; a literal <|startoftext|> that gets this far is
 *      split again by the byte-level pre-tokenizer into "<|", word, "|>");
 *   6. each piece is UTF-8 bytes mapped through bytes_to_unicode, its last
 *      symbol gets "</w>", and BPE merges by rank from merges.txt, always the
 *      leftmost pair of lowest rank first (the tokenizers crate's order).
 *
 * Special-token quirks that follow from this and that real folders hit:
 * SD 2.x folders make "!" (their pad token) a special token, so every "!"
 * in a prompt is id 0, never BPE (`!!` is 0 0, not 748). See the .c file for
 * how the token list and its `normalized` flags are resolved.
 *
 * BPE is O(n log n) per piece (a heap, like the tokenizers crate), so a
 * hostile 16 KB "word" costs milliseconds and no cap is needed; the only
 * limit is TOK_MAX_TEXT bytes of input.
 *
 * Ownership and threads: tok_load returns a tokenizer owned by the caller
 * (tok_free). It is immutable after loading; tok_encode/tok_tokenize may be
 * called from many threads at once (each call allocates its own scratch).
 */
#ifndef SD_TOKENIZER_H
#define SD_TOKENIZER_H

#include <stdint.h>

#include "util/err.h"

/* Longest prompt (bytes) tok_tokenize accepts; longer is SD_ERR_ARG. */
#define TOK_MAX_TEXT (1 << 20)

struct tokenizer;

/* Load `dir`/vocab.json and `dir`/merges.txt (both required) plus the
 * optional tokenizer_config.json, special_tokens_map.json and
 * added_tokens.json. Defaults when absent are CLIPTokenizer's: bos
 * <|startoftext|>, eos/unk/pad <|endoftext|>, model_max_length 77.
 * special_tokens_map.json overrides tokenizer_config.json key by key (pad
 * "!" in SD 2.x), except that transformers ignores it entirely when
 * tokenizer_config.json has "added_tokens_decoder"; we do the same.
 * Errors: SD_ERR_IO (missing/unreadable file), SD_ERR_FORMAT (bad JSON,
 * bad merges line, merge of unknown tokens, ...), SD_ERR_UNSUPPORTED
 * (null bos/eos/pad, lstrip/rstrip/single_word added tokens), SD_ERR_NOMEM.
 * The message names the file and the problem. *out is NULL on error. */
int tok_load(struct tokenizer **out, const char *dir, struct sd_err *err);
void tok_free(struct tokenizer *t);

/* Encode `text` (NUL-terminated, any bytes) as the SD pipeline does:
 * [bos] + first max_len-2 token ids + [eos] + pad up to max_len. Writes
 * exactly max_len ids (max_len >= 2; pass tok_max_length(t)).
 * *n_prompt_tokens (may be NULL) gets the untruncated number of prompt
 * tokens, without bos/eos, so callers can warn when it exceeds max_len-2.
 * Errors: SD_ERR_ARG (max_len < 2, text longer than TOK_MAX_TEXT),
 * SD_ERR_FORMAT (a byte symbol missing from a custom vocab that has no unk
 * token), SD_ERR_NOMEM. */
int tok_encode(const struct tokenizer *t, const char *text, int32_t *ids,
               int max_len, int *n_prompt_tokens, struct sd_err *err);

/* The prompt's token ids alone (no bos/eos/pad): writes the first
 * min(total, cap) to ids (ids may be NULL when cap is 0) and the total to
 * *n. Same errors as tok_encode. */
int tok_tokenize(const struct tokenizer *t, const char *text, int32_t *ids,
                 int cap, int *n, struct sd_err *err);

int tok_max_length(const struct tokenizer *t); /* model_max_length, 77 */
int tok_pad_id(const struct tokenizer *t);     /* 49407 SD 1.x, 0 SD 2.x */
int tok_bos_id(const struct tokenizer *t);     /* 49406 */
int tok_eos_id(const struct tokenizer *t);     /* 49407 */
/* 1 + the largest id tok_encode can produce (vocab.json plus added tokens
 * that were not in it): 49408 for SD. The text encoder's embedding table
 * must have at least this many rows. */
int tok_vocab_size(const struct tokenizer *t);
/* Id of a vocab.json entry or added token, by exact string; -1 if none. */
int tok_token_id(const struct tokenizer *t, const char *token);

/* bytes_to_unicode: the code point standing for byte `b` in vocab.json
 * (printable Latin-1 maps to itself, the other 68 bytes to U+0100..U+0143
 * in increasing order; space is U+0120). */
uint32_t tok_byte_symbol(uint8_t b);

#endif

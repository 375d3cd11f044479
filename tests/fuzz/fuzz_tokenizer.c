/* fuzz_tokenizer.c - tok_encode on arbitrary bytes (prompts are untrusted).
 *
 * Uses the real CLIP vocabulary (data/tokenizers/clip, loaded once; run
 * from the repository root). Every result must be 77 ids inside the
 * vocabulary, framed by bos ... eos and padding, for any input bytes,
 * including invalid UTF-8 and embedded special tokens. The first byte picks
 * SD1 or SD2 padding behaviour by switching the tokenizer folder.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer.h"

static struct tokenizer *fuzz_tok[2];

int fuzz_tokenizer(const uint8_t *data, size_t len)
{
    static const char *dirs[2] = {"data/tokenizers/clip", "tests/data/tiny-sd2/tokenizer"};
    struct sd_err err;
    if (len == 0)
        return 0;
    int which = data[0] & 1;
    if (!fuzz_tok[which] && tok_load(&fuzz_tok[which], dirs[which], &err))
        abort(); /* the fixture itself is broken: run from the repo root */
    struct tokenizer *t = fuzz_tok[which];
    char *text = malloc(len);
    memcpy(text, data + 1, len - 1);
    text[len - 1] = 0; /* NUL-terminated; embedded NULs just end it early */
    int32_t ids[77];
    int n = -1;
    int rc = tok_encode(t, text, ids, 77, &n, &err);
    SD_ASSERT(rc == SD_OK);
    SD_ASSERT(n >= 0);
    SD_ASSERT(ids[0] == tok_bos_id(t));
    int end = n < 75 ? n + 1 : 76;
    SD_ASSERT(ids[end] == tok_eos_id(t));
    for (int i = 0; i < 77; i++)
        SD_ASSERT(ids[i] >= 0 && ids[i] < tok_vocab_size(t));
    for (int i = end + 1; i < 77; i++)
        SD_ASSERT(ids[i] == tok_pad_id(t));
    free(text);
    return 0;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    fuzz_tokenizer(data, len);
    return 0;
}
#endif

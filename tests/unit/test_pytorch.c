/* test_pytorch.c - .ckpt files (model/pytorch.h): the tiny SD 2.x checkpoint
 * as diffusers' script writes it holds exactly the tensors of its
 * .safetensors twin; the pickle corpus (tools/gen_pickle_corpus.py) parses
 * when it is a state dict and is refused, naming the culprit, when it would
 * run code or is malformed. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "model/pytorch.h"
#include "sd.h"
#include "test.h"

TEST(pytorch_ckpt_equals_safetensors)
{
    struct st_file *a, *b;
    struct sd_err err;
    long step;
    CHECK_MSG(pt_open(&a, "tests/data/single/tiny-sd2.ckpt", &step, &err) == SD_OK, "%s", err.msg);
    CHECK_MSG(st_open(&b, "tests/data/single/tiny-sd2.safetensors", &err) == SD_OK, "%s", err.msg);
    if (!a || !b) {
        st_close(a), st_close(b);
        return;
    }
    CHECK(step == -1);
    CHECK(st_count(a) == st_count(b));
    int same = 0;
    for (int i = 0; i < st_count(a) && i < st_count(b); i++) {
        const struct st_tensor *x = st_at(a, i), *y = st_at(b, i);
        int ok = !strcmp(x->name, y->name) && x->dtype == y->dtype && x->ndim == y->ndim &&
                 x->nbytes == y->nbytes && !memcmp(x->shape, y->shape, sizeof x->shape) &&
                 !memcmp(x->data, y->data, x->nbytes);
        CHECK_MSG(ok, "tensor %s differs", x->name);
        same += ok;
    }
    printf("    %d tensors identical\n", same);
    st_close(a), st_close(b);
    /* not a zip; a missing file */
    CHECK(pt_open(&a, "tests/data/single/tiny-sd2.safetensors", &step, &err) == SD_ERR_FORMAT && !a);
    CHECK(pt_open(&a, "tests/data/nope.ckpt", &step, &err) == SD_ERR_IO);
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*len ? *len : 1);
    if (b && fread(b, 1, *len, f) != *len) {
        free(b);
        b = NULL;
    }
    fclose(f);
    return b;
}

TEST(pytorch_pickle_corpus)
{
    const char *dir = "tests/fuzz/corpus/pickle";
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[512];
        size_t len = 0;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        uint8_t *buf = slurp(path, &len);
        CHECK(buf != NULL);
        struct pt_state s;
        struct sd_err err = {0};
        int rc = pt_parse_pickle(buf, len, e->d_name, &s, &err);
        if (!strncmp(e->d_name, "ok-", 3)) {
            CHECK_MSG(rc == SD_OK && s.n > 0, "%s: %s", e->d_name, err.msg);
            if (!strcmp(e->d_name, "ok-lightning.pkl"))
                CHECK(s.global_step == 875000 && s.n == 6);
            if (!strcmp(e->d_name, "ok-state-dict.pkl")) {
                CHECK(s.n == 6 && s.global_step == -1);
                for (int i = 0; i < s.n; i++)
                    if (!strcmp(s.t[i].name, "b.weight"))
                        CHECK(s.t[i].dtype == ST_BF16 && s.t[i].ndim == 4 && s.t[i].shape[0] == 2);
            }
        } else if (!strncmp(e->d_name, "evil-", 5)) {
            CHECK_MSG(rc == SD_ERR_UNSUPPORTED && strstr(err.msg, "refused"), "%s: %d %s", e->d_name, rc, err.msg);
        } else {
            CHECK_MSG(rc == SD_ERR_FORMAT, "%s: %d %s", e->d_name, rc, err.msg);
        }
        if (!strcmp(e->d_name, "evil-os-system.pkl"))
            CHECK(strstr(err.msg, "posix.system") || strstr(err.msg, "os.system"));
        printf("    %-24s %s\n", e->d_name, rc ? err.msg : "parsed");
        if (!rc)
            pt_state_free(&s);
        free(buf);
        n++;
    }
    if (d)
        closedir(d);
    CHECK(n >= 10);
}

/* A .ckpt loads as a model: the same pixels as the folder. */
TEST(pytorch_ckpt_model)
{
    struct sd_err err;
    sd_model *a = NULL, *b = NULL;
    struct sd_load_opts fo = {.dir = "tests/data/tiny-sd2", .variant = "fp16"};
    struct sd_load_opts co = {.dir = "tests/data/single/tiny-sd2.ckpt", .config = "tests/data/tiny-sd2"};
    CHECK_MSG(sd_model_load(&a, &fo, &err) == SD_OK, "%s", err.msg);
    CHECK_MSG(sd_model_load(&b, &co, &err) == SD_OK, "%s", err.msg);
    if (a && b) {
        struct sd_params p;
        sd_params_default(&p);
        p.prompt = "a windmill";
        p.steps = 2;
        p.seed_set = 1;
        struct sd_image x, y;
        CHECK(sd_generate(a, &p, NULL, &x, &err) == SD_OK && sd_generate(b, &p, NULL, &y, &err) == SD_OK);
        CHECK(x.rgb && y.rgb && !memcmp(x.rgb, y.rgb, (size_t)x.width * x.height * 3));
        sd_image_free(&x), sd_image_free(&y);
    }
    sd_model_free(a), sd_model_free(b);
}

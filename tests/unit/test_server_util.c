/* test_server_util.c - server helpers and options (sutil.c, config.c). */
#include <stdlib.h>
#include <string.h>

#include "server/config.h"
#include "server/sutil.h"
#include "test.h"

TEST(server_uuid4)
{
    char a[UUID_STR_LEN], b[UUID_STR_LEN];
    CHECK(uuid4_new(a, NULL) == SD_OK);
    CHECK(uuid4_new(b, NULL) == SD_OK);
    CHECK(strlen(a) == 36);
    CHECK(strcmp(a, b) != 0);
    CHECK(uuid_valid(a));
    CHECK(a[14] == '4');                      /* version */
    CHECK(strchr("89ab", a[19]) != NULL);     /* variant */
    CHECK(uuid_valid("123e4567-e89b-12d3-a456-426614174000"));
    CHECK(!uuid_valid("123E4567-e89b-12d3-a456-426614174000")); /* not canonical */
    CHECK(!uuid_valid("123e4567-e89b-12d3-a456-42661417400"));
    CHECK(!uuid_valid("123e4567-e89b-12d3-a456-4266141740000"));
    CHECK(!uuid_valid("123e4567fe89b-12d3-a456-426614174000"));
    CHECK(!uuid_valid(""));
    CHECK(!uuid_valid("../../etc/passwd"));
}

TEST(server_rfc3339)
{
    char s[RFC3339_LEN];
    rfc3339_format(0, s);
    CHECK(!strcmp(s, "1970-01-01T00:00:00.000Z"));
    rfc3339_format(1764165480.1234, s);
    CHECK(!strcmp(s, "2025-11-26T13:58:00.123Z"));
    rfc3339_format(59.9996, s); /* rounds into the next second */
    CHECK(!strcmp(s, "1970-01-01T00:01:00.000Z"));
}

TEST(server_base64)
{
    static const struct { const char *in, *out; } v[] = {
        {"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        size_t n;
        char *e = base64_encode((const uint8_t *)v[i].in, strlen(v[i].in), &n);
        CHECK(e && !strcmp(e, v[i].out) && n == strlen(v[i].out));
        free(e);
    }
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    char *e = base64_encode(all, 256, NULL);
    CHECK(e && strlen(e) == 344 && !strncmp(e, "AAECAwQFBgcICQoL", 16) &&
          !strcmp(e + 336, "/P3+/w=="));
    free(e);
}

TEST(server_base64_decode)
{
    static const struct { const char *in, *out; int rc; } v[] = {
        {"", "", SD_OK}, {"Zg==", "f", SD_OK}, {"Zm8=", "fo", SD_OK}, {"Zm9vYmFy", "foobar", SD_OK},
        {"Zg", "f", SD_OK},                      /* padding optional */
        {"Zm9v\r\nYmFy ", "foobar", SD_OK},      /* whitespace skipped */
        {"-_-_", "\xfb\xff\xbf", SD_OK},         /* URL-safe alphabet */
        {"Z", NULL, SD_ERR_FORMAT},              /* truncated group */
        {"Zm9vY", NULL, SD_ERR_FORMAT},
        {"Zg===", NULL, SD_ERR_FORMAT},          /* too much padding */
        {"Zg==Zg==", NULL, SD_ERR_FORMAT},       /* data after padding */
        {"Zm9v!", NULL, SD_ERR_FORMAT},          /* not base64 */
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint8_t *out = NULL;
        size_t n = 0;
        struct sd_err err = {0};
        int rc = base64_decode(v[i].in, strlen(v[i].in), 100, &out, &n, &err);
        CHECK_MSG(rc == v[i].rc, "case %zu: rc %d (%s)", i, rc, err.msg);
        if (!rc)
            CHECK(n == strlen(v[i].out) && !memcmp(out, v[i].out, n));
        else
            CHECK(!out && err.msg[0]);
        free(out);
    }
    uint8_t *out;
    size_t n;
    CHECK(base64_decode("Zm9vYmFy", 8, 5, &out, &n, NULL) == SD_ERR_ARG); /* over max_out */
    CHECK(image_field_decode("data:image/png;base64,Zm9v", 26, 100, &out, &n, NULL) == SD_OK);
    CHECK(n == 3 && !memcmp(out, "foo", 3));
    free(out);
    CHECK(image_field_decode("DATA:image/jpeg;name=x;base64,Zm9v", 34, 100, &out, &n, NULL) == SD_OK);
    free(out);
    CHECK(image_field_decode("data:image/png,Zm9v", 19, 100, &out, &n, NULL) == SD_ERR_FORMAT);
    CHECK(image_field_decode("data:image/png;base64", 21, 100, &out, &n, NULL) == SD_ERR_FORMAT);
}

TEST(server_utf8_length)
{
    CHECK(utf8_length("abc", 3) == 3);
    CHECK(utf8_length("\xc3\xa9t\xc3\xa9", 5) == 3);       /* été */
    CHECK(utf8_length("\xf0\x9f\x98\x80", 4) == 1);         /* one emoji */
}

static char *fake_env(const char *name)
{
    if (!strcmp(name, "DIFFUSIOND_PORT"))
        return "9000";
    if (!strcmp(name, "DIFFUSIOND_DATA_DIR"))
        return "/tmp/from-env";
    if (!strcmp(name, "DIFFUSIOND_RATE_LIMIT"))
        return "2.5";
    return NULL;
}

static char *bad_env(const char *name)
{
    return !strcmp(name, "DIFFUSIOND_QUEUE_CAPACITY") ? "lots" : NULL;
}

TEST(server_config_defaults_env_flags)
{
    struct server_config c;
    struct sd_err err = {0};
    config_defaults(&c);
    CHECK(c.port == 8000 && c.max_body == 65536 && c.max_prompt == 2000 && c.max_steps == 150);
    CHECK(c.max_side == 1024 && c.queue_capacity == 100 && c.result_ttl == 86400);
    CHECK(!strcmp(c.host, "127.0.0.1") && !strcmp(c.data_dir, "./diffusiond-data"));
    CHECK(strstr(c.model, "tests/data/tiny-sd1") != NULL);

    CHECK(c.plan_size == 0);
    char *argv[] = {"serve", "--port=9100", "--host", "0.0.0.0", "--api-keys", "k.txt", "--plan-size=256", NULL};
    CHECK(config_load(&c, 7, argv, fake_env, &err) == SD_OK);
    CHECK(c.plan_size == 256);
    CHECK(c.port == 9100);                       /* flag beats environment */
    CHECK(!strcmp(c.data_dir, "/tmp/from-env")); /* environment beats default */
    CHECK(c.rate_limit == 2.5);
    CHECK(!strcmp(c.host, "0.0.0.0") && !strcmp(c.api_keys, "k.txt"));
}

TEST(server_config_errors)
{
    struct server_config c;
    struct sd_err err = {0};
    config_defaults(&c);
    char *a1[] = {"serve", "--port", "70000", NULL};
    CHECK(config_load(&c, 3, a1, NULL, &err) == SD_ERR_ARG);
    CHECK(strstr(err.msg, "--port") && strstr(err.msg, "70000"));
    char *a2[] = {"serve", "--bogus", NULL};
    CHECK(config_load(&c, 2, a2, NULL, &err) == SD_ERR_ARG && strstr(err.msg, "--bogus"));
    char *a3[] = {"serve", "--model", NULL};
    CHECK(config_load(&c, 2, a3, NULL, &err) == SD_ERR_ARG && strstr(err.msg, "missing"));
    char *a4[] = {"serve", "--port", "12x", NULL};
    CHECK(config_load(&c, 3, a4, NULL, &err) == SD_ERR_ARG);
    char *a5[] = {"serve", "--help", NULL};
    CHECK(config_load(&c, 2, a5, NULL, &err) == SD_OK && c.help);
    CHECK(config_load(&c, 1, a5, bad_env, &err) == SD_ERR_ARG &&
          strstr(err.msg, "DIFFUSIOND_QUEUE_CAPACITY"));
    config_defaults(&c);
    char *a6[] = {"serve", "--plan-size", "300", NULL};
    CHECK(config_load(&c, 3, a6, NULL, &err) == SD_ERR_ARG && strstr(err.msg, "multiple of 8"));
}

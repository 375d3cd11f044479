/* test_server_json.c - /generate validation (json_api.c) against the exact
 * 422 bodies FastAPI + pydantic v2 produce for the same model. The expected
 * strings were produced by running pydantic 2.13 on a GenerationRequest
 * model with the same fields and constraints (see docs/api.md). */
#include <stdlib.h>
#include <string.h>

#include "server/api/json_api.h"
#include "test.h"

static const struct api_limits lim = {2000, 150, 1024, 8, 1 << 20, 0};

static const struct {
    const char *body;
    const char *detail; /* "" = valid */
} cases[] = {
    {"{\"prompt\":\"a cat\"}",
     ""},
    {"{}",
     "[{\"type\":\"missing\",\"loc\":[\"body\",\"prompt\"],\"msg\":\"Field required\",\"input\":{}}]"},
    {"{\"prompt\":5,\"num_inference_steps\":\"x\",\"guidance_scale\":null}",
     "[{\"type\":\"string_type\",\"loc\":[\"body\",\"prompt\"],\"msg\":\"Input should be a valid "
     "string\",\"input\":5},{\"type\":\"int_parsing\",\"loc\":[\"body\",\"num_inference_steps\"],"
     "\"msg\":\"Input should be a valid integer, unable to parse string as an integer\","
     "\"input\":\"x\"},{\"type\":\"float_type\",\"loc\":[\"body\",\"guidance_scale\"],\"msg\":\"Input"
     " should be a valid number\",\"input\":null}]"},
    {"{\"prompt\":\"a\",\"num_inference_steps\":\" 2_5 \",\"guidance_scale\":\"7\",\"seed\":\"-3\",\""
     "width\":\"64.0\",\"eta\":true}",
     ""},
    {"{\"prompt\":\"a\",\"num_inference_steps\":5.5}",
     "[{\"type\":\"int_from_float\",\"loc\":[\"body\",\"num_inference_steps\"],\"msg\":\"Input sh"
     "ould be a valid integer, got a number with a fractional part\",\"input\":5.5}]"},
    {"{\"prompt\":\"a\",\"num_inference_steps\":0,\"guidance_scale\":51,\"width\":100,\"height\""
     ":2048,\"eta\":-0.5,\"clip_skip\":25}",
     "[{\"type\":\"greater_than_equal\",\"loc\":[\"body\",\"num_inference_steps\"],\"msg\":\"Inpu"
     "t should be greater than or equal to 1\",\"input\":0,\"ctx\":{\"ge\":1}},{\"type\":\"les"
     "s_than_equal\",\"loc\":[\"body\",\"guidance_scale\"],\"msg\":\"Input should be less than"
     " or equal to 50\",\"input\":51,\"ctx\":{\"le\":50.0}},{\"type\":\"multiple_of\",\"loc\":[\"b"
     "ody\",\"width\"],\"msg\":\"Input should be a multiple of 8\",\"input\":100,\"ctx\":{\"mult"
     "iple_of\":8}},{\"type\":\"less_than_equal\",\"loc\":[\"body\",\"height\"],\"msg\":\"Input sh"
     "ould be less than or equal to 1024\",\"input\":2048,\"ctx\":{\"le\":1024}},{\"type\":\"g"
     "reater_than_equal\",\"loc\":[\"body\",\"eta\"],\"msg\":\"Input should be greater than or"
     " equal to 0\",\"input\":-0.5,\"ctx\":{\"ge\":0.0}},{\"type\":\"less_than_equal\",\"loc\":[\""
     "body\",\"clip_skip\"],\"msg\":\"Input should be less than or equal to 24\",\"input\":25"
     ",\"ctx\":{\"le\":24}}]"},
    {"{\"prompt\":\"a\",\"scheduler\":\"foo\"}",
     "[{\"type\":\"literal_error\",\"loc\":[\"body\",\"scheduler\"],\"msg\":\"Input should be 'de"
     "fault', 'pndm', 'ddim', 'euler', 'euler_a', 'dpmpp_2m', 'dpmpp_2m_karras' or '"
     "lcm'\",\"input\":\"foo\",\"ctx\":{\"expected\":\"'default', 'pndm', 'ddim', 'euler', 'eu"
     "ler_a', 'dpmpp_2m', 'dpmpp_2m_karras' or 'lcm'\"}}]"},
    {"{\"prompt\":\"a\",\"seed\":1e300}",
     "[{\"type\":\"int_parsing_size\",\"loc\":[\"body\",\"seed\"],\"msg\":\"Unable to parse input"
     " string as an integer, exceeded maximum size\",\"input\":1e+300}]"},
    {"{\"prompt\":\"a\",\"guidance_scale\":\"nan\"}",
     "[{\"type\":\"less_than_equal\",\"loc\":[\"body\",\"guidance_scale\"],\"msg\":\"Input should"
     " be less than or equal to 50\",\"input\":\"nan\",\"ctx\":{\"le\":50.0}}]"},
    {"{\"prompt\":\"a\",\"negative_prompt\":[\"x\"],\"seed\":[1],\"num_inference_steps\":{}}",
     "[{\"type\":\"string_type\",\"loc\":[\"body\",\"negative_prompt\"],\"msg\":\"Input should be"
     " a valid string\",\"input\":[\"x\"]},{\"type\":\"int_type\",\"loc\":[\"body\",\"num_inferenc"
     "e_steps\"],\"msg\":\"Input should be a valid integer\",\"input\":{}},{\"type\":\"int_typ"
     "e\",\"loc\":[\"body\",\"seed\"],\"msg\":\"Input should be a valid integer\",\"input\":[1]}]"},
    {"[1,2]",
     "[{\"type\":\"model_attributes_type\",\"loc\":[\"body\"],\"msg\":\"Input should be a valid"
     " dictionary or object to extract fields from\",\"input\":[1,2]}]"},
    {"{\"prompt\":\"a\",\"steps\":1000,\"extra\":{\"x\":1}}",
     ""},
    {"{\"prompt\":\"a\",\"seed\":null,\"negative_prompt\":null,\"width\":null,\"scheduler\":null"
     ",\"clip_skip\":null}",
     ""},
    {"{\"prompt\":\"a\",\"guidance_scale\":\"-inf\"}",
     "[{\"type\":\"greater_than_equal\",\"loc\":[\"body\",\"guidance_scale\"],\"msg\":\"Input sho"
     "uld be greater than or equal to 0\",\"input\":\"-inf\",\"ctx\":{\"ge\":0.0}}]"},
    {"{\"prompt\":\"a\",\"num_inference_steps\":true,\"guidance_scale\":false}",
     ""},
    {"{\"prompt\":\"a\",\"num_inference_steps\":\"5.\",\"guidance_scale\":\"1_0.5\"}",
     "[{\"type\":\"int_parsing\",\"loc\":[\"body\",\"num_inference_steps\"],\"msg\":\"Input shoul"
     "d be a valid integer, unable to parse string as an integer\",\"input\":\"5.\"}]"},
};

static char *detail_of(const char *body, const char *ctype, struct gen_request *req)
{
    json_t *detail = NULL;
    int rc = api_parse_generate(body, strlen(body), ctype, &lim, req, &detail);
    if (rc == SD_OK)
        return strdup("");
    if (rc != SD_ERR_ARG || !detail)
        return strdup("(error)");
    char *s = json_api_dumps(detail, NULL);
    json_decref(detail);
    return s;
}

TEST(server_json_pydantic_shapes)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct gen_request req;
        char *got = detail_of(cases[i].body, "application/json", &req);
        CHECK_MSG(!strcmp(got, cases[i].detail), "body %s\n    got  %s\n    want %s",
                  cases[i].body, got, cases[i].detail);
        free(got);
        gen_request_free(&req);
    }
}

TEST(server_json_values_and_defaults)
{
    struct gen_request r;
    char *d = detail_of("{\"prompt\":\"a cat\"}", NULL, &r);
    CHECK(!strcmp(d, ""));
    free(d);
    CHECK(!strcmp(r.prompt, "a cat") && r.negative_prompt == NULL);
    CHECK(r.steps == 50 && r.guidance == 7.5 && !r.has_seed && r.width == 0 && r.height == 0);
    CHECK(r.scheduler == SD_SCHED_DEFAULT && r.eta == 0 && r.clip_skip == 0);
    gen_request_free(&r);

    d = detail_of("{\"prompt\":\"p\",\"negative_prompt\":\"n\",\"num_inference_steps\":\" 2_5 \","
                  "\"guidance_scale\":\"1_0.5\",\"seed\":-3,\"width\":\"64.0\",\"height\":128,"
                  "\"scheduler\":\"euler_a\",\"eta\":true,\"clip_skip\":2,\"zzz\":1}",
                  "application/json; charset=utf-8", &r);
    CHECK(!strcmp(d, ""));
    free(d);
    CHECK(!strcmp(r.negative_prompt, "n") && r.steps == 25 && r.guidance == 10.5);
    CHECK(r.has_seed && r.seed == -3 && r.width == 64 && r.height == 128);
    CHECK(r.scheduler == SD_SCHED_EULER_A && r.eta == 1.0 && r.clip_skip == 2);

    /* What the worker reads back is what was accepted. */
    json_t *j = gen_request_to_json(&r);
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    struct gen_request back;
    struct sd_err err = {0};
    CHECK(gen_request_from_text(text, &back, &err) == SD_OK);
    CHECK(!strcmp(back.prompt, "p") && !strcmp(back.negative_prompt, "n") && back.steps == 25);
    CHECK(back.guidance == 10.5 && back.seed == -3 && back.width == 64 && back.height == 128);
    CHECK(back.scheduler == SD_SCHED_EULER_A && back.eta == 1.0 && back.clip_skip == 2);
    struct sd_params p;
    gen_request_to_params(&back, &p);
    CHECK(p.seed_set && p.seed == (uint64_t)-3 && p.steps == 25 && p.width == 64);
    free(text);
    gen_request_free(&back);
    gen_request_free(&r);
    CHECK(gen_request_from_text("{\"prompt\":1}", &back, &err) == SD_ERR_FORMAT);
    CHECK(strstr(err.msg, "prompt") != NULL);
}

TEST(server_json_body_level_errors)
{
    struct gen_request r;
    char *d = detail_of("", "application/json", &r);
    CHECK(!strcmp(d, "[{\"type\":\"missing\",\"loc\":[\"body\"],\"msg\":\"Field required\","
                     "\"input\":null}]"));
    free(d);
    d = detail_of("{\"prompt\": \"a\",", "application/json", &r);
    CHECK(strstr(d, "\"type\":\"json_invalid\",\"loc\":[\"body\",15],\"msg\":\"JSON decode "
                    "error\",\"input\":{},\"ctx\":{\"error\":") != NULL);
    free(d);
    d = detail_of("{\"prompt\":\"a\"}", "text/plain", &r);
    CHECK(!strcmp(d, "[{\"type\":\"model_attributes_type\",\"loc\":[\"body\"],\"msg\":\"Input "
                     "should be a valid dictionary or object to extract fields from\","
                     "\"input\":\"{\\\"prompt\\\":\\\"a\\\"}\"}]"));
    free(d);
    d = detail_of("{\"prompt\":\"a\"}", "application/vnd.api+json", &r);
    CHECK(!strcmp(d, ""));
    free(d);
    gen_request_free(&r);
    d = detail_of("{\"prompt\":\"a\\u0000b\"}", NULL, &r); /* no NULs inside C strings */
    CHECK(strstr(d, "json_invalid") != NULL);
    free(d);
}

TEST(server_json_prompt_length_in_characters)
{
    struct api_limits small = {3, 150, 1024, 8, 1 << 20, 0};
    struct gen_request r;
    json_t *detail = NULL;
    const char *ok = "{\"prompt\":\"\xc3\xa9\xc3\xa9\xc3\xa9\"}"; /* 3 chars, 6 bytes */
    CHECK(api_parse_generate(ok, strlen(ok), NULL, &small, &r, &detail) == SD_OK);
    gen_request_free(&r);
    const char *bad = "{\"prompt\":\"abcd\"}";
    CHECK(api_parse_generate(bad, strlen(bad), NULL, &small, &r, &detail) == SD_ERR_ARG);
    char *s = json_api_dumps(detail, NULL);
    CHECK(s && strstr(s, "\"string_too_long\"") && strstr(s, "at most 3 characters") &&
          strstr(s, "\"ctx\":{\"max_length\":3}"));
    free(s);
    json_decref(detail);
}

TEST(server_json_dumps_like_python)
{
    static const struct { double x; const char *s; } v[] = {
        {0.1, "0.1"}, {50, "50.0"}, {7.5, "7.5"}, {-0.5, "-0.5"}, {1e300, "1e+300"},
        {1e16, "1e+16"}, {1e15, "1000000000000000.0"}, {0.0001, "0.0001"}, {1e-5, "1e-05"},
        {1.5e-7, "1.5e-07"}, {123.456, "123.456"}, {0, "0.0"}, {2.5e-3, "0.0025"},
        {1.0 / 3, "0.3333333333333333"}, {-1e22, "-1e+22"}, {12345678.9, "12345678.9"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        json_t *j = json_real(v[i].x);
        char *s = json_api_dumps(j, NULL);
        CHECK_MSG(s && !strcmp(s, v[i].s), "%.17g -> %s, want %s", v[i].x, s, v[i].s);
        free(s);
        json_decref(j);
    }
    json_t *o = json_pack("{s:s,s:[i,b,n],s:s}", "a\"\\", "\n\t\x01\xc3\xa9", "k", -3, 1,
                          "z", "/");
    char *s = json_api_dumps(o, NULL);
    CHECK(s && !strcmp(s, "{\"a\\\"\\\\\":\"\\n\\t\\u0001\xc3\xa9\",\"k\":[-3,true,null],\"z\":\"/\"}"));
    free(s);
    json_decref(o);
}

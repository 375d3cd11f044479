/* config.c - see config.h. */
#include "model/config.h"

#include <jansson.h>
#include <string.h>

/* A JSON reader with a sticky error: the first problem is kept in err and
 * later lookups become no-ops, so loaders read like a list of fields. */
struct cfg {
    json_t *root;
    const char *path;
    struct sd_err *err;
    int status;
};

static int cfg_open(struct cfg *c, const char *path, struct sd_err *err)
{
    json_error_t je;
    memset(c, 0, sizeof *c);
    c->path = path;
    c->err = err;
    c->root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!c->root) {
        FILE *f = fopen(path, "r");
        if (!f)
            return sd_errf(err, SD_ERR_IO, "%s: missing (cannot open it)", path);
        fclose(f);
        return sd_errf(err, SD_ERR_FORMAT, "%s: invalid JSON at line %d: %s", path, je.line, je.text);
    }
    if (!json_is_object(c->root)) {
        json_decref(c->root);
        return sd_errf(err, SD_ERR_FORMAT, "%s: not a JSON object", path);
    }
    return SD_OK;
}

static int cfg_close(struct cfg *c)
{
    json_decref(c->root);
    return c->status;
}

static int cfg_fail(struct cfg *c, int code, const char *key, const char *what)
{
    if (!c->status)
        c->status = sd_errf(c->err, code, "%s: \"%s\" %s", c->path, key, what);
    return 0;
}

/* The value of key, or NULL when absent or JSON null. */
static json_t *cfg_get(struct cfg *c, const char *key)
{
    json_t *v = json_object_get(c->root, key);
    return json_is_null(v) ? NULL : v;
}

static int cfg_int(struct cfg *c, const char *key, int def, int lo, int hi)
{
    json_t *v = cfg_get(c, key);
    if (!v)
        return def;
    if (!json_is_integer(v))
        return cfg_fail(c, SD_ERR_FORMAT, key, "must be an integer");
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi) {
        char msg[96];
        snprintf(msg, sizeof msg, "is %lld, expected %d..%d", (long long)x, lo, hi);
        return cfg_fail(c, SD_ERR_FORMAT, key, msg);
    }
    return (int)x;
}

static float cfg_float(struct cfg *c, const char *key, float def)
{
    json_t *v = cfg_get(c, key);
    if (!v)
        return def;
    if (!json_is_number(v))
        return cfg_fail(c, SD_ERR_FORMAT, key, "must be a number");
    return (float)json_number_value(v);
}

static int cfg_bool(struct cfg *c, const char *key, int def)
{
    json_t *v = cfg_get(c, key);
    if (!v)
        return def;
    if (!json_is_boolean(v))
        return cfg_fail(c, SD_ERR_FORMAT, key, "must be true or false");
    return json_is_true(v);
}

static const char *cfg_str(struct cfg *c, const char *key, const char *def)
{
    json_t *v = cfg_get(c, key);
    if (!v)
        return def;
    if (!json_is_string(v))
        return cfg_fail(c, SD_ERR_FORMAT, key, "must be a string"), def;
    return json_string_value(v);
}

/* A list of ints, or (when allow_scalar) one int broadcast to n entries.
 * Returns the list length, or n for a broadcast scalar; 0 if absent. */
static int cfg_int_list(struct cfg *c, const char *key, int *out, int n, int allow_scalar, int lo, int hi)
{
    json_t *v = cfg_get(c, key);
    if (!v)
        return 0;
    if (json_is_integer(v) && allow_scalar) {
        int x = cfg_int(c, key, 0, lo, hi);
        for (int i = 0; i < n; i++)
            out[i] = x;
        return n;
    }
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > CFG_MAX_BLOCKS)
        return cfg_fail(c, SD_ERR_FORMAT, key, "must be a list of 1 to 8 integers");
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        if (!json_is_integer(e) || json_integer_value(e) < lo || json_integer_value(e) > hi)
            return cfg_fail(c, SD_ERR_FORMAT, key, "has an element that is not a valid integer");
        out[i] = (int)json_integer_value(e);
    }
    return (int)json_array_size(v);
}

/* A list of block class names; each must be `a` (-> 1) or `b` (-> 0). */
static int cfg_block_types(struct cfg *c, const char *key, int *out, const char *a, const char *b)
{
    json_t *v = cfg_get(c, key);
    if (!v)
        return 0;
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > CFG_MAX_BLOCKS)
        return cfg_fail(c, SD_ERR_FORMAT, key, "must be a list of 1 to 8 block names");
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        const char *s = json_string_value(e);
        if (s && !strcmp(s, a))
            out[i] = 1;
        else if (s && !strcmp(s, b))
            out[i] = 0;
        else {
            char msg[200];
            snprintf(msg, sizeof msg, "has unsupported block type \"%s\" (supported: %s, %s)",
                     s ? s : "?", a, b);
            return cfg_fail(c, SD_ERR_UNSUPPORTED, key, msg);
        }
    }
    return (int)json_array_size(v);
}

/* Keys that change the network in ways SD 1.x/2.x never use. */
static void cfg_reject_if_set(struct cfg *c, const char *key, const char *allowed)
{
    json_t *v = cfg_get(c, key);
    if (!v)
        return;
    if (allowed && json_is_string(v) && !strcmp(json_string_value(v), allowed))
        return;
    if (json_is_false(v))
        return;
    cfg_fail(c, SD_ERR_UNSUPPORTED, key, "is set to a value diffusiond does not support");
}

int unet_config_load(struct unet_config *u, const char *path, struct sd_err *err)
{
    struct cfg c;
    int rc = cfg_open(&c, path, err);
    if (rc)
        return rc;
    memset(u, 0, sizeof *u);
    const char *cls = cfg_str(&c, "_class_name", "UNet2DConditionModel");
    if (strcmp(cls, "UNet2DConditionModel"))
        cfg_fail(&c, SD_ERR_UNSUPPORTED, "_class_name", "is not UNet2DConditionModel");
    u->in_channels = cfg_int(&c, "in_channels", 4, 1, 64);
    u->out_channels = cfg_int(&c, "out_channels", 4, 1, 64);
    u->sample_size = cfg_int(&c, "sample_size", 64, 1, 1024);
    u->n_blocks = cfg_int_list(&c, "block_out_channels", u->block_out, 0, 0, 1, 65536);
    if (!u->n_blocks) {
        int def[] = {320, 640, 1280, 1280};
        u->n_blocks = 4;
        memcpy(u->block_out, def, sizeof def);
    }
    int n = u->n_blocks;
    int nd = cfg_block_types(&c, "down_block_types", u->down_attn, "CrossAttnDownBlock2D", "DownBlock2D");
    int nu = cfg_block_types(&c, "up_block_types", u->up_attn, "CrossAttnUpBlock2D", "UpBlock2D");
    if (!nd) {
        for (int i = 0; i < n; i++)
            u->down_attn[i] = i < n - 1;
        nd = n;
    }
    if (!nu) {
        for (int i = 0; i < n; i++)
            u->up_attn[i] = i > 0;
        nu = n;
    }
    if (!c.status && (nd != n || nu != n))
        cfg_fail(&c, SD_ERR_FORMAT, "down_block_types",
                 "and up_block_types must have one entry per block_out_channels entry");
    u->layers_per_block = cfg_int(&c, "layers_per_block", 2, 1, 16);
    /* "attention_head_dim" is really the number of heads (sd-reference 2.1) */
    int heads[CFG_MAX_BLOCKS];
    int nh = cfg_int_list(&c, "num_attention_heads", heads, n, 1, 1, 4096);
    if (!nh)
        nh = cfg_int_list(&c, "attention_head_dim", heads, n, 1, 1, 4096);
    if (!nh) {
        nh = n;
        for (int i = 0; i < n; i++)
            heads[i] = 8;
    }
    if (!c.status && nh != n)
        cfg_fail(&c, SD_ERR_FORMAT, "attention_head_dim", "must have one entry per block");
    memcpy(u->heads, heads, sizeof heads);
    if (!cfg_int_list(&c, "transformer_layers_per_block", u->transformer_layers, n, 1, 1, 16))
        for (int i = 0; i < n; i++)
            u->transformer_layers[i] = 1;
    u->cross_attention_dim = cfg_int(&c, "cross_attention_dim", 1280, 1, 65536);
    u->norm_groups = cfg_int(&c, "norm_num_groups", 32, 1, 4096);
    u->norm_eps = cfg_float(&c, "norm_eps", 1e-5f);
    u->use_linear_projection = cfg_bool(&c, "use_linear_projection", 0);
    u->upcast_attention = cfg_bool(&c, "upcast_attention", 0);
    u->flip_sin_to_cos = cfg_bool(&c, "flip_sin_to_cos", 1);
    u->freq_shift = cfg_float(&c, "freq_shift", 0);
    u->time_cond_proj_dim = cfg_int(&c, "time_cond_proj_dim", 0, 0, 65536);
    u->conv_in_kernel = cfg_int(&c, "conv_in_kernel", 3, 1, 7);
    u->conv_out_kernel = cfg_int(&c, "conv_out_kernel", 3, 1, 7);
    if (u->conv_in_kernel % 2 == 0 || u->conv_out_kernel % 2 == 0)
        cfg_fail(&c, SD_ERR_UNSUPPORTED, "conv_in_kernel", "must be odd");
    const char *mid = cfg_str(&c, "mid_block_type", "UNetMidBlock2DCrossAttn");
    u->mid_block = !strcmp(mid, "UNetMidBlock2DCrossAttn");
    if (!c.status && !u->mid_block)
        cfg_fail(&c, SD_ERR_UNSUPPORTED, "mid_block_type", "is not UNetMidBlock2DCrossAttn");
    if (cfg_get(&c, "mid_block_scale_factor") && cfg_float(&c, "mid_block_scale_factor", 1) != 1.0f)
        cfg_fail(&c, SD_ERR_UNSUPPORTED, "mid_block_scale_factor", "must be 1");
    cfg_reject_if_set(&c, "class_embed_type", NULL);
    cfg_reject_if_set(&c, "num_class_embeds", NULL);
    cfg_reject_if_set(&c, "addition_embed_type", "text_time");
    if (cfg_get(&c, "addition_embed_type")) {
        u->addition_time_embed_dim = cfg_int(&c, "addition_time_embed_dim", 0, 1, 65536);
        u->projection_class_embeddings_input_dim =
            cfg_int(&c, "projection_class_embeddings_input_dim", 0, 1, 1 << 20);
        if (!c.status && (!u->addition_time_embed_dim || !u->projection_class_embeddings_input_dim ||
                          u->projection_class_embeddings_input_dim <= 6 * u->addition_time_embed_dim))
            cfg_fail(&c, SD_ERR_FORMAT, "addition_embed_type",
                     "\"text_time\" needs addition_time_embed_dim and a larger "
                     "projection_class_embeddings_input_dim");
    }
    cfg_reject_if_set(&c, "encoder_hid_dim", NULL);
    cfg_reject_if_set(&c, "encoder_hid_dim_type", NULL);
    cfg_reject_if_set(&c, "dual_cross_attention", NULL);
    cfg_reject_if_set(&c, "only_cross_attention", NULL);
    cfg_reject_if_set(&c, "center_input_sample", NULL);
    cfg_reject_if_set(&c, "timestep_post_act", NULL);
    cfg_reject_if_set(&c, "resnet_time_scale_shift", "default");
    cfg_reject_if_set(&c, "time_embedding_type", "positional");
    cfg_reject_if_set(&c, "attention_type", "default");
    cfg_reject_if_set(&c, "cross_attention_norm", NULL);
    const char *act = cfg_str(&c, "act_fn", "silu");
    if (strcmp(act, "silu"))
        cfg_fail(&c, SD_ERR_UNSUPPORTED, "act_fn", "is not \"silu\"");
    for (int i = 0; !c.status && i < n; i++)
        if (u->block_out[i] % u->norm_groups || u->block_out[i] % u->heads[i])
            cfg_fail(&c, SD_ERR_FORMAT, "block_out_channels",
                     "must be divisible by norm_num_groups and the head counts");
    return cfg_close(&c);
}

int vae_config_load(struct vae_config *v, const char *path, struct sd_err *err)
{
    struct cfg c;
    int rc = cfg_open(&c, path, err);
    if (rc)
        return rc;
    memset(v, 0, sizeof *v);
    const char *cls = cfg_str(&c, "_class_name", "AutoencoderKL");
    if (strcmp(cls, "AutoencoderKL"))
        cfg_fail(&c, SD_ERR_UNSUPPORTED, "_class_name", "is not AutoencoderKL");
    v->in_channels = cfg_int(&c, "in_channels", 3, 1, 64);
    v->out_channels = cfg_int(&c, "out_channels", 3, 1, 64);
    v->latent_channels = cfg_int(&c, "latent_channels", 4, 1, 64);
    v->n_blocks = cfg_int_list(&c, "block_out_channels", v->block_out, 0, 0, 1, 65536);
    if (!v->n_blocks) {
        v->n_blocks = 1;
        v->block_out[0] = 64;
    }
    int types[CFG_MAX_BLOCKS];
    int nd = cfg_block_types(&c, "down_block_types", types, "DownEncoderBlock2D", "-");
    int nu = cfg_block_types(&c, "up_block_types", types, "UpDecoderBlock2D", "-");
    if (!c.status && ((nd && nd != v->n_blocks) || (nu && nu != v->n_blocks)))
        cfg_fail(&c, SD_ERR_FORMAT, "down_block_types", "must have one entry per block");
    v->layers_per_block = cfg_int(&c, "layers_per_block", 1, 1, 16);
    v->norm_groups = cfg_int(&c, "norm_num_groups", 32, 1, 4096);
    v->scaling_factor = cfg_float(&c, "scaling_factor", 0.18215f);
    v->shift_factor = cfg_float(&c, "shift_factor", 0.0f);
    v->sample_size = cfg_int(&c, "sample_size", 32, 1, 65536);
    v->use_quant_conv = cfg_bool(&c, "use_quant_conv", 1);
    v->use_post_quant_conv = cfg_bool(&c, "use_post_quant_conv", 1);
    v->mid_attn = cfg_bool(&c, "mid_block_add_attention", 1);
    const char *act = cfg_str(&c, "act_fn", "silu");
    if (strcmp(act, "silu"))
        cfg_fail(&c, SD_ERR_UNSUPPORTED, "act_fn", "is not \"silu\"");
    if (!c.status && v->scaling_factor == 0)
        cfg_fail(&c, SD_ERR_FORMAT, "scaling_factor", "must not be 0");
    for (int i = 0; !c.status && i < v->n_blocks; i++)
        if (v->block_out[i] % v->norm_groups)
            cfg_fail(&c, SD_ERR_FORMAT, "block_out_channels", "must be divisible by norm_num_groups");
    return cfg_close(&c);
}

int clip_config_load(struct clip_config *t, const char *path, struct sd_err *err)
{
    struct cfg c;
    int rc = cfg_open(&c, path, err);
    if (rc)
        return rc;
    memset(t, 0, sizeof *t);
    json_t *arch = cfg_get(&c, "architectures");
    if (arch && json_is_array(arch) && json_array_size(arch) > 0) {
        const char *a = json_string_value(json_array_get(arch, 0));
        if (!a || (strcmp(a, "CLIPTextModel") && strcmp(a, "CLIPTextModelWithProjection")))
            cfg_fail(&c, SD_ERR_UNSUPPORTED, "architectures", "is not CLIPTextModel");
        else
            t->with_projection = !strcmp(a, "CLIPTextModelWithProjection");
    }
    t->hidden = cfg_int(&c, "hidden_size", 512, 1, 65536);
    t->intermediate = cfg_int(&c, "intermediate_size", 2048, 1, 1 << 20);
    t->heads = cfg_int(&c, "num_attention_heads", 8, 1, 4096);
    t->layers = cfg_int(&c, "num_hidden_layers", 12, 1, 1024);
    t->max_positions = cfg_int(&c, "max_position_embeddings", 77, 1, 65536);
    t->vocab_size = cfg_int(&c, "vocab_size", 49408, 1, 1 << 24);
    t->eps = cfg_float(&c, "layer_norm_eps", 1e-5f);
    t->eos_token_id = cfg_int(&c, "eos_token_id", 2, -1, 1 << 24);
    t->projection_dim = cfg_int(&c, "projection_dim", 512, 1, 65536);
    const char *act = cfg_str(&c, "hidden_act", "quick_gelu");
    if (!strcmp(act, "quick_gelu"))
        t->act = CLIP_QUICK_GELU;
    else if (!strcmp(act, "gelu"))
        t->act = CLIP_GELU;
    else
        cfg_fail(&c, SD_ERR_UNSUPPORTED, "hidden_act", "is not quick_gelu or gelu");
    if (!c.status && t->hidden % t->heads)
        cfg_fail(&c, SD_ERR_FORMAT, "hidden_size", "must be divisible by num_attention_heads");
    return cfg_close(&c);
}

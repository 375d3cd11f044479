/* pytorch.c - see pytorch.h. */
#include "model/pytorch.h"

#include <errno.h>
#include <fcntl.h>
#include <minizip/unzip.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------- values */

#define MAX_STACK (1 << 20)
#define MAX_MEMO (1 << 22)
#define MAX_VALUES (1 << 24)

enum pv_kind {
    PV_NONE, PV_BOOL, PV_INT, PV_FLOAT, PV_STR, PV_BYTES, PV_TUPLE, PV_LIST, PV_DICT,
    PV_GLOBAL, PV_STORAGE, PV_TENSOR, PV_OPAQUE, PV_MARK,
};

/* The globals a state dict uses; nothing else is accepted. */
enum pv_global {
    G_ORDERED_DICT, G_REBUILD_TENSOR_V2, G_REBUILD_PARAMETER, G_STORAGE, G_NP_SCALAR, G_NP_DTYPE, G_INERT,
    G_LATIN1, /* _codecs.encode(str, "latin1"): how protocol 2 spells bytes (numpy scalars) */
};

struct pv {
    enum pv_kind k;
    int64_t i;          /* INT, BOOL; STORAGE: numel; TENSOR: offset */
    double f;
    const char *s;      /* STR, BYTES (in the pickle buffer or the arena), STORAGE: key */
    size_t len;
    struct pv **items;  /* TUPLE, LIST; DICT: key, value, key, value... */
    int n, cap;
    enum pv_global g;   /* GLOBAL */
    enum st_dtype dt;   /* GLOBAL G_STORAGE, STORAGE, TENSOR */
    struct pv *storage; /* TENSOR */
    int ndim;           /* TENSOR */
    int64_t shape[ST_MAX_DIMS];
};

struct vm {
    const uint8_t *p, *end;
    const char *label;
    struct sd_err *err;
    struct pv **stack;
    int sp, cap;
    struct pv **memo;
    size_t nmemo;
    /* every value and item array, freed together */
    void **owned;
    size_t nowned, capowned;
    size_t nvalues;
    int proto;
};

static int fail(struct vm *m, int code, const char *what)
{
    return sd_errf(m->err, code, "%s: pickle: %s", m->label, what);
}

static void *own(struct vm *m, void *p)
{
    if (!p)
        return NULL;
    if (m->nowned == m->capowned) {
        size_t cap = m->capowned ? 2 * m->capowned : 4096;
        void **q = realloc(m->owned, cap * sizeof *q);
        if (!q) {
            free(p);
            return NULL;
        }
        m->owned = q, m->capowned = cap;
    }
    m->owned[m->nowned++] = p;
    return p;
}

static struct pv *val(struct vm *m, enum pv_kind k)
{
    if (++m->nvalues > MAX_VALUES)
        return NULL;
    struct pv *v = own(m, calloc(1, sizeof *v));
    if (v)
        v->k = k;
    return v;
}

static int append(struct vm *m, struct pv *c, struct pv *x)
{
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 8;
        if (cap > MAX_VALUES)
            return -1;
        struct pv **q = malloc(cap * sizeof *q);
        if (!q || !own(m, q))
            return -1;
        if (c->n)
            memcpy(q, c->items, c->n * sizeof *q);
        c->items = q, c->cap = cap; /* the old array stays owned until the end */
    }
    c->items[c->n++] = x;
    return 0;
}

static int push(struct vm *m, struct pv *v)
{
    if (!v)
        return fail(m, SD_ERR_NOMEM, "out of memory (or too many values)");
    if (m->sp == m->cap) {
        if (m->cap >= MAX_STACK)
            return fail(m, SD_ERR_FORMAT, "stack too deep");
        int cap = m->cap ? 2 * m->cap : 256;
        struct pv **q = realloc(m->stack, cap * sizeof *q);
        if (!q)
            return fail(m, SD_ERR_NOMEM, "out of memory");
        m->stack = q, m->cap = cap;
    }
    m->stack[m->sp++] = v;
    return SD_OK;
}

static struct pv *pop(struct vm *m)
{
    return m->sp > 0 && m->stack[m->sp - 1]->k != PV_MARK ? m->stack[--m->sp] : NULL;
}

static struct pv *top(struct vm *m)
{
    return m->sp > 0 && m->stack[m->sp - 1]->k != PV_MARK ? m->stack[m->sp - 1] : NULL;
}

/* The index of the topmost MARK, or -1. */
static int mark_at(struct vm *m)
{
    for (int i = m->sp - 1; i >= 0; i--)
        if (m->stack[i]->k == PV_MARK)
            return i;
    return -1;
}

/* --------------------------------------------------------- reading */

static int need(struct vm *m, size_t n)
{
    return (size_t)(m->end - m->p) >= n;
}

static uint64_t le(const uint8_t *p, int n)
{
    uint64_t x = 0;
    for (int i = n - 1; i >= 0; i--)
        x = x << 8 | p[i];
    return x;
}

/* A line ending in '\n' (GLOBAL's module and name). */
static const char *line(struct vm *m, size_t *len)
{
    const uint8_t *nl = memchr(m->p, '\n', (size_t)(m->end - m->p));
    if (!nl || nl - m->p > 256)
        return NULL;
    const char *s = (const char *)m->p;
    *len = (size_t)(nl - m->p);
    m->p = nl + 1;
    return s;
}

static int is(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && !memcmp(s, lit, n);
}

/* module.name -> a whitelisted global, or a refusal naming it. */
static int global(struct vm *m, const char *mod, size_t ml, const char *name, size_t nl)
{
    static const struct {
        const char *mod, *name;
        enum pv_global g;
        enum st_dtype dt;
    } ok[] = {
        {"collections", "OrderedDict", G_ORDERED_DICT, 0},
        {"torch._utils", "_rebuild_tensor_v2", G_REBUILD_TENSOR_V2, 0},
        {"torch._utils", "_rebuild_parameter", G_REBUILD_PARAMETER, 0},
        {"torch", "FloatStorage", G_STORAGE, ST_F32},     {"torch", "HalfStorage", G_STORAGE, ST_F16},
        {"torch", "BFloat16Storage", G_STORAGE, ST_BF16}, {"torch", "DoubleStorage", G_STORAGE, ST_F64},
        {"torch", "LongStorage", G_STORAGE, ST_I64},      {"torch", "IntStorage", G_STORAGE, ST_I32},
        {"torch", "ShortStorage", G_STORAGE, ST_I16},     {"torch", "CharStorage", G_STORAGE, ST_I8},
        {"torch", "ByteStorage", G_STORAGE, ST_U8},       {"torch", "BoolStorage", G_STORAGE, ST_BOOL},
        {"numpy.core.multiarray", "scalar", G_NP_SCALAR, 0},
        {"numpy._core.multiarray", "scalar", G_NP_SCALAR, 0},
        {"numpy", "dtype", G_NP_DTYPE, 0},
        {"_codecs", "encode", G_LATIN1, 0},
        {"pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint", G_INERT, 0},
        {"lightning.pytorch.callbacks.model_checkpoint", "ModelCheckpoint", G_INERT, 0},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (is(mod, ml, ok[i].mod) && is(name, nl, ok[i].name)) {
            struct pv *v = val(m, PV_GLOBAL);
            if (v)
                v->g = ok[i].g, v->dt = ok[i].dt;
            return push(m, v);
        }
    char msg[200];
    snprintf(msg, sizeof msg, "refers to %.*s.%.*s, which is not part of a state dict (refused: a "
             "checkpoint could run code through it)", (int)(ml < 80 ? ml : 80), mod, (int)(nl < 80 ? nl : 80), name);
    return fail(m, SD_ERR_UNSUPPORTED, msg);
}

static int64_t ival(const struct pv *v, int *ok)
{
    if (v && (v->k == PV_INT || v->k == PV_BOOL))
        return v->i;
    *ok = 0;
    return 0;
}

/* _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]) */
static struct pv *rebuild_tensor(struct vm *m, struct pv *args)
{
    if (args->k != PV_TUPLE || args->n < 4 || args->items[0]->k != PV_STORAGE || args->items[2]->k != PV_TUPLE ||
        args->items[3]->k != PV_TUPLE || args->items[2]->n != args->items[3]->n || args->items[2]->n > ST_MAX_DIMS)
        return NULL;
    struct pv *t = val(m, PV_TENSOR);
    if (!t)
        return NULL;
    int ok = 1;
    t->storage = args->items[0];
    t->dt = t->storage->dt;
    t->i = ival(args->items[1], &ok);
    t->ndim = args->items[2]->n;
    int64_t numel = 1, expect = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        int64_t sz = ival(args->items[2]->items[d], &ok), st = ival(args->items[3]->items[d], &ok);
        if (sz < 0 || sz > ((int64_t)1 << 40))
            ok = 0;
        if (sz > 1 && st != expect) /* contiguous, as torch.save writes state dicts */
            ok = 0;
        t->shape[d] = sz;
        if (sz > 1 && expect > ((int64_t)1 << 40) / sz)
            ok = 0;
        else if (sz > 1)
            expect *= sz;
        if (sz && numel > ((int64_t)1 << 40) / sz)
            ok = 0;
        else
            numel *= sz;
    }
    if (!ok || t->i < 0 || numel > ((int64_t)1 << 40) || t->i > t->storage->i || numel > t->storage->i - t->i)
        return NULL;
    return t;
}

static int op_reduce(struct vm *m, int newobj)
{
    struct pv *args = pop(m), *f = pop(m);
    if (!args || !f || args->k != PV_TUPLE || f->k != PV_GLOBAL)
        return fail(m, SD_ERR_FORMAT, newobj ? "NEWOBJ without a class and arguments" : "REDUCE of a non-global");
    struct pv *r = NULL;
    switch (f->g) {
    case G_ORDERED_DICT:
        r = val(m, PV_DICT);
        break;
    case G_REBUILD_TENSOR_V2:
        if (!(r = rebuild_tensor(m, args)))
            return fail(m, SD_ERR_FORMAT, "a tensor that is not a contiguous view inside its storage");
        break;
    case G_REBUILD_PARAMETER:
        if (args->n < 1 || args->items[0]->k != PV_TENSOR)
            return fail(m, SD_ERR_FORMAT, "_rebuild_parameter of a non-tensor");
        r = args->items[0];
        break;
    case G_NP_SCALAR:
        /* scalar(dtype, bytes): Lightning's global_step as a numpy integer */
        r = val(m, PV_OPAQUE);
        if (r && args->n == 2 && args->items[0]->k == PV_OPAQUE && args->items[0]->s &&
            args->items[1]->k == PV_BYTES && (args->items[1]->len == 8 || args->items[1]->len == 4) &&
            (!strcmp(args->items[0]->s, "i8") || !strcmp(args->items[0]->s, "i4"))) {
            r->k = PV_INT;
            r->i = (int64_t)le((const uint8_t *)args->items[1]->s, (int)args->items[1]->len);
            if (args->items[1]->len == 4)
                r->i = (int32_t)r->i;
        }
        break;
    case G_NP_DTYPE:
        r = val(m, PV_OPAQUE);
        if (r && args->n >= 1 && args->items[0]->k == PV_STR && args->items[0]->len < 8) {
            char *s = own(m, strndup(args->items[0]->s, args->items[0]->len));
            r->s = s;
        }
        break;
    case G_INERT:
        r = val(m, PV_OPAQUE);
        break;
    case G_LATIN1: { /* UTF-8 text of code points < 256 -> those bytes */
        if (args->n != 2 || args->items[0]->k != PV_STR || args->items[1]->k != PV_STR ||
            !is(args->items[1]->s, args->items[1]->len, "latin1"))
            return fail(m, SD_ERR_FORMAT, "_codecs.encode other than (str, 'latin1')");
        const uint8_t *u = (const uint8_t *)args->items[0]->s;
        size_t n = args->items[0]->len, o = 0;
        char *b = own(m, malloc(n ? n : 1));
        if (!b)
            return fail(m, SD_ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < n;) {
            if (u[i] < 0x80)
                b[o++] = (char)u[i++];
            else if ((u[i] & 0xfe) == 0xc2 && i + 1 < n && (u[i + 1] & 0xc0) == 0x80) {
                b[o++] = (char)(((u[i] & 0x1f) << 6) | (u[i + 1] & 0x3f));
                i += 2;
            } else
                return fail(m, SD_ERR_FORMAT, "latin1 text with a character above U+00FF");
        }
        r = val(m, PV_BYTES);
        if (r)
            r->s = b, r->len = o;
        break;
    }
    case G_STORAGE:
        return fail(m, SD_ERR_FORMAT, "a storage type called directly");
    }
    return push(m, r);
}

/* BINPERSID: ('storage', <storage type>, key, location, numel) */
static int op_persid(struct vm *m)
{
    struct pv *pid = pop(m);
    if (!pid || pid->k != PV_TUPLE || pid->n < 5 || pid->items[0]->k != PV_STR ||
        !is(pid->items[0]->s, pid->items[0]->len, "storage") || pid->items[1]->k != PV_GLOBAL ||
        pid->items[1]->g != G_STORAGE || pid->items[2]->k != PV_STR || pid->items[4]->k != PV_INT ||
        pid->items[4]->i < 0)
        return fail(m, SD_ERR_FORMAT, "a persistent id that is not a storage reference");
    struct pv *s = val(m, PV_STORAGE);
    if (s) {
        s->dt = pid->items[1]->dt;
        s->s = pid->items[2]->s, s->len = pid->items[2]->len;
        s->i = pid->items[4]->i;
    }
    return push(m, s);
}

static int op_setitems(struct vm *m, int many)
{
    int mk = many ? mark_at(m) : m->sp - 3;
    if (mk < 0 || (m->sp - mk - 1) % 2 || (!many && m->sp < 3))
        return fail(m, SD_ERR_FORMAT, "SETITEM(S) without a dict");
    int base = many ? mk - 1 : mk;
    if (base < 0)
        return fail(m, SD_ERR_FORMAT, "SETITEMS without a dict");
    struct pv *d = m->stack[base];
    int first = many ? mk + 1 : mk + 1;
    if (d->k == PV_DICT) {
        for (int i = first; i < m->sp; i++)
            if (append(m, d, m->stack[i]))
                return fail(m, SD_ERR_NOMEM, "out of memory");
    } else if (d->k != PV_OPAQUE)
        return fail(m, SD_ERR_FORMAT, "SETITEM(S) on a value that is not a dict");
    m->sp = base + 1;
    return SD_OK;
}

static int op_appends(struct vm *m, int many)
{
    int mk = many ? mark_at(m) : m->sp - 2;
    int base = many ? mk - 1 : mk;
    if (mk < 0 || base < 0)
        return fail(m, SD_ERR_FORMAT, "APPEND(S) without a list");
    struct pv *l = m->stack[base];
    if (l->k == PV_LIST) {
        for (int i = mk + (many ? 1 : 1); i < m->sp; i++)
            if (append(m, l, m->stack[i]))
                return fail(m, SD_ERR_NOMEM, "out of memory");
    } else if (l->k != PV_OPAQUE)
        return fail(m, SD_ERR_FORMAT, "APPEND(S) on a value that is not a list");
    m->sp = base + 1;
    return SD_OK;
}

/* Pack the values above the topmost MARK (or the top n) into a tuple/list/dict. */
static int op_collect(struct vm *m, enum pv_kind k, int n)
{
    int from = n < 0 ? mark_at(m) + 1 : m->sp - n;
    if ((n < 0 && from == 0) || from < 0 || (n >= 0 && mark_at(m) >= from))
        return fail(m, SD_ERR_FORMAT, "a tuple, list or dict without its items");
    if (k == PV_DICT && (m->sp - from) % 2)
        return fail(m, SD_ERR_FORMAT, "a dict with an odd number of items");
    struct pv *c = val(m, k);
    if (!c)
        return fail(m, SD_ERR_NOMEM, "out of memory");
    for (int i = from; i < m->sp; i++)
        if (append(m, c, m->stack[i]))
            return fail(m, SD_ERR_NOMEM, "out of memory");
    m->sp = n < 0 ? from - 1 : from;
    return push(m, c);
}

static int memo_put(struct vm *m, size_t idx)
{
    struct pv *v = top(m);
    if (!v || idx >= MAX_MEMO)
        return fail(m, SD_ERR_FORMAT, "memo index out of range");
    if (idx >= m->nmemo) {
        size_t n = idx + 1 > 2 * m->nmemo ? idx + 1 : 2 * m->nmemo;
        struct pv **q = realloc(m->memo, n * sizeof *q);
        if (!q)
            return fail(m, SD_ERR_NOMEM, "out of memory");
        memset(q + m->nmemo, 0, (n - m->nmemo) * sizeof *q);
        m->memo = q, m->nmemo = n;
    }
    m->memo[idx] = v;
    return SD_OK;
}

static int memo_get(struct vm *m, size_t idx)
{
    if (idx >= m->nmemo || !m->memo[idx])
        return fail(m, SD_ERR_FORMAT, "memo index not set");
    return push(m, m->memo[idx]);
}

static int string(struct vm *m, size_t n, enum pv_kind k)
{
    if (!need(m, n))
        return fail(m, SD_ERR_FORMAT, "truncated string");
    struct pv *v = val(m, k);
    if (v)
        v->s = (const char *)m->p, v->len = n;
    m->p += n;
    return push(m, v);
}

/* Run the machine to STOP; the result is the value left on the stack. */
static int run(struct vm *m, struct pv **result)
{
    size_t memo_next = 0;
    while (m->p < m->end) {
        uint8_t op = *m->p++;
        int rc = SD_OK;
        size_t n, ml, nl;
        const char *mod, *name;
        switch (op) {
        case 0x80: /* PROTO */
            if (!need(m, 1) || *m->p > 5)
                return fail(m, SD_ERR_UNSUPPORTED, "unknown protocol");
            m->proto = *m->p++;
            break;
        case 0x95: /* FRAME */
            if (!need(m, 8))
                return fail(m, SD_ERR_FORMAT, "truncated FRAME");
            m->p += 8;
            break;
        case '}': rc = push(m, val(m, PV_DICT)); break;
        case ']': rc = push(m, val(m, PV_LIST)); break;
        case ')': rc = push(m, val(m, PV_TUPLE)); break;
        case '(': rc = push(m, val(m, PV_MARK)); break;
        case 'N': rc = push(m, val(m, PV_NONE)); break;
        case 0x88:
        case 0x89: {
            struct pv *v = val(m, PV_BOOL);
            if (v)
                v->i = op == 0x88;
            rc = push(m, v);
            break;
        }
        case 'J': case 'K': case 'M': { /* BININT, BININT1, BININT2 */
            int w = op == 'J' ? 4 : op == 'K' ? 1 : 2;
            if (!need(m, (size_t)w))
                return fail(m, SD_ERR_FORMAT, "truncated integer");
            struct pv *v = val(m, PV_INT);
            if (v)
                v->i = op == 'J' ? (int32_t)le(m->p, 4) : (int64_t)le(m->p, w);
            m->p += w;
            rc = push(m, v);
            break;
        }
        case 0x8a: /* LONG1 */
            if (!need(m, 1) || !need(m, 1 + (size_t)m->p[0]))
                return fail(m, SD_ERR_FORMAT, "truncated LONG1");
            n = *m->p++;
            if (n > 8)
                return fail(m, SD_ERR_UNSUPPORTED, "an integer wider than 64 bits");
            {
                struct pv *v = val(m, PV_INT);
                uint64_t x = n ? le(m->p, (int)n) : 0;
                if (n && n < 8 && (m->p[n - 1] & 0x80))
                    x |= ~(uint64_t)0 << (8 * n); /* sign-extend */
                if (v)
                    v->i = (int64_t)x;
                m->p += n;
                rc = push(m, v);
            }
            break;
        case 'G': { /* BINFLOAT, big-endian */
            if (!need(m, 8))
                return fail(m, SD_ERR_FORMAT, "truncated float");
            uint64_t b = 0;
            for (int i = 0; i < 8; i++)
                b = b << 8 | m->p[i];
            m->p += 8;
            struct pv *v = val(m, PV_FLOAT);
            if (v)
                memcpy(&v->f, &b, 8);
            rc = push(m, v);
            break;
        }
        case 'X': case 'B': case 'T': /* 4-byte length */
            if (!need(m, 4))
                return fail(m, SD_ERR_FORMAT, "truncated length");
            n = (size_t)le(m->p, 4);
            m->p += 4;
            rc = string(m, n, op == 'B' ? PV_BYTES : PV_STR);
            break;
        case 0x8c: case 'C': case 'U': /* 1-byte length */
            if (!need(m, 1))
                return fail(m, SD_ERR_FORMAT, "truncated length");
            n = *m->p++;
            rc = string(m, n, op == 'C' ? PV_BYTES : PV_STR);
            break;
        case 0x8d: case 0x8e: /* BINUNICODE8, BINBYTES8 */
            if (!need(m, 8))
                return fail(m, SD_ERR_FORMAT, "truncated length");
            n = (size_t)le(m->p, 8);
            m->p += 8;
            rc = string(m, n, op == 0x8e ? PV_BYTES : PV_STR);
            break;
        case 'c': /* GLOBAL "module\nname\n" */
            if (!(mod = line(m, &ml)) || !(name = line(m, &nl)))
                return fail(m, SD_ERR_FORMAT, "truncated GLOBAL");
            rc = global(m, mod, ml, name, nl);
            break;
        case 0x93: { /* STACK_GLOBAL */
            struct pv *nm = pop(m), *md = pop(m);
            if (!nm || !md || nm->k != PV_STR || md->k != PV_STR)
                return fail(m, SD_ERR_FORMAT, "STACK_GLOBAL without names");
            rc = global(m, md->s, md->len, nm->s, nm->len);
            break;
        }
        case 'q': /* BINPUT */
            if (!need(m, 1))
                return fail(m, SD_ERR_FORMAT, "truncated BINPUT");
            rc = memo_put(m, *m->p++);
            break;
        case 'r': /* LONG_BINPUT */
            if (!need(m, 4))
                return fail(m, SD_ERR_FORMAT, "truncated LONG_BINPUT");
            rc = memo_put(m, (size_t)le(m->p, 4));
            m->p += 4;
            break;
        case 0x94: /* MEMOIZE */
            rc = memo_put(m, memo_next++);
            break;
        case 'h': /* BINGET */
            if (!need(m, 1))
                return fail(m, SD_ERR_FORMAT, "truncated BINGET");
            rc = memo_get(m, *m->p++);
            break;
        case 'j': /* LONG_BINGET */
            if (!need(m, 4))
                return fail(m, SD_ERR_FORMAT, "truncated LONG_BINGET");
            rc = memo_get(m, (size_t)le(m->p, 4));
            m->p += 4;
            break;
        case 't': rc = op_collect(m, PV_TUPLE, -1); break;
        case 0x85: rc = op_collect(m, PV_TUPLE, 1); break;
        case 0x86: rc = op_collect(m, PV_TUPLE, 2); break;
        case 0x87: rc = op_collect(m, PV_TUPLE, 3); break;
        case 'l': rc = op_collect(m, PV_LIST, -1); break;
        case 'd': rc = op_collect(m, PV_DICT, -1); break;
        case 'a': rc = op_appends(m, 0); break;
        case 'e': rc = op_appends(m, 1); break;
        case 's': rc = op_setitems(m, 0); break;
        case 'u': rc = op_setitems(m, 1); break;
        case 'Q': rc = op_persid(m); break;
        case 'R': rc = op_reduce(m, 0); break;
        case 0x81: rc = op_reduce(m, 1); break; /* NEWOBJ: the same for our globals */
        case 'b': /* BUILD: state for __setstate__, which we never call */
            if (!pop(m) || !top(m))
                return fail(m, SD_ERR_FORMAT, "BUILD without an object");
            break;
        case '0': /* POP */
            if (m->sp < 1)
                return fail(m, SD_ERR_FORMAT, "POP of an empty stack");
            m->sp--;
            break;
        case '1': { /* POP_MARK */
            int mk = mark_at(m);
            if (mk < 0)
                return fail(m, SD_ERR_FORMAT, "POP_MARK without a mark");
            m->sp = mk;
            break;
        }
        case '2': /* DUP */
            if (!top(m))
                return fail(m, SD_ERR_FORMAT, "DUP of an empty stack");
            rc = push(m, top(m));
            break;
        case '.': /* STOP */
            if (m->sp != 1 || m->stack[0]->k == PV_MARK)
                return fail(m, SD_ERR_FORMAT, "STOP with the stack not holding one value");
            *result = m->stack[0];
            return SD_OK;
        default: {
            char msg[64];
            snprintf(msg, sizeof msg, "opcode 0x%02x is not used by state dicts (refused)", op);
            return fail(m, SD_ERR_UNSUPPORTED, msg);
        }
        }
        if (rc)
            return rc;
    }
    return fail(m, SD_ERR_FORMAT, "no STOP");
}

static const struct pv *dict_get(const struct pv *d, const char *key)
{
    for (int i = 0; d && d->k == PV_DICT && i + 1 < d->n; i += 2)
        if (d->items[i]->k == PV_STR && is(d->items[i]->s, d->items[i]->len, key))
            return d->items[i + 1];
    return NULL;
}

void pt_state_free(struct pt_state *s)
{
    for (int i = 0; i < s->n; i++) {
        free(s->t[i].name);
        free(s->t[i].storage_key);
    }
    free(s->t);
    memset(s, 0, sizeof *s);
}

int pt_parse_pickle(const uint8_t *buf, size_t len, const char *label, struct pt_state *out, struct sd_err *err)
{
    memset(out, 0, sizeof *out);
    out->global_step = -1;
    if (len > PT_MAX_PICKLE)
        return sd_errf(err, SD_ERR_FORMAT, "%s: pickle of %zu bytes is over the %u-byte limit", label, len,
                       PT_MAX_PICKLE);
    struct vm m = {.p = buf, .end = buf + len, .label = label, .err = err};
    struct pv *root = NULL;
    int rc = run(&m, &root);
    if (!rc) {
        const struct pv *sd = dict_get(root, "state_dict");
        if (!sd || sd->k != PV_DICT)
            sd = root;
        const struct pv *gs = dict_get(root, "global_step");
        if (gs && gs->k == PV_INT)
            out->global_step = (long)gs->i;
        if (sd->k != PV_DICT)
            rc = sd_errf(err, SD_ERR_FORMAT, "%s: the pickle holds no state dict", label);
        int cap = sd->k == PV_DICT ? sd->n / 2 : 0;
        out->t = calloc(cap ? cap : 1, sizeof *out->t);
        if (!rc && !out->t)
            rc = sd_errf(err, SD_ERR_NOMEM, "out of memory");
        for (int i = 0; !rc && i + 1 < sd->n; i += 2) {
            const struct pv *k = sd->items[i], *v = sd->items[i + 1];
            if (k->k != PV_STR || v->k != PV_TENSOR)
                continue; /* not a tensor entry (_metadata, ...) */
            struct pt_tensor *t = &out->t[out->n];
            t->name = strndup(k->s, k->len);
            t->storage_key = strndup(v->storage->s, v->storage->len);
            if (!t->name || !t->storage_key || memchr(k->s, 0, k->len)) {
                free(t->name), free(t->storage_key);
                rc = sd_errf(err, t->name && t->storage_key ? SD_ERR_FORMAT : SD_ERR_NOMEM,
                             "%s: a tensor name with a NUL byte, or out of memory", label);
                break;
            }
            t->dtype = v->dt;
            t->ndim = v->ndim;
            memcpy(t->shape, v->shape, sizeof t->shape);
            t->storage_numel = v->storage->i;
            t->offset = v->i;
            out->n++;
        }
    }
    for (size_t i = 0; i < m.nowned; i++)
        free(m.owned[i]);
    free(m.owned);
    free(m.stack);
    free(m.memo);
    if (rc)
        pt_state_free(out);
    return rc;
}

/* ------------------------------------------------------------ the zip */

struct entry {
    char key[64];
    uint64_t pos, size;
};

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const struct entry *)a)->key, ((const struct entry *)b)->key);
}

int pt_open(struct st_file **out, const char *path, long *global_step, struct sd_err *err)
{
    *out = NULL;
    *global_step = -1;
    unzFile z = unzOpen64(path);
    if (!z) {
        FILE *f = fopen(path, "rb");
        if (!f)
            return sd_errf(err, SD_ERR_IO, "%s: %s", path, strerror(errno));
        unsigned char magic[2] = {0};
        size_t got = fread(magic, 1, 2, f);
        fclose(f);
        if (got == 2 && magic[0] == 0x80)
            return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: a PyTorch file from before 1.6 (not a zip archive): "
                           "re-save it with a current torch.save, or convert it to .safetensors", path);
        return sd_errf(err, SD_ERR_FORMAT, "%s: not a PyTorch checkpoint (not a zip archive)", path);
    }
    int rc = SD_OK;
    char prefix[256] = "";
    uint8_t *pkl = NULL;
    size_t pkl_len = 0;
    struct entry *ents = NULL;
    int nents = 0, capents = 0;
    /* 1. Find <prefix>/data.pkl, and where each stored data/<key> begins. */
    unz_global_info64 gi;
    if (unzGetGlobalInfo64(z, &gi) != UNZ_OK || gi.number_entry > (1u << 20))
        rc = sd_errf(err, SD_ERR_FORMAT, "%s: unreadable zip directory", path);
    for (int e = rc ? UNZ_END_OF_LIST_OF_FILE : unzGoToFirstFile(z); !rc && e == UNZ_OK; e = unzGoToNextFile(z)) {
        unz_file_info64 fi;
        char name[512];
        if (unzGetCurrentFileInfo64(z, &fi, name, sizeof name, NULL, 0, NULL, 0) != UNZ_OK) {
            rc = sd_errf(err, SD_ERR_FORMAT, "%s: unreadable zip entry", path);
            break;
        }
        size_t n = strlen(name);
        if (n >= 9 && !strcmp(name + n - 9, "/data.pkl") && !prefix[0] && n - 9 < sizeof prefix) {
            memcpy(prefix, name, n - 9);
            prefix[n - 9] = 0;
            if (fi.uncompressed_size > PT_MAX_PICKLE) {
                rc = sd_errf(err, SD_ERR_FORMAT, "%s: data.pkl is too large", path);
                break;
            }
            pkl_len = (size_t)fi.uncompressed_size;
            pkl = malloc(pkl_len ? pkl_len : 1);
            if (!pkl || unzOpenCurrentFile(z) != UNZ_OK ||
                unzReadCurrentFile(z, pkl, (unsigned)pkl_len) != (int)pkl_len) {
                rc = sd_errf(err, SD_ERR_FORMAT, "%s: cannot read data.pkl", path);
                unzCloseCurrentFile(z);
                break;
            }
            unzCloseCurrentFile(z);
            continue;
        }
        const char *d = strstr(name, "/data/");
        if (!d || strchr(d + 6, '/') || strlen(d + 6) >= sizeof ents->key)
            continue;
        if (fi.compression_method != 0) {
            rc = sd_errf(err, SD_ERR_UNSUPPORTED, "%s: compressed storage %s (torch.save stores them "
                         "uncompressed)", path, name);
            break;
        }
        if (unzOpenCurrentFile(z) != UNZ_OK) {
            rc = sd_errf(err, SD_ERR_FORMAT, "%s: unreadable entry %s", path, name);
            break;
        }
        if (nents == capents) {
            capents = capents ? 2 * capents : 1024;
            struct entry *q = realloc(ents, capents * sizeof *q);
            if (!q) {
                rc = sd_errf(err, SD_ERR_NOMEM, "out of memory");
                break;
            }
            ents = q;
        }
        struct entry *en = &ents[nents++];
        snprintf(en->key, sizeof en->key, "%s", d + 6);
        en->pos = (uint64_t)unzGetCurrentFileZStreamPos64(z);
        en->size = fi.uncompressed_size;
        unzCloseCurrentFile(z);
    }
    unzClose(z);
    if (!rc && !pkl)
        rc = sd_errf(err, SD_ERR_FORMAT, "%s: a zip archive without data.pkl (not a PyTorch checkpoint)", path);
    struct pt_state st = {0};
    if (!rc)
        rc = pt_parse_pickle(pkl, pkl_len, path, &st, err);
    free(pkl);
    /* 2. Map the file; every tensor's bytes must lie inside its storage. */
    void *map = MAP_FAILED;
    size_t map_len = 0;
    if (!rc) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat sb;
        if (fd < 0 || fstat(fd, &sb) || !sb.st_size ||
            (map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0)) == MAP_FAILED)
            rc = sd_errf(err, SD_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
        else
            map_len = (size_t)sb.st_size;
        if (fd >= 0)
            close(fd);
    }
    struct st_tensor *ts = NULL;
    if (!rc) {
        if (nents)
            qsort(ents, nents, sizeof *ents, cmp_entry);
        ts = calloc(st.n ? st.n : 1, sizeof *ts);
        if (!ts)
            rc = sd_errf(err, SD_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; !rc && i < st.n; i++) {
        const struct pt_tensor *t = &st.t[i];
        struct entry probe;
        snprintf(probe.key, sizeof probe.key, "%s", t->storage_key);
        const struct entry *en = bsearch(&probe, ents, nents, sizeof *ents, cmp_entry);
        size_t es = st_dtype_size(t->dtype);
        int64_t numel = 1;
        for (int d = 0; d < t->ndim; d++)
            numel *= t->shape[d];
        if (!en || en->pos > map_len || en->size > map_len - en->pos ||
            (uint64_t)t->storage_numel * es > en->size ||
            (uint64_t)(t->offset + numel) * es > en->size) {
            rc = sd_errf(err, SD_ERR_FORMAT, "%s: tensor '%.200s': storage '%s' missing or too small", path,
                         t->name, t->storage_key);
            break;
        }
        ts[i].name = t->name;
        ts[i].dtype = t->dtype;
        ts[i].ndim = t->ndim;
        memcpy(ts[i].shape, t->shape, sizeof ts[i].shape);
        ts[i].data = (const uint8_t *)map + en->pos + (size_t)t->offset * es;
        ts[i].numel = numel;
        ts[i].nbytes = (size_t)numel * es;
    }
    if (!rc) {
        char step[32];
        snprintf(step, sizeof step, "%ld", st.global_step);
        const char *meta[] = {"format", "pt", "global_step", step, NULL};
        rc = st_from_mapping(out, path, map, map_len, ts, st.n, st.global_step >= 0 ? meta : meta + 2, err);
        if (!rc)
            map = MAP_FAILED; /* the st_file owns it */
        *global_step = st.global_step;
    }
    if (map != MAP_FAILED)
        munmap(map, map_len);
    free(ts);
    free(ents);
    pt_state_free(&st);
    return rc;
}

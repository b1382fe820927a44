/* config.overrides (overrides.h): the JSON's shape checked field by field, each error naming the
 * field's path, so that a typo is refused at submit rather than silently ignored. */
#include "quant/overrides.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static const char *const TENSOR_KEYS[] = { "bits", "symmetric", "per_channel", "skip", NULL };
static const char *const OP_KEYS[] = { "bits", "symmetric", "weight_bits", "weight_symmetric", "per_channel", "skip",
                                       NULL };

static int in_keys(const char *k, const char *const *keys)
{
    for (; *keys; keys++)
        if (!strcmp(k, *keys))
            return 1;
    return 0;
}

static int get_bits(json_t *v, const char *path, int *out, qs_err *e)
{
    if (!json_is_integer(v) || json_integer_value(v) < 2 || json_integer_value(v) > 16)
        return qs_error(e, QS_EINVAL, "%s: must be an integer between 2 and 16", path);
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_bool(json_t *v, const char *path, int *out, qs_err *e)
{
    if (!json_is_boolean(v))
        return qs_error(e, QS_EINVAL, "%s: must be true or false", path);
    *out = json_is_true(v);
    return 0;
}

static int parse_entry(const char *group, const char *name, json_t *obj, int is_op, qs_qoverride *o, qs_err *e)
{
    const char *const *keys = is_op ? OP_KEYS : TENSOR_KEYS;
    char path[512];
    *o = (qs_qoverride){ .is_op = is_op, .bits = -1, .symmetric = -1, .per_channel = -1, .skip = -1, .wbits = -1,
                         .wsymmetric = -1 };
    snprintf(path, sizeof path, "config.overrides.%s.%s", group, name);
    if (!json_is_object(obj))
        return qs_error(e, QS_EINVAL, "%s: must be an object with some of: %s", path,
                        is_op ? "bits, symmetric, weight_bits, weight_symmetric, per_channel, skip"
                              : "bits, symmetric, per_channel, skip");
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        char fp[600];
        snprintf(fp, sizeof fp, "%s.%s", path, k);
        int rc = 0;
        if (!in_keys(k, keys))
            return qs_error(e, QS_EINVAL, "unknown field '%s' (expected one of: %s)", fp,
                            is_op ? "bits, symmetric, weight_bits, weight_symmetric, per_channel, skip"
                                  : "bits, symmetric, per_channel, skip");
        if (!strcmp(k, "bits"))
            rc = get_bits(v, fp, &o->bits, e);
        else if (!strcmp(k, "weight_bits"))
            rc = get_bits(v, fp, &o->wbits, e);
        else if (!strcmp(k, "symmetric"))
            rc = get_bool(v, fp, &o->symmetric, e);
        else if (!strcmp(k, "weight_symmetric"))
            rc = get_bool(v, fp, &o->wsymmetric, e);
        else if (!strcmp(k, "per_channel"))
            rc = get_bool(v, fp, &o->per_channel, e);
        else
            rc = get_bool(v, fp, &o->skip, e);
        if (rc < 0)
            return rc;
    }
    if (!(o->name = strdup(name)))
        return qs_error(e, QS_ENOMEM, "out of memory");
    return 0;
}

int qs_overrides_parse(const char *text, qs_qoverrides *o, qs_err *e)
{
    *o = (qs_qoverrides){ 0 };
    if (!text)
        return 0;
    json_error_t je;
    json_t *root = json_loads(text, 0, &je);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = qs_error(e, QS_EINVAL, "config.overrides: must be an object {\"tensors\": {…}, \"ops\": {…}}");
        goto out;
    }
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v) {
        int is_op = !strcmp(k, "ops");
        if (!is_op && strcmp(k, "tensors")) {
            rc = qs_error(e, QS_EINVAL, "unknown field 'config.overrides.%s' (expected one of: tensors, ops; a "
                          "tensor's settings go under \"tensors\")", k);
            goto out;
        }
        if (!json_is_object(v)) {
            rc = qs_error(e, QS_EINVAL, "config.overrides.%s: must be an object keyed by %s", k,
                          is_op ? "op type" : "tensor name");
            goto out;
        }
        const char *name;
        json_t *ent;
        json_object_foreach(v, name, ent) {
            qs_qoverride *grown = realloc(o->o, (o->n + 1) * sizeof *grown);
            if (!grown) {
                rc = qs_error(e, QS_ENOMEM, "out of memory");
                goto out;
            }
            o->o = grown;
            if ((rc = parse_entry(k, name, ent, is_op, &o->o[o->n], e)) < 0)
                goto out;
            o->n++;
        }
    }
out:
    json_decref(root);
    if (rc < 0)
        qs_overrides_free(o);
    return rc;
}

void qs_overrides_free(qs_qoverrides *o)
{
    for (int i = 0; i < o->n; i++)
        free(o->o[i].name);
    free(o->o);
    *o = (qs_qoverrides){ 0 };
}

const qs_qoverride *qs_overrides_find(const qs_qoverrides *o, int is_op, const char *name)
{
    for (int i = 0; o && name && i < o->n; i++)
        if (o->o[i].is_op == is_op && !strcmp(o->o[i].name, name))
            return &o->o[i];
    return NULL;
}

int qs_overrides_add_bits(qs_qoverrides *o, const char *tensor, int bits)
{
    if (qs_overrides_find(o, 0, tensor))
        return 0;
    qs_qoverride *grown = realloc(o->o, (o->n + 1) * sizeof *grown);
    if (!grown)
        return QS_ENOMEM;
    o->o = grown;
    o->o[o->n] = (qs_qoverride){ .name = strdup(tensor), .bits = bits, .symmetric = -1, .per_channel = -1, .skip = -1,
                                 .wbits = -1, .wsymmetric = -1 };
    if (!o->o[o->n].name)
        return QS_ENOMEM;
    o->n++;
    return 0;
}

int qs_overrides_check(const qs_qoverrides *o, const qs_graph *g, qs_err *e)
{
    for (int i = 0; o && i < o->n; i++) {
        const qs_qoverride *x = &o->o[i];
        if (!x->is_op) {
            if (qs_graph_find_value(g, x->name) < 0)
                return qs_error(e, QS_EINVAL, "config.overrides.tensors.%s: the model has no tensor named '%s'",
                                x->name, x->name);
            continue;
        }
        int found = 0;
        for (int k = 0; k < g->nnodes && !found; k++)
            found = qs_node_is_op(&g->nodes[k], x->name);
        if (!found)
            return qs_error(e, QS_EINVAL, "config.overrides.ops.%s: the model has no %s node", x->name, x->name);
    }
    return 0;
}

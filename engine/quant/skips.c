/* Skip lists (see skips.h): one implementation for the reports of CLE, bias correction and AdaRound. */
#include "quant/skips.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *xstrdup(const char *s) { return strdup(s ? s : ""); }

int qs_skip_add(qs_skip **list, int *n, const char *name, const char *name2, const char *fmt, ...)
{
    qs_skip *s = realloc(*list, (*n + 1) * sizeof *s);
    if (!s)
        return -1;
    *list = s;
    s += *n;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s->name = xstrdup(name);
    s->name2 = name2 ? xstrdup(name2) : NULL;
    s->reason = xstrdup(msg);
    (*n)++;   /* counted even when a copy failed, so that qs_skips_free frees the others */
    return s->name && (s->name2 || !name2) && s->reason ? 0 : -1;
}

void qs_skips_free(qs_skip *list, int n)
{
    for (int i = 0; i < n; i++) {
        free(list[i].name);
        free(list[i].name2);
        free(list[i].reason);
    }
    free(list);
}

json_t *qs_skips_json(const qs_skip *list, int n, const char *key, const char *key2)
{
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++)
        json_array_append_new(a, key2 ? json_pack("{s:s, s:s, s:s}", key, list[i].name, key2,
                                                  list[i].name2 ? list[i].name2 : "", "reason", list[i].reason)
                                      : json_pack("{s:s, s:s}", key, list[i].name, "reason", list[i].reason));
    return a;
}

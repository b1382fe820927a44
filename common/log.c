/* Logging to stderr; see log.h. The journald prefix is decided once at init. */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int qd_log_level = QD_LOG_INFO;
static int journal;

static const char *const level_names[8] = {
    "emerg", "alert", "crit", "error", "warning", "notice", "info", "debug",
};

void qd_log_init(int level)
{
    qd_log_level = level;
    journal = getenv("JOURNAL_STREAM") != NULL;
}

int qd_log_parse_level(const char *name)
{
    for (int i = QD_LOG_ERROR; i <= QD_LOG_DEBUG; i++)
        if (!strcmp(name, level_names[i]))
            return i;
    if (!strcmp(name, "warn"))
        return QD_LOG_WARNING;
    return -1;
}

void qd_log_write(int level, const char *fmt, ...)
{
    char line[2048];
    size_t k = 0;
    if (level < 0 || level > 7)
        level = QD_LOG_ERROR;
    if (journal) {
        k = (size_t)snprintf(line, sizeof line, "<%d>", level);
    } else {
        struct timeval tv;
        struct tm tm;
        gettimeofday(&tv, NULL);
        gmtime_r(&tv.tv_sec, &tm);
        k = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
        k += (size_t)snprintf(line + k, sizeof line - k, ".%03dZ %s ", (int)(tv.tv_usec / 1000),
                              level_names[level]);
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line + k, sizeof line - k - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    k += (size_t)n < sizeof line - k - 1 ? (size_t)n : sizeof line - k - 2;
    /* one record per line: a stray newline inside the message would split it in journald */
    for (size_t i = 0; i < k; i++)
        if (line[i] == '\n')
            line[i] = ' ';
    line[k++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, k);
    (void)w;
}

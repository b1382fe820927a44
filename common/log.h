/* Logging: one line per message on stderr, levels as in syslog.
 *
 *   qd_log_init(QD_LOG_INFO);
 *   QD_LOG_INFO("listening on %s", addr);   // formats only when the level is enabled
 *
 * Under systemd (JOURNAL_STREAM set) each line starts with "<N>", the sd-daemon priority prefix,
 * and carries no timestamp: journald adds both. Elsewhere a line reads
 * "2026-11-27T10:30:21.123Z info message". Messages longer than a line are truncated, never split,
 * so one call is one record. Thread-safe: a line is written with one write(2). */
#ifndef QD_LOG_H
#define QD_LOG_H

enum { QD_LOG_ERROR = 3, QD_LOG_WARNING = 4, QD_LOG_NOTICE = 5, QD_LOG_INFO = 6, QD_LOG_DEBUG = 7 };

extern int qd_log_level;   /* messages above this level are dropped before formatting */

void qd_log_init(int level);
/* "error", "warning", "notice", "info", "debug" → level; -1 when unknown. */
int qd_log_parse_level(const char *name);
void qd_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define QD_LOG(lvl, ...) do { if ((lvl) <= qd_log_level) qd_log_write((lvl), __VA_ARGS__); } while (0)
#define QD_LOG_ERROR(...)   QD_LOG(QD_LOG_ERROR, __VA_ARGS__)
#define QD_LOG_WARNING(...) QD_LOG(QD_LOG_WARNING, __VA_ARGS__)
#define QD_LOG_NOTICE(...)  QD_LOG(QD_LOG_NOTICE, __VA_ARGS__)
#define QD_LOG_INFO(...)    QD_LOG(QD_LOG_INFO, __VA_ARGS__)
#define QD_LOG_DEBUG(...)   QD_LOG(QD_LOG_DEBUG, __VA_ARGS__)

#endif

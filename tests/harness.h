/* A small test harness in the style of libuv's: each test is a function, ASSERT_* macros fail it
 * with file:line and the values, and the program prints TAP so automake's tap-driver counts every
 * test case (not just every program).
 *
 *   TEST(conv_matches_reference) { ASSERT_EQ(1 + 1, 2); }
 *   TEST_MAIN(conv_matches_reference, other_test)
 *
 * A test may call SKIP("why") to be reported as skipped — for optional things the system may lack,
 * never for a committed fixture (ASSERT_FIXTURE). Tests are independent: each runs in a
 * forked child, so a crash in one is reported as that test's failure and the rest still run.
 *
 * Two tiers: a test whose name starts with "long_" (an end-to-end accuracy case that takes more
 * than a few seconds) runs only when QT_LONG=1 is set, as `make check-long` does; plain
 * `make check` reports it as a TAP skip that says so. Each case's wall time follows its result
 * line as a TAP comment ("# time name 1.23 s"), so the .log files show where the time goes. */
#ifndef QD_TESTS_HARNESS_H
#define QD_TESTS_HARNESS_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

typedef void (*qt_fn)(void);
struct qt_case { const char *name; qt_fn fn; };

#define TEST(name) static void test_##name(void)

#define QT_FAIL_(...) do { fprintf(stderr, "# %s:%d: ", __FILE__, __LINE__); fprintf(stderr, __VA_ARGS__); \
                           fputc('\n', stderr); fflush(stderr); exit(1); } while (0)

#define ASSERT(c) do { if (!(c)) QT_FAIL_("assertion failed: %s", #c); } while (0)
#define ASSERT_EQ(a, b) do { long long a_ = (long long)(a), b_ = (long long)(b); \
    if (a_ != b_) QT_FAIL_("%s == %s: %lld != %lld", #a, #b, a_, b_); } while (0)
#define ASSERT_NE(a, b) do { long long a_ = (long long)(a), b_ = (long long)(b); \
    if (a_ == b_) QT_FAIL_("%s != %s: both %lld", #a, #b, a_); } while (0)
#define ASSERT_STR_EQ(a, b) do { const char *a_ = (a), *b_ = (b); \
    if (!a_ || !b_ || strcmp(a_, b_)) QT_FAIL_("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); } while (0)
#define ASSERT_STR_CONTAINS(hay, needle) do { const char *h_ = (hay), *n_ = (needle); \
    if (!h_ || !strstr(h_, n_)) QT_FAIL_("\"%s\" does not contain \"%s\"", h_ ? h_ : "(null)", n_); } while (0)
/* |a - b| <= atol + rtol * |b| — b is the reference */
#define ASSERT_CLOSE(a, b, rtol, atol) do { double a_ = (a), b_ = (b); \
    if (!(fabs(a_ - b_) <= (atol) + (rtol) * fabs(b_))) \
        QT_FAIL_("%s ~ %s: %.9g vs %.9g (rtol %g, atol %g)", #a, #b, a_, b_, (double)(rtol), (double)(atol)); } while (0)

/* A file the repository commits (tests/fixtures/…): missing, it is a broken checkout or build, so
 * the test fails; SKIP is for optional things the system may lack (Debian data packages). */
#define ASSERT_FIXTURE(path) do { const char *p_ = (path); \
    if (access(p_, R_OK)) QT_FAIL_("committed fixture %s is missing", p_); } while (0)

#define QT_SKIP_STATUS 77
#define SKIP(...) do { printf("# skip reason: "); printf(__VA_ARGS__); printf("\n"); fflush(stdout); \
                       exit(QT_SKIP_STATUS); } while (0)

static inline double qt_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* the long tier is on (QT_LONG set and not "0") */
static inline int qt_long(void)
{
    const char *v = getenv("QT_LONG");
    return v && v[0] && strcmp(v, "0");
}

static inline int qt_run(const struct qt_case *cases, int n, int argc, char **argv)
{
    int failed = 0;
    printf("1..%d\n", n);
    fflush(stdout);
    for (int i = 0; i < n; i++) {
        if (argc > 1 && !strstr(cases[i].name, argv[1])) {
            printf("ok %d - %s # SKIP not selected\n", i + 1, cases[i].name);
            fflush(stdout);   /* before the next fork, or the child repeats the buffered line */
            continue;
        }
        if (!strncmp(cases[i].name, "long_", 5) && !qt_long()) {
            printf("ok %d - %s # SKIP long end-to-end case: make check-long runs it (QT_LONG=1)\n", i + 1,
                   cases[i].name);
            fflush(stdout);
            continue;
        }
        double t0 = qt_now();
        pid_t pid = getenv("QT_NOFORK") ? 0 : fork();
        if (pid == 0) {
            cases[i].fn();
            fflush(stdout);
            if (!getenv("QT_NOFORK")) _exit(0);
            printf("ok %d - %s\n", i + 1, cases[i].name);
            continue;
        }
        int st = 0;
        waitpid(pid, &st, 0);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
            printf("ok %d - %s\n", i + 1, cases[i].name);
        else if (WIFEXITED(st) && WEXITSTATUS(st) == QT_SKIP_STATUS)
            printf("ok %d - %s # SKIP\n", i + 1, cases[i].name);
        else {
            failed++;
            if (WIFSIGNALED(st))
                printf("not ok %d - %s (signal %d)\n", i + 1, cases[i].name, WTERMSIG(st));
            else
                printf("not ok %d - %s\n", i + 1, cases[i].name);
        }
        printf("# time %s %.2f s\n", cases[i].name, qt_now() - t0);
        fflush(stdout);
    }
    return failed ? 1 : 0;
}

#define QT_ENTRY_(name) { #name, test_##name },
#define QT_MAP1_(m, x) m(x)
/* TEST_MAIN(a, b, c) lists the tests to run, in order. */
#define TEST_MAIN(...) \
    int main(int argc, char **argv) { \
        static const struct qt_case cases_[] = { QT_FOREACH_(QT_ENTRY_, __VA_ARGS__) }; \
        return qt_run(cases_, (int)(sizeof cases_ / sizeof cases_[0]), argc, argv); }

/* QT_FOREACH_(m, a, b, ...) expands m(a) m(b) ... for up to 64 arguments. */
#define QT_NARG_(...) QT_NARG_I_(__VA_ARGS__, 64,63,62,61,60,59,58,57,56,55,54,53,52,51,50,49,48,47,46,45,44,43,42,41,40, \
    39,38,37,36,35,34,33,32,31,30,29,28,27,26,25,24,23,22,21,20,19,18,17,16,15,14,13,12,11,10,9,8,7,6,5,4,3,2,1)
#define QT_NARG_I_(_1,_2,_3,_4,_5,_6,_7,_8,_9,_10,_11,_12,_13,_14,_15,_16,_17,_18,_19,_20,_21,_22,_23,_24,_25,_26,_27, \
    _28,_29,_30,_31,_32,_33,_34,_35,_36,_37,_38,_39,_40,_41,_42,_43,_44,_45,_46,_47,_48,_49,_50,_51,_52,_53,_54,_55,_56, \
    _57,_58,_59,_60,_61,_62,_63,_64,N,...) N
#define QT_CAT_(a, b) QT_CAT_I_(a, b)
#define QT_CAT_I_(a, b) a##b
#define QT_FOREACH_(m, ...) QT_CAT_(QT_FE_, QT_NARG_(__VA_ARGS__))(m, __VA_ARGS__)
#define QT_FE_1(m, x) m(x)
#define QT_FE_2(m, x, ...) m(x) QT_FE_1(m, __VA_ARGS__)
#define QT_FE_3(m, x, ...) m(x) QT_FE_2(m, __VA_ARGS__)
#define QT_FE_4(m, x, ...) m(x) QT_FE_3(m, __VA_ARGS__)
#define QT_FE_5(m, x, ...) m(x) QT_FE_4(m, __VA_ARGS__)
#define QT_FE_6(m, x, ...) m(x) QT_FE_5(m, __VA_ARGS__)
#define QT_FE_7(m, x, ...) m(x) QT_FE_6(m, __VA_ARGS__)
#define QT_FE_8(m, x, ...) m(x) QT_FE_7(m, __VA_ARGS__)
#define QT_FE_9(m, x, ...) m(x) QT_FE_8(m, __VA_ARGS__)
#define QT_FE_10(m, x, ...) m(x) QT_FE_9(m, __VA_ARGS__)
#define QT_FE_11(m, x, ...) m(x) QT_FE_10(m, __VA_ARGS__)
#define QT_FE_12(m, x, ...) m(x) QT_FE_11(m, __VA_ARGS__)
#define QT_FE_13(m, x, ...) m(x) QT_FE_12(m, __VA_ARGS__)
#define QT_FE_14(m, x, ...) m(x) QT_FE_13(m, __VA_ARGS__)
#define QT_FE_15(m, x, ...) m(x) QT_FE_14(m, __VA_ARGS__)
#define QT_FE_16(m, x, ...) m(x) QT_FE_15(m, __VA_ARGS__)
#define QT_FE_17(m, x, ...) m(x) QT_FE_16(m, __VA_ARGS__)
#define QT_FE_18(m, x, ...) m(x) QT_FE_17(m, __VA_ARGS__)
#define QT_FE_19(m, x, ...) m(x) QT_FE_18(m, __VA_ARGS__)
#define QT_FE_20(m, x, ...) m(x) QT_FE_19(m, __VA_ARGS__)
#define QT_FE_21(m, x, ...) m(x) QT_FE_20(m, __VA_ARGS__)
#define QT_FE_22(m, x, ...) m(x) QT_FE_21(m, __VA_ARGS__)
#define QT_FE_23(m, x, ...) m(x) QT_FE_22(m, __VA_ARGS__)
#define QT_FE_24(m, x, ...) m(x) QT_FE_23(m, __VA_ARGS__)
#define QT_FE_25(m, x, ...) m(x) QT_FE_24(m, __VA_ARGS__)
#define QT_FE_26(m, x, ...) m(x) QT_FE_25(m, __VA_ARGS__)
#define QT_FE_27(m, x, ...) m(x) QT_FE_26(m, __VA_ARGS__)
#define QT_FE_28(m, x, ...) m(x) QT_FE_27(m, __VA_ARGS__)
#define QT_FE_29(m, x, ...) m(x) QT_FE_28(m, __VA_ARGS__)
#define QT_FE_30(m, x, ...) m(x) QT_FE_29(m, __VA_ARGS__)
#define QT_FE_31(m, x, ...) m(x) QT_FE_30(m, __VA_ARGS__)
#define QT_FE_32(m, x, ...) m(x) QT_FE_31(m, __VA_ARGS__)
#define QT_FE_33(m, x, ...) m(x) QT_FE_32(m, __VA_ARGS__)
#define QT_FE_34(m, x, ...) m(x) QT_FE_33(m, __VA_ARGS__)
#define QT_FE_35(m, x, ...) m(x) QT_FE_34(m, __VA_ARGS__)
#define QT_FE_36(m, x, ...) m(x) QT_FE_35(m, __VA_ARGS__)
#define QT_FE_37(m, x, ...) m(x) QT_FE_36(m, __VA_ARGS__)
#define QT_FE_38(m, x, ...) m(x) QT_FE_37(m, __VA_ARGS__)
#define QT_FE_39(m, x, ...) m(x) QT_FE_38(m, __VA_ARGS__)
#define QT_FE_40(m, x, ...) m(x) QT_FE_39(m, __VA_ARGS__)
#define QT_FE_41(m, x, ...) m(x) QT_FE_40(m, __VA_ARGS__)
#define QT_FE_42(m, x, ...) m(x) QT_FE_41(m, __VA_ARGS__)
#define QT_FE_43(m, x, ...) m(x) QT_FE_42(m, __VA_ARGS__)
#define QT_FE_44(m, x, ...) m(x) QT_FE_43(m, __VA_ARGS__)
#define QT_FE_45(m, x, ...) m(x) QT_FE_44(m, __VA_ARGS__)
#define QT_FE_46(m, x, ...) m(x) QT_FE_45(m, __VA_ARGS__)
#define QT_FE_47(m, x, ...) m(x) QT_FE_46(m, __VA_ARGS__)
#define QT_FE_48(m, x, ...) m(x) QT_FE_47(m, __VA_ARGS__)
#define QT_FE_49(m, x, ...) m(x) QT_FE_48(m, __VA_ARGS__)
#define QT_FE_50(m, x, ...) m(x) QT_FE_49(m, __VA_ARGS__)
#define QT_FE_51(m, x, ...) m(x) QT_FE_50(m, __VA_ARGS__)
#define QT_FE_52(m, x, ...) m(x) QT_FE_51(m, __VA_ARGS__)
#define QT_FE_53(m, x, ...) m(x) QT_FE_52(m, __VA_ARGS__)
#define QT_FE_54(m, x, ...) m(x) QT_FE_53(m, __VA_ARGS__)
#define QT_FE_55(m, x, ...) m(x) QT_FE_54(m, __VA_ARGS__)
#define QT_FE_56(m, x, ...) m(x) QT_FE_55(m, __VA_ARGS__)
#define QT_FE_57(m, x, ...) m(x) QT_FE_56(m, __VA_ARGS__)
#define QT_FE_58(m, x, ...) m(x) QT_FE_57(m, __VA_ARGS__)
#define QT_FE_59(m, x, ...) m(x) QT_FE_58(m, __VA_ARGS__)
#define QT_FE_60(m, x, ...) m(x) QT_FE_59(m, __VA_ARGS__)
#define QT_FE_61(m, x, ...) m(x) QT_FE_60(m, __VA_ARGS__)
#define QT_FE_62(m, x, ...) m(x) QT_FE_61(m, __VA_ARGS__)
#define QT_FE_63(m, x, ...) m(x) QT_FE_62(m, __VA_ARGS__)
#define QT_FE_64(m, x, ...) m(x) QT_FE_63(m, __VA_ARGS__)

#endif

/* The harness tests itself: a failing assertion must fail its test, a passing one must not. */
#include "tests/harness.h"

/* Runs fn in a child and returns its exit status, so a failing ASSERT can be observed. */
static int status_of(qt_fn fn)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr)) _exit(99);
        if (!freopen("/dev/null", "w", stdout)) _exit(99);
        fn();
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void ok_close(void) { ASSERT_CLOSE(1.0 + 1e-7, 1.0, 1e-6, 0); }
static void bad_close(void) { ASSERT_CLOSE(1.1, 1.0, 1e-3, 1e-5); }
static void bad_eq(void) { ASSERT_EQ(2 + 2, 5); }
static void bad_str(void) { ASSERT_STR_EQ("abc", "abd"); }
static void bad_contains(void) { ASSERT_STR_CONTAINS("unsupported op", "Conv"); }
static void skipped(void) { SKIP("testing skip"); }
static void nan_close(void) { ASSERT_CLOSE(NAN, 1.0, 1, 1); }
static void missing_fixture(void) { ASSERT_FIXTURE(QD_SRCDIR "/tests/fixtures/no-such-fixture.onnx"); }
static void present_fixture(void) { ASSERT_FIXTURE(QD_SRCDIR "/tests/fixtures/mlp.onnx"); }

TEST(passing_assertions_pass) { ASSERT_EQ(status_of(ok_close), 0); }
TEST(failing_assertions_fail)
{
    ASSERT_EQ(status_of(bad_close), 1);
    ASSERT_EQ(status_of(bad_eq), 1);
    ASSERT_EQ(status_of(bad_str), 1);
    ASSERT_EQ(status_of(bad_contains), 1);
}
TEST(nan_is_never_close) { ASSERT_EQ(status_of(nan_close), 1); }
TEST(skip_has_its_own_status) { ASSERT_EQ(status_of(skipped), QT_SKIP_STATUS); }
/* a committed fixture that is missing fails the test; it is not skipped */
TEST(missing_fixture_fails)
{
    ASSERT_EQ(status_of(missing_fixture), 1);
    ASSERT_EQ(status_of(present_fixture), 0);
}

TEST_MAIN(passing_assertions_pass, failing_assertions_fail, nan_is_never_close, skip_has_its_own_status,
          missing_fixture_fails)

/* Unit tests for daemon/notify.c: the sd_notify(3) messages as a service
 * manager receives them on its AF_UNIX datagram socket ($NOTIFY_SOCKET),
 * nothing at all without the variable, and a socket nobody listens on
 * logged as event=notify-failed. */
#define _GNU_SOURCE /* nftw, in unitfs.h */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/notify.h"
#include "lib/log.h"
#include "lib/util.h"
#include "unitfs.h"

static char tmpdir[] = "/tmp/posthorn-test-notify-XXXXXX";
static char sock_path[108];
static int manager = -1; /* the service manager's end */

static int setup(void **state)
{
	(void)state;
	if (!mkdtemp(tmpdir))
		return -1;
	if (!bsnprintf(sock_path, sizeof sock_path, "%s/notify", tmpdir))
		return -1;
	manager = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
	if (manager < 0 || bind(manager, (struct sockaddr *)&sa, sizeof sa) < 0)
		return -1;
	log_init(false, LOG_INFO);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	close(manager);
	unlink(sock_path);
	rmdir(tmpdir);
	return 0;
}

/* The next message, or "" when none is waiting. */
static const char *received(char *buf, size_t size)
{
	ssize_t n = recv(manager, buf, size - 1, MSG_DONTWAIT);
	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

static void test_without_notify_socket_nothing_is_sent(void **state)
{
	(void)state;
	char buf[512];
	assert_int_equal(unsetenv("NOTIFY_SOCKET"), 0);
	notify_ready(3);
	notify_reloading();
	notify_reloaded(true, 3);
	notify_stopping();
	assert_string_equal(received(buf, sizeof buf), "");
}

static void test_ready_with_status(void **state)
{
	(void)state;
	char buf[512];
	assert_int_equal(setenv("NOTIFY_SOCKET", sock_path, 1), 0);
	notify_ready(3);
	assert_string_equal(received(buf, sizeof buf), "READY=1\nSTATUS=serving 3 virtual servers");
	notify_ready(1);
	assert_string_equal(received(buf, sizeof buf), "READY=1\nSTATUS=serving 1 virtual server");
	/* the variable stays: the reloads and the stop need it again */
	assert_non_null(getenv("NOTIFY_SOCKET"));
}

static void test_reload_taken_and_refused(void **state)
{
	(void)state;
	char buf[512];
	assert_int_equal(setenv("NOTIFY_SOCKET", sock_path, 1), 0);
	notify_reloading();
	const char *msg = received(buf, sizeof buf);
	const char *tail = "\nSTATUS=reloading the configuration";
	unsigned long long usec = 0;
	assert_int_equal(sscanf(msg, "RELOADING=1\nMONOTONIC_USEC=%llu", &usec), 1);
	assert_true(usec > 0);
	assert_true(strlen(msg) > strlen(tail));
	assert_string_equal(msg + strlen(msg) - strlen(tail), tail);
	notify_reloaded(true, 2);
	assert_string_equal(received(buf, sizeof buf), "READY=1\nSTATUS=serving 2 virtual servers");
	notify_reloaded(false, 2);
	assert_string_equal(received(buf, sizeof buf),
			    "READY=1\nSTATUS=reload refused (see the log); serving 2 virtual servers "
			    "with the old configuration");
}

static void test_stopping(void **state)
{
	(void)state;
	char buf[512];
	assert_int_equal(setenv("NOTIFY_SOCKET", sock_path, 1), 0);
	notify_stopping();
	assert_string_equal(received(buf, sizeof buf),
			    "STOPPING=1\nSTATUS=stopping: sessions get their goodbye");
}

static void run_stopping(void *arg)
{
	(void)arg;
	notify_stopping();
}

/* Everything notify_stopping() writes to standard error. */
static char *stderr_of_stopping(void)
{
	return stderr_of(run_stopping, NULL);
}

static void test_unreachable_manager_is_logged(void **state)
{
	(void)state;
	char path[160];
	assert_true(bsnprintf(path, sizeof path, "%s/nobody-listens", tmpdir));
	assert_int_equal(setenv("NOTIFY_SOCKET", path, 1), 0);
	char *log = stderr_of_stopping();
	assert_non_null(strstr(log, "event=notify-failed state=stopping error=\""));
	free(log);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_without_notify_socket_nothing_is_sent),
		cmocka_unit_test(test_ready_with_status),
		cmocka_unit_test(test_reload_taken_and_refused),
		cmocka_unit_test(test_stopping),
		cmocka_unit_test(test_unreachable_manager_is_logged),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}

/* confine: PR_SET_NO_NEW_PRIVS and a seccomp filter (libseccomp) loaded
 * once start-up is over.  The filter is a list of what the daemon does
 * while it runs: the event loop, sockets for clients, c-ares and outbound
 * SMTP, the delivery worker thread, file I/O in the spool and Maildirs,
 * and a reload (config, users, certificates, new listeners).  Calls that
 * only an attacker wants (execve, ptrace, mount, modules, kexec, bpf,
 * namespaces, identity changes) kill the whole process at once; any other
 * call outside the list fails with EPERM and is logged, so a gap in the
 * list shows up as an error in the log, not as a dead mail server. */
#define _GNU_SOURCE /* CLONE_*, REG_RAX */
#include "daemon/confine.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <ucontext.h>
#include <unistd.h>

#include <seccomp.h>

#include "lib/strbuf.h"
#include "lib/util.h"

/* The sanitizers' leak check stops the world with ptrace at exit and
 * waits for its helper task: those builds keep ptrace and wait4. */
#if defined(__SANITIZE_ADDRESS__)
#define CONFINE_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CONFINE_SANITIZER 1
#endif
#endif
#ifndef CONFINE_SANITIZER
#define CONFINE_SANITIZER 0
#endif

static atomic_ulong confine_denied;

unsigned long confine_denied_count(void)
{
	return atomic_load(&confine_denied);
}

/* ---- the lists ------------------------------------------------------------ */

/* Allowed without looking at arguments. */
static const int confine_allowed[] = {
	/* file I/O: spool, Maildirs, config, users, certificates, logs */
	SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(readv), SCMP_SYS(writev),
	SCMP_SYS(pread64), SCMP_SYS(pwrite64), SCMP_SYS(preadv), SCMP_SYS(pwritev),
	SCMP_SYS(lseek), SCMP_SYS(close), SCMP_SYS(close_range),
	SCMP_SYS(open), SCMP_SYS(openat), SCMP_SYS(creat),
	SCMP_SYS(stat), SCMP_SYS(fstat), SCMP_SYS(lstat), SCMP_SYS(newfstatat), SCMP_SYS(statx),
	SCMP_SYS(statfs), SCMP_SYS(fstatfs), SCMP_SYS(access), SCMP_SYS(faccessat),
	SCMP_SYS(faccessat2), SCMP_SYS(readlink), SCMP_SYS(readlinkat),
	SCMP_SYS(getdents), SCMP_SYS(getdents64), SCMP_SYS(mkdir), SCMP_SYS(mkdirat),
	SCMP_SYS(rename), SCMP_SYS(renameat), SCMP_SYS(renameat2), SCMP_SYS(unlink),
	SCMP_SYS(unlinkat), SCMP_SYS(link), SCMP_SYS(linkat), SCMP_SYS(rmdir),
	SCMP_SYS(fsync), SCMP_SYS(fdatasync), SCMP_SYS(syncfs), SCMP_SYS(sync_file_range),
	SCMP_SYS(fchmod),
	SCMP_SYS(ftruncate), SCMP_SYS(fallocate), SCMP_SYS(fadvise64), SCMP_SYS(flock),
	SCMP_SYS(umask), SCMP_SYS(getcwd), SCMP_SYS(utimensat), SCMP_SYS(futimesat),
	SCMP_SYS(fcntl), SCMP_SYS(dup), SCMP_SYS(dup2), SCMP_SYS(dup3), SCMP_SYS(pipe),
	SCMP_SYS(pipe2), SCMP_SYS(sendfile), SCMP_SYS(copy_file_range),
	/* watching Maildirs (IMAP IDLE) and the users file */
	SCMP_SYS(inotify_init), SCMP_SYS(inotify_init1), SCMP_SYS(inotify_add_watch),
	SCMP_SYS(inotify_rm_watch),
	/* sockets (the families are checked at socket()) */
	SCMP_SYS(socketpair), SCMP_SYS(bind), SCMP_SYS(listen), SCMP_SYS(accept),
	SCMP_SYS(accept4), SCMP_SYS(connect), SCMP_SYS(getsockname), SCMP_SYS(getpeername),
	SCMP_SYS(setsockopt), SCMP_SYS(getsockopt), SCMP_SYS(shutdown), SCMP_SYS(sendto),
	SCMP_SYS(recvfrom), SCMP_SYS(sendmsg), SCMP_SYS(recvmsg), SCMP_SYS(sendmmsg),
	SCMP_SYS(recvmmsg),
	/* the event loop */
	SCMP_SYS(epoll_create), SCMP_SYS(epoll_create1), SCMP_SYS(epoll_ctl),
	SCMP_SYS(epoll_wait), SCMP_SYS(epoll_pwait), SCMP_SYS(epoll_pwait2), SCMP_SYS(poll),
	SCMP_SYS(ppoll), SCMP_SYS(select), SCMP_SYS(pselect6), SCMP_SYS(eventfd),
	SCMP_SYS(eventfd2), SCMP_SYS(timerfd_create), SCMP_SYS(timerfd_settime),
	SCMP_SYS(timerfd_gettime),
	/* memory */
	SCMP_SYS(brk), SCMP_SYS(mmap), SCMP_SYS(munmap), SCMP_SYS(mremap), SCMP_SYS(mprotect),
	SCMP_SYS(madvise), SCMP_SYS(mincore), SCMP_SYS(msync),
	/* threads, signals, time */
	SCMP_SYS(futex), SCMP_SYS(set_robust_list), SCMP_SYS(get_robust_list), SCMP_SYS(rseq),
	SCMP_SYS(set_tid_address), SCMP_SYS(membarrier), SCMP_SYS(sched_yield),
	SCMP_SYS(sched_getaffinity), SCMP_SYS(rt_sigaction), SCMP_SYS(rt_sigprocmask),
	SCMP_SYS(rt_sigreturn), SCMP_SYS(rt_sigpending), SCMP_SYS(rt_sigtimedwait),
	SCMP_SYS(sigaltstack), SCMP_SYS(restart_syscall), SCMP_SYS(clock_gettime),
	SCMP_SYS(clock_getres), SCMP_SYS(gettimeofday), SCMP_SYS(time), SCMP_SYS(nanosleep),
	SCMP_SYS(clock_nanosleep), SCMP_SYS(getrandom), SCMP_SYS(uname), SCMP_SYS(sysinfo),
	SCMP_SYS(getrusage), SCMP_SYS(times), SCMP_SYS(getrlimit), SCMP_SYS(getcpu),
	SCMP_SYS(exit),
	SCMP_SYS(exit_group),
	/* identity: reading it is harmless */
	SCMP_SYS(getpid), SCMP_SYS(gettid), SCMP_SYS(getppid), SCMP_SYS(getuid),
	SCMP_SYS(geteuid), SCMP_SYS(getgid), SCMP_SYS(getegid), SCMP_SYS(getgroups),
	SCMP_SYS(getresuid), SCMP_SYS(getresgid), SCMP_SYS(getpgrp), SCMP_SYS(getsid),
};

/* Kill the process: no mail server needs them once it runs. */
static const int confine_fatal[] = {
	SCMP_SYS(execve), SCMP_SYS(execveat), SCMP_SYS(fork), SCMP_SYS(vfork),
	SCMP_SYS(process_vm_readv), SCMP_SYS(process_vm_writev), SCMP_SYS(kcmp),
	SCMP_SYS(pidfd_open), SCMP_SYS(pidfd_getfd),
	SCMP_SYS(mount), SCMP_SYS(umount2), SCMP_SYS(pivot_root), SCMP_SYS(chroot),
	SCMP_SYS(move_mount), SCMP_SYS(open_tree), SCMP_SYS(fsopen), SCMP_SYS(fsconfig),
	SCMP_SYS(fsmount), SCMP_SYS(fspick), SCMP_SYS(mount_setattr),
	SCMP_SYS(unshare), SCMP_SYS(setns),
	SCMP_SYS(kexec_load), SCMP_SYS(kexec_file_load), SCMP_SYS(init_module),
	SCMP_SYS(finit_module), SCMP_SYS(delete_module), SCMP_SYS(bpf),
	SCMP_SYS(perf_event_open), SCMP_SYS(userfaultfd), SCMP_SYS(keyctl), SCMP_SYS(add_key),
	SCMP_SYS(request_key), SCMP_SYS(reboot), SCMP_SYS(swapon), SCMP_SYS(swapoff),
	SCMP_SYS(acct), SCMP_SYS(quotactl), SCMP_SYS(syslog), SCMP_SYS(iopl), SCMP_SYS(ioperm),
	SCMP_SYS(personality), SCMP_SYS(open_by_handle_at), SCMP_SYS(name_to_handle_at),
	SCMP_SYS(settimeofday), SCMP_SYS(clock_settime), SCMP_SYS(adjtimex),
	SCMP_SYS(clock_adjtime), SCMP_SYS(sethostname), SCMP_SYS(setdomainname),
	SCMP_SYS(setuid), SCMP_SYS(setgid), SCMP_SYS(setreuid), SCMP_SYS(setregid),
	SCMP_SYS(setresuid), SCMP_SYS(setresgid), SCMP_SYS(setgroups), SCMP_SYS(setfsuid),
	SCMP_SYS(setfsgid), SCMP_SYS(capset), SCMP_SYS(chown), SCMP_SYS(fchown),
	SCMP_SYS(lchown), SCMP_SYS(fchownat), SCMP_SYS(mknod), SCMP_SYS(mknodat),
	SCMP_SYS(fanotify_init), SCMP_SYS(lookup_dcookie), SCMP_SYS(vhangup),
#if !CONFINE_SANITIZER
	SCMP_SYS(ptrace),
#endif
};

/* ---- refused calls: EPERM and a log line -------------------------------- */

/* Async-signal-safe (strbuf_add uses memcpy(3) alone, no printf): the
 * number in decimal, one write(2). */
static void confine_log_denied(long nr)
{
	char line[96];
	struct strbuf sb;
	strbuf_init(&sb, line, sizeof line);
	(void)strbuf_adds(&sb, "posthorn: warning event=seccomp-denied syscall=");
	char digits[24]; /* filled from the end */
	size_t at = sizeof digits;
	unsigned long v = nr < 0 ? 0 : (unsigned long)nr;
	do {
		digits[--at] = (char)('0' + v % 10);
		v /= 10;
	} while (v && at > 0);
	(void)strbuf_add(&sb, digits + at, sizeof digits - at);
	(void)strbuf_addc(&sb, '\n'); /* 48 + 20 + 1 bytes fit in 96 */
	ssize_t w = write(STDERR_FILENO, strbuf_str(&sb), strbuf_len(&sb));
	(void)w; /* in a signal handler: nothing else to do */
}

/* SIGSYS from SCMP_ACT_TRAP: make the call return -EPERM and go on. */
static void confine_sigsys(int sig, siginfo_t *si, void *ctx)
{
	int saved = errno;
	ucontext_t *uc = ctx;
	atomic_fetch_add(&confine_denied, 1);
	confine_log_denied(si->si_syscall);
#if defined(__x86_64__)
	uc->uc_mcontext.gregs[REG_RAX] = -EPERM;
#elif defined(__aarch64__)
	uc->uc_mcontext.regs[0] = (unsigned long long)-EPERM;
#else
#error "confine: no way to set a system call's result on this architecture"
#endif
	errno = saved;
}

/* ---- building the filter --------------------------------------------------- */

static int confine_rule(scmp_filter_ctx f, uint32_t action, int nr, unsigned n,
			const struct scmp_arg_cmp *cmp)
{
	if (nr < 0)
		return 0; /* not a system call on this architecture */
	return seccomp_rule_add_array(f, action, nr, n, cmp);
}

/* Calls allowed only with some arguments. */
static int confine_arg_rules(scmp_filter_ctx f)
{
	int r = 0;
	/* socket: IPv4, IPv6 and local sockets (syslog) only.  Every comparison
	 * names its second datum (0, unused for EQ) so that clang's
	 * -Wmissing-field-initializers stays quiet about the macro. */
	const int families[] = {AF_INET, AF_INET6, AF_UNIX};
	for (size_t i = 0; i < ARRAY_LEN(families) && r == 0; i++)
		r = seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
				     SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)families[i], 0));
	/* ioctl: the few requests libevent, c-ares and stdio make (no TIOCSTI) */
	const unsigned long requests[] = {FIONREAD, FIONBIO, FIOCLEX, FIONCLEX, TCGETS};
	for (size_t i = 0; i < ARRAY_LEN(requests) && r == 0; i++)
		r = seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
				     SCMP_A1(SCMP_CMP_EQ, (scmp_datum_t)requests[i], 0));
	/* signals only to this process (abort(), raise()) */
	if (r == 0)
		r = seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1,
				     SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)getpid(), 0));
	if (r == 0)
		r = seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(kill), 1,
				     SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)getpid(), 0));
	/* limits may be read, not raised */
	if (r == 0)
		r = seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(prlimit64), 1,
				     SCMP_A2(SCMP_CMP_EQ, 0, 0));
	/* threads only: a clone that would make a process or a namespace is
	 * refused (one comparison: flags under the mask equal the value) */
	const scmp_datum_t mask = CLONE_VM | CLONE_THREAD | CLONE_NEWNS | CLONE_NEWUSER |
				  CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC |
				  CLONE_NEWCGROUP;
	if (r == 0)
		r = seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
				     SCMP_A0(SCMP_CMP_MASKED_EQ, mask, CLONE_VM | CLONE_THREAD));
#if CONFINE_SANITIZER
	/* the leak checker's tracer task shares memory but is no thread */
	if (r == 0)
		r = seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
				     SCMP_A0(SCMP_CMP_MASKED_EQ, mask, CLONE_VM));
#endif
	return r;
}

/* prctl: naming threads and reading state; never PR_SET_SECCOMP again
 * (harmless, filters only add up) nor capabilities. */
static int confine_prctl(scmp_filter_ctx f)
{
	const int options[] = {PR_SET_NAME, PR_GET_NAME, PR_GET_DUMPABLE, PR_GET_NO_NEW_PRIVS,
			       PR_GET_SECCOMP, PR_SET_VMA,
#if CONFINE_SANITIZER
			       PR_SET_PTRACER, PR_SET_DUMPABLE, PR_SET_PDEATHSIG,
#endif
	};
	int r = 0;
	for (size_t i = 0; i < ARRAY_LEN(options) && r == 0; i++)
		r = seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1,
				     SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)options[i], 0));
	return r;
}

static int confine_build(scmp_filter_ctx f)
{
	int r = 0;
	for (size_t i = 0; i < ARRAY_LEN(confine_allowed) && r == 0; i++)
		r = confine_rule(f, SCMP_ACT_ALLOW, confine_allowed[i], 0, NULL);
	for (size_t i = 0; i < ARRAY_LEN(confine_fatal) && r == 0; i++)
		r = confine_rule(f, SCMP_ACT_KILL_PROCESS, confine_fatal[i], 0, NULL);
	/* glibc tries clone3 first and falls back to clone on ENOSYS, whose
	 * flags a filter can see (clone3 passes them in memory) */
	if (r == 0)
		r = seccomp_rule_add(f, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	if (r == 0)
		r = confine_arg_rules(f);
	if (r == 0)
		r = confine_prctl(f);
#if CONFINE_SANITIZER
	if (r == 0)
		r = seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(ptrace), 0);
	if (r == 0)
		r = seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(wait4), 0);
	if (r == 0)
		r = seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(waitid), 0);
#endif
	return r;
}

/* ---- applying it ------------------------------------------------------------ */

static int confine_trap_handler(char *err, size_t errsz)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = confine_sigsys;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSYS, &sa, NULL) < 0) {
		errfmt(err, errsz, "sigaction(SIGSYS): %s", strerror(errno));
		return -1;
	}
	return 0;
}

int confine_apply(char *err, size_t errsz)
{
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		errfmt(err, errsz, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
		return -1;
	}
	if (confine_trap_handler(err, errsz) < 0)
		return -1;
	scmp_filter_ctx f = seccomp_init(SCMP_ACT_TRAP);
	if (!f) {
		errfmt(err, errsz, "seccomp_init failed");
		return -1;
	}
	int r = confine_build(f);
	/* every thread (the delivery worker exists already) gets the filter */
	if (r == 0)
		r = seccomp_attr_set(f, SCMP_FLTATR_CTL_TSYNC, 1);
	if (r == 0)
		r = seccomp_load(f);
	seccomp_release(f);
	if (r != 0) {
		errfmt(err, errsz, "seccomp filter: %s", strerror(-r));
		return -1;
	}
	return 0;
}

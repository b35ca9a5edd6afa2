/* confine: what the running daemon may still ask of the kernel.  After
 * start-up (listeners bound, privileges dropped, threads started) the
 * process sets PR_SET_NO_NEW_PRIVS and loads a seccomp filter (libseccomp)
 * that lists the system calls the daemon needs; execve, ptrace, mount,
 * module loading, bpf and the like kill the whole process. */
#ifndef POSTHORN_CONFINE_H
#define POSTHORN_CONFINE_H

#include <stddef.h>

/* Confine the calling process, all of its threads included.  0, or -1
 * with a message in err (the caller must not go on unconfined). */
int confine_apply(char *err, size_t errsz);

/* How many system calls outside the list were refused (with EPERM) since
 * confine_apply; each is also logged as event=seccomp-denied. */
unsigned long confine_denied_count(void);

#endif

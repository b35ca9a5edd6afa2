/* imap_thread: THREAD and UID THREAD (RFC 5256 §2.2, §3, §4): the
 * ORDEREDSUBJECT and REFERENCES algorithms over the keys imap_sort.c
 * collects, and the thread-list response. */
#ifndef POSTHORN_IMAP_THREAD_H
#define POSTHORN_IMAP_THREAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct imap_session;
struct imap_command;

enum {
	/* ancestors walked to see whether a link would close a loop (RFC
	 * 5256 §3 step 1): a deeper thread is left unlinked there */
	IMAP_THREAD_DEPTH_MAX = 4096,
};

/* One message as the algorithms see it, in sequence order. */
struct imap_thread_msg {
	uint32_t num;                    /* printed: sequence number or UID */
	int64_t date;                    /* sent date (else internal date) */
	const char *subject;             /* base subject, casemapped */
	bool reply;                      /* the subject said reply or forward */
	const char *message_id;          /* NULL: none */
	char *const *refs;               /* References, oldest first */
	size_t nrefs;
};

/* The thread-list (RFC 5256 §4, without "* THREAD ") of the messages
 * m[0..n) by each algorithm, into a string (caller frees; *len its
 * length). */
char *imap_thread_orderedsubject(const struct imap_thread_msg *m, size_t n, size_t *len);
char *imap_thread_references(const struct imap_thread_msg *m, size_t n, size_t *len);

void imap_cmd_thread(struct imap_session *s, const struct imap_command *c);

#endif

/* proxy: the PROXY protocol header a load balancer puts before a client's
 * connection (HAProxy's "PROXY protocol" specification, versions 1 and 2),
 * parsed from untrusted bytes: the client's real address and port, or
 * "use the connection's own" (v1 UNKNOWN, v2 LOCAL).  v2's TLVs are
 * walked for their lengths and otherwise ignored.  No I/O here: the
 * caller feeds what it has read so far (net/proxy_wait.h). */
#ifndef POSTHORN_PROXY_H
#define POSTHORN_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

enum {
	PROXY_V1_MAX = 107,      /* a v1 line, its CRLF included (spec §2.1) */
	PROXY_V2_FIXED = 16,     /* signature, version/command, family, length */
	PROXY_V2_BODY_MAX = 1024, /* addresses and TLVs accepted after that */
	PROXY_HEADER_MAX = PROXY_V2_FIXED + PROXY_V2_BODY_MAX,
};

enum proxy_status {
	PROXY_NEED_MORE,         /* a valid beginning: read more */
	PROXY_DONE,              /* a whole header: see struct proxy_header */
	PROXY_BAD,               /* not a valid header: refuse the connection */
};

struct proxy_header {
	size_t length;           /* octets of the header (what to consume) */
	int version;             /* 1 or 2 */
	/* v1 UNKNOWN or v2 LOCAL: no address given; the connection's own
	 * peer is the client (a balancer's health check) */
	bool local;
	struct sockaddr_storage src; /* the client, with its port (unless local) */
	socklen_t srclen;
};

/* Parse the first len octets received on a connection.  NEED_MORE only
 * while len is below PROXY_HEADER_MAX and what is there can still begin a
 * valid header; DONE fills *h (h->length <= len: octets after it are the
 * client's); BAD sets *why to a short token for the log line
 * ("bad-signature", "v1-too-long", ...).  Octets past a header are never
 * looked at. */
enum proxy_status proxy_parse(const uint8_t *buf, size_t len, struct proxy_header *h,
			      const char **why);

#endif

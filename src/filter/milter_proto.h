/* milter_proto: the packets of the Sendmail mail filter protocol, version 6,
 * as Postfix speaks it (libmilter's mfdef.h; Postfix's milter8.c): the
 * MTA's commands built, the filter's replies read.  A packet is a 32-bit
 * length in network order (the command byte included), the command byte,
 * then its data; every length and every string of a reply is checked here,
 * so nothing a filter sends is trusted further up. */
#ifndef POSTHORN_MILTER_PROTO_H
#define POSTHORN_MILTER_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
	MILTER_VERSION = 6,
	MILTER_CHUNK_MAX = 65535,       /* body data per SMFIC_BODY (libmilter MILTER_CHUNK_SIZE) */
	MILTER_PACKET_MAX = 1 << 20,    /* the longest reply taken; a longer one is garbage */
	MILTER_REPLY_TEXT_MAX = 4096,   /* a custom reply (SMFIR_REPLYCODE), every line */
};

/* Commands of the MTA (SMFIC_*). */
enum {
	MILTER_CMD_ABORT = 'A', MILTER_CMD_BODY = 'B', MILTER_CMD_CONNECT = 'C',
	MILTER_CMD_MACRO = 'D', MILTER_CMD_BODYEOB = 'E', MILTER_CMD_HELO = 'H',
	MILTER_CMD_HEADER = 'L', MILTER_CMD_MAIL = 'M', MILTER_CMD_EOH = 'N',
	MILTER_CMD_OPTNEG = 'O', MILTER_CMD_QUIT = 'Q', MILTER_CMD_RCPT = 'R',
	MILTER_CMD_DATA = 'T',
};

/* Replies of the filter (SMFIR_*). */
enum {
	MILTER_R_ADDRCPT = '+', MILTER_R_DELRCPT = '-', MILTER_R_ADDRCPT_PAR = '2',
	MILTER_R_SHUTDOWN = '4', MILTER_R_ACCEPT = 'a', MILTER_R_REPLBODY = 'b',
	MILTER_R_CONTINUE = 'c', MILTER_R_DISCARD = 'd', MILTER_R_CHGFROM = 'e',
	MILTER_R_CONN_FAIL = 'f', MILTER_R_ADDHEADER = 'h', MILTER_R_INSHEADER = 'i',
	MILTER_R_SETSYMLIST = 'l', MILTER_R_CHGHEADER = 'm', MILTER_R_PROGRESS = 'p',
	MILTER_R_QUARANTINE = 'q', MILTER_R_REJECT = 'r', MILTER_R_SKIP = 's',
	MILTER_R_TEMPFAIL = 't', MILTER_R_REPLYCODE = 'y', MILTER_R_OPTNEG = 'O',
};

/* Actions a filter may take (SMFIF_*), offered in SMFIC_OPTNEG. */
enum {
	MILTER_ACT_ADDHDRS = 0x01, MILTER_ACT_CHGBODY = 0x02, MILTER_ACT_ADDRCPT = 0x04,
	MILTER_ACT_DELRCPT = 0x08, MILTER_ACT_CHGHDRS = 0x10, MILTER_ACT_QUARANTINE = 0x20,
	MILTER_ACT_CHGFROM = 0x40, MILTER_ACT_ADDRCPT_PAR = 0x80, MILTER_ACT_SETSYMLIST = 0x100,
	MILTER_ACT_OFFERED = 0x1ff,
};

/* Protocol steps (SMFIP_*): NO* skip a step, NR_* mean "no reply to it". */
enum {
	MILTER_P_NOCONNECT = 0x1, MILTER_P_NOHELO = 0x2, MILTER_P_NOMAIL = 0x4,
	MILTER_P_NORCPT = 0x8, MILTER_P_NOBODY = 0x10, MILTER_P_NOHDRS = 0x20,
	MILTER_P_NOEOH = 0x40, MILTER_P_NR_HDR = 0x80, MILTER_P_NOUNKNOWN = 0x100,
	MILTER_P_NODATA = 0x200, MILTER_P_SKIP = 0x400, MILTER_P_RCPT_REJ = 0x800,
	MILTER_P_NR_CONN = 0x1000, MILTER_P_NR_HELO = 0x2000, MILTER_P_NR_MAIL = 0x4000,
	MILTER_P_NR_RCPT = 0x8000, MILTER_P_NR_DATA = 0x10000, MILTER_P_NR_UNKN = 0x20000,
	MILTER_P_NR_EOH = 0x40000, MILTER_P_NR_BODY = 0x80000, MILTER_P_HDR_LEADSPC = 0x100000,
	/* what posthorn lets a filter ask for: every step may be skipped or
	 * left unanswered; never RCPT_REJ (rejected recipients are not sent)
	 * nor HDR_LEADSPC */
	MILTER_P_OFFERED = 0x1fffff & ~(MILTER_P_RCPT_REJ | MILTER_P_HDR_LEADSPC),
};

/* One reply, its fields pointing into the bytes it was read from. */
struct milter_reply {
	char cmd;
	uint32_t version, actions, protocol;    /* OPTNEG */
	uint32_t index;                         /* INSHEADER, CHGHEADER */
	const char *s1, *s2;                    /* the strings of the reply, NUL-ended:
						 * header name and value, address and
						 * ESMTP arguments, reply text, reason */
	const uint8_t *data;                    /* REPLBODY: the bytes */
	size_t len;
};

enum milter_parse { MILTER_PARSE_OK, MILTER_PARSE_NEED_MORE, MILTER_PARSE_BAD };

/* One reply from the start of buf: OK with *used set (its whole length),
 * NEED_MORE when buf holds less than one packet, BAD for garbage: a length
 * over MILTER_PACKET_MAX or zero, an unknown command, fields that do not
 * fit the command, a string without its NUL, a header name or value that
 * could break the message.  *why says what was wrong. */
enum milter_parse milter_reply_parse(const uint8_t *buf, size_t len, size_t *used,
				     struct milter_reply *out, const char **why);

/* A custom reply (SMFIR_REPLYCODE) fit to send: one or more lines, each
 * "4xx" or "5xx" (the same code on every line), "-" before the last or a
 * space or its end, printable ASCII, lines separated by CRLF. */
bool milter_reply_text_ok(const char *text);

/* A packet being built: a bounded growing buffer, overflow sticky. */
struct milter_packet {
	uint8_t *buf;
	size_t len, cap;
	bool overflow;
};
void milter_packet_begin(struct milter_packet *p, char cmd);
void milter_packet_add(struct milter_packet *p, const void *data, size_t len);
void milter_packet_add_str(struct milter_packet *p, const char *s); /* with its NUL */
void milter_packet_add_u32(struct milter_packet *p, uint32_t v);
void milter_packet_add_u16(struct milter_packet *p, uint16_t v);
/* The length written into the header; false (and p freed) on overflow.
 * On success the caller owns p->buf (p->len bytes) and frees it. */
bool milter_packet_end(struct milter_packet *p);
void milter_packet_free(struct milter_packet *p);

#endif

/* imap_parse: the IMAP command parser.  RFC 3501 §9 formal syntax (tag,
 * command name, atoms, quoted strings, literals, NIL, parenthesised lists,
 * FETCH BODY[section]<partial>, sequence sets), RFC 7888 LITERAL+/LITERAL-,
 * RFC 4959 SASL-IR (an ordinary atom), RFC 5182 "$", RFC 3516 BINARY[].
 *
 * Incremental: bytes come from the connection's evbuffer and are removed
 * only as they are parsed; every line part goes through linebuf_get().
 * Bounded: whatever a client sends, one parser holds at most one line part
 * (IMAP_PREAUTH_LINE_MAX, IMAP_LINE_MAX once authenticated) and the
 * command being built: IMAP_*_MEM_MAX octets of
 * strings, in-memory literals and argument nodes (plus allocator slack),
 * at most IMAP_*_ARGS_MAX nodes.  APPEND's message literal goes to a sink
 * in chunks and is never held in memory.
 *
 * Between commands (after COMMAND, after an ERROR once its bytes are
 * skipped, i.e. whenever the parser is idle) the parser remembers nothing
 * about the buffer, so the session may read raw lines itself (AUTHENTICATE
 * responses, IDLE's DONE) with its own linebuf. */
#ifndef POSTHORN_IMAP_PARSE_H
#define POSTHORN_IMAP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/message.h"

struct evbuffer;

/* Every limit, in one place.  "Line part": the bytes of a command between
 * its start or the end of a literal and CRLF or the next literal's "{n}". */
enum {
	/* One line part, CRLF included, after authentication.  RFC 7162 §4
	 * asks for at least 8192, but a legal ID (RFC 2971 §3.3: 30 pairs,
	 * values of 1024 octets) needs about 31 KiB; 64 KiB as Dovecot.  Its
	 * storage grows with the line part (imap_parser_line_capacity); the
	 * connection reads no more ahead (CONN_INPUT_MAX). */
	IMAP_LINE_MAX = 64 * 1024,
	IMAP_TAG_MAX = 64,               /* a longer tag is refused */
	IMAP_NAME_MAX = 32,              /* one command-name word ("UID" + one more) */
	IMAP_DEPTH_MAX = 32,             /* nesting of parenthesised lists */
	IMAP_SECTION_PARTS_MAX = MESSAGE_SECTION_PARTS_MAX, /* "1.2.3..." in BODY[...] */
	IMAP_SEQSET_RANGES_MAX = 10000,  /* ranges in one sequence set */
	/* Before authentication (the default; RFC 3501 §3.1 commands only:
	 * LOGIN, AUTHENTICATE, ID, ...). */
	IMAP_PREAUTH_LINE_MAX = 32 * 1024,     /* one line part: the largest ID fits */
	IMAP_PREAUTH_LITERAL_MAX = 8 * 1024,   /* one literal held in memory */
	IMAP_PREAUTH_MEM_MAX = 64 * 1024,      /* octets held for one command */
	IMAP_PREAUTH_ARGS_MAX = 256,           /* argument nodes in one command */
	/* After authentication. */
	IMAP_LITERAL_MAX = 64 * 1024,          /* one literal held in memory */
	IMAP_MEM_MAX = 1024 * 1024,            /* octets held for one command */
	IMAP_ARGS_MAX = 10000,                 /* argument nodes in one command */
	IMAP_REASON_MAX = 128,                 /* error text for "TAG BAD reason" */
};

enum imap_parse_status {
	IMAP_PARSE_NEED_MORE,   /* everything available was consumed or is an
				 * incomplete line part: wait for input */
	IMAP_PARSE_COMMAND,     /* *out is a whole command, owned by the caller */
	IMAP_PARSE_CONTINUE,    /* a synchronizing literal {n} was accepted: send
				 * "+ Ready for literal data", then feed again
				 * (or refuse it: imap_parser_reject_literal) */
	IMAP_PARSE_ERROR,       /* the command is bad: imap_parser_error() */
};

enum imap_arg_type {
	IMAP_ARG_ATOM,          /* atom, number, flag (\Seen), sequence set,
				 * list-mailbox with % and *, base64 of SASL-IR */
	IMAP_ARG_NIL,           /* the atom NIL (str "NIL" as written) */
	IMAP_ARG_QUOTED,        /* quoted string, escapes removed */
	IMAP_ARG_LITERAL,       /* literal; in memory (str) or sunk (str NULL) */
	IMAP_ARG_LIST,          /* parenthesised list */
	IMAP_ARG_SECTION,       /* FETCH BODY[...]<...> and friends: section */
};

struct imap_arg;

struct imap_args {
	size_t n;
	struct imap_arg *v;
	size_t cap;             /* private */
};

/* FETCH's body section, RFC 3501 §6.4.5 and §9 "section", RFC 3516. */
enum imap_section_att {
	IMAP_SECTION_BODY,      /* BODY[...] and BODY.PEEK[...] */
	IMAP_SECTION_BINARY,    /* BINARY[...] and BINARY.PEEK[...] */
	IMAP_SECTION_BINARY_SIZE, /* BINARY.SIZE[...] */
};

struct imap_section {
	enum imap_section_att att;
	bool peek;              /* .PEEK: do not set \Seen */
	/* which part and which text, as message.c locates them; the header
	 * field names as written (astring; quotes removed), owned here */
	struct message_section_spec spec;
	bool partial;           /* <origin.count> given */
	uint32_t origin;
	uint32_t count;         /* >= 1 */
};

struct imap_arg {
	enum imap_arg_type type;
	/* ATOM, NIL, QUOTED, in-memory LITERAL and SECTION (the whole token as
	 * written): NUL-terminated, never containing a NUL octet; NULL for
	 * LIST and a sunk LITERAL. */
	char *str;
	size_t len;
	/* LITERAL */
	uint64_t literal_size;
	bool literal_sync;      /* {n} rather than {n+} */
	bool literal8;          /* ~{n}: RFC 3516 literal8 (APPEND's message) */
	bool sunk;              /* octets went to the APPEND sink */
	bool sink_failed;       /* the sink's write failed once; later octets
				 * were dropped: answer NO, not BAD */
	bool literal_nul;       /* a sunk literal contained NUL (RFC 3501 §4.3
				 * forbids it; RFC 3516 literal8 would allow) */
	struct imap_args list;  /* LIST */
	struct imap_section *section; /* SECTION */
};

struct imap_command {
	char tag[IMAP_TAG_MAX + 1];
	/* upper case: "FETCH", or two words for UID: "UID FETCH" */
	char name[2 * IMAP_NAME_MAX + 2];
	struct imap_args args;  /* the arguments after the name */
};

/* A refused command, for "TAG BAD reason" ("* BAD reason" without a tag).
 * The reason is the parser's own text, never a client's byte; the tag
 * holds only ASTRING-CHARs.  Valid until the next feed. */
struct imap_parse_error {
	bool has_tag;
	char tag[IMAP_TAG_MAX + 1];
	char reason[IMAP_REASON_MAX];
};

/* Where APPEND's message literal goes (the session writes a temporary
 * file).  write gets the octets in order, in chunks of any size; it
 * returns 0, or -1 to say the octets could not be stored: the parser then
 * drops the rest (the literal must still be read to stay in sync) and
 * marks the argument sink_failed.  Several messages per command (RFC
 * 3502 MULTIAPPEND): start (optional) is called as each message literal
 * begins, before its writes (a literal of size 0 gets none), with the
 * command so far (its mailbox), and returning
 * -1 marks it sink_failed; a command that ends in ERROR discards them. */
struct imap_literal_sink {
	void *arg;
	int (*write)(void *arg, const void *data, size_t len);
	int (*start)(void *arg, const struct imap_command *cmd); /* cmd: so far */
};

struct imap_parser;

struct imap_parser *imap_parser_new(void);
void imap_parser_free(struct imap_parser *p);
/* Octets the parser holds for the line part (0 between commands unless
 * the last line part was short): never preallocated at IMAP_LINE_MAX. */
size_t imap_parser_line_capacity(const struct imap_parser *p);

/* Parse from in.  Returns as soon as something happens: COMMAND (with
 * *out), CONTINUE, ERROR, or NEED_MORE once in holds only an incomplete
 * line part (never its limit, IMAP_LINE_MAX at most, or more) or nothing.  Call again
 * after COMMAND, CONTINUE and ERROR: more commands may be buffered.
 *
 * ERROR is returned as soon as the command is known to be bad; the rest of
 * it (rest of the line, octets of a {n+} literal announced at the end of
 * that line part, and so on to the real end of the command) is then skipped
 * by the following feed calls before the next command is parsed, so the
 * session just keeps feeding and stays in sync.  A synchronizing literal
 * that is refused gets no continuation, so per RFC 3501 §7.5 its octets
 * never come; a broken client that sends them anyway has them parsed as
 * commands (each most likely BAD). */
enum imap_parse_status imap_parse_feed(struct imap_parser *p, struct evbuffer *in,
				       struct imap_command **out);

const struct imap_parse_error *imap_parser_error(const struct imap_parser *p);

/* After CONTINUE: the command so far (tag, name, arguments up to the
 * announced literal, which is the last argument of the innermost list, with
 * literal_size set), e.g. to refuse APPEND in the wrong state. */
const struct imap_command *imap_parser_pending(const struct imap_parser *p);
/* Is a command under way: a line part or literal of it parsed, or the
 * rest of a bad one being skipped?  (The bytes of an incomplete line part
 * are still in the caller's buffer.) */
bool imap_parser_in_command(const struct imap_parser *p);
/* After CONTINUE, instead of sending "+": the session answers the tag
 * with NO or BAD itself; the client will not send the literal, and the
 * parser forgets the command. */
void imap_parser_reject_literal(struct imap_parser *p);

/* Switch to the limits after authentication (IMAP_LITERAL_MAX, IMAP_MEM_MAX,
 * IMAP_ARGS_MAX; APPEND's literal goes to the sink) or back. */
void imap_parser_set_authenticated(struct imap_parser *p, bool authenticated);
/* After ENABLE UTF8=ACCEPT (RFC 6855 §3): quoted strings may hold 8-bit
 * octets (UTF-8; whoever uses the string checks it). */
void imap_parser_set_utf8(struct imap_parser *p, bool on);
/* APPEND's message literal (after authentication only): at most max_size
 * octets (limits.message-size), streamed to sink.  With sink NULL it is
 * kept in memory and limited to IMAP_LITERAL_MAX like any other. */
void imap_parser_set_append(struct imap_parser *p, uint64_t max_size,
			    const struct imap_literal_sink *sink);

/* Forget the command in progress and all knowledge of the buffer: after
 * STARTTLS has thrown away the pipelined plaintext. */
void imap_parser_reset(struct imap_parser *p);

void imap_command_free(struct imap_command *c);

/* Walking the arguments.  Each returns NULL/false when the argument is
 * absent or not of the asked form, so a handler can check its syntax in
 * one expression: imap_args_at(&c->args, 0) is safe past the end. */
const struct imap_arg *imap_args_at(const struct imap_args *args, size_t i);
/* The elements of a LIST, else NULL. */
const struct imap_args *imap_arg_list(const struct imap_arg *a);
/* atom (RFC 3501 ATOM-CHARs only; NIL counts), e.g. a keyword. */
const char *imap_arg_atom(const struct imap_arg *a);
/* Is a the atom kw, case-insensitively? */
bool imap_arg_is(const struct imap_arg *a, const char *kw);
/* string: quoted or in-memory literal. */
const char *imap_arg_string(const struct imap_arg *a, size_t *len);
/* astring: atom with ASTRING-CHARs ("]" allowed), NIL, or string. */
const char *imap_arg_astring(const struct imap_arg *a, size_t *len);
/* list-mailbox: astring or an atom with the wildcards % and *. */
const char *imap_arg_list_mailbox(const struct imap_arg *a, size_t *len);
/* flag: "\" atom (system flag or extension) or a keyword atom. */
const char *imap_arg_flag(const struct imap_arg *a);
bool imap_arg_is_nil(const struct imap_arg *a);
/* number: digits only, within 32 (RFC 3501 "number") or 64 bits. */
bool imap_arg_u32(const struct imap_arg *a, uint32_t *v);
bool imap_arg_u64(const struct imap_arg *a, uint64_t *v);
const struct imap_section *imap_arg_section(const struct imap_arg *a);

/* Sequence sets, RFC 3501 §9 sequence-set, RFC 5182 "$".  Kept as ranges,
 * never expanded: "1:100000" is one range; adjacent numbers merge while
 * parsing ("1,2,3" is one range).  "*" is IMAP_SEQ_STAR until resolved. */
#define IMAP_SEQ_STAR 0u        /* never a valid nz-number */

struct imap_seq_range {
	uint32_t lo, hi;        /* lo <= hi once resolved; STAR sorts last */
};

struct imap_seqset {
	bool saved;             /* "$": the saved search result (RFC 5182) */
	size_t n;
	struct imap_seq_range *ranges;
	size_t cap;             /* private */
};

/* Parse atom into set (zeroed first).  false with a reason in err (the
 * parser's own text) on bad syntax, a number outside 1..2^32-1, or more than
 * IMAP_SEQSET_RANGES_MAX ranges; set is then empty. */
bool imap_parse_seqset(const char *atom, struct imap_seqset *set, char *err, size_t errsz);
/* Replace "*" by max (the highest sequence number or UID in use; 0 for an
 * empty mailbox), then sort and merge: ranges ascending and disjoint. */
void imap_seqset_resolve(struct imap_seqset *set, uint32_t max);
/* After resolve: is n in the set?  O(log ranges). */
bool imap_seqset_contains(const struct imap_seqset *set, uint32_t n);
void imap_seqset_clear(struct imap_seqset *set);

#endif

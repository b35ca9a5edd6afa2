/* conf: the configuration language of posthorn.conf(5) — lexer, parser, one
 * validation step that reports every error as FILE:LINE:COL, the typed
 * structures every module reads, and the plain-words policy of `check`. */
#ifndef POSTHORN_CONF_H
#define POSTHORN_CONF_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

/* Where a directive or argument stands in the configuration. */
struct conf_pos {
	const char *file; /* owned by struct conf (files[]) */
	unsigned line, col;
};

enum conf_protocol { PROTO_SMTP, PROTO_POP3, PROTO_IMAP };
enum conf_action { ACTION_ALLOW, ACTION_DENY };
enum conf_rule_kind { RULE_NETWORK, RULE_DOMAIN, RULE_HOST, RULE_DNSBL };

/* A single computer, a group of computers (CIDR, address + mask), a
 * domain matched on the client's forward-confirmed reverse name, a host
 * name matched on the addresses it stands for in DNS, or a DNS block list
 * that lists the client (RFC 5782). */
struct conf_rule {
	enum conf_action action;
	enum conf_rule_kind kind;
	int family;             /* AF_INET or AF_INET6 (RULE_NETWORK) */
	uint8_t addr[16];       /* network byte order, already masked */
	uint8_t mask[16];
	unsigned prefix;        /* number of leading one bits in mask */
	char *domain;           /* RULE_DOMAIN, RULE_HOST: the name, lower case,
				 * no trailing dot */
	size_t host;            /* RULE_HOST: its index in the server's hosts[] */
	uint8_t (*answers)[4];  /* RULE_DNSBL (zone in domain): the A answers that
				 * count; none: any in 127.0.0.0/8 */
	size_t nanswers;
	char *text;             /* as written, for messages and `check` */
	struct conf_pos pos;
};

struct conf_sockaddr {
	struct sockaddr_storage ss;
	socklen_t len;
	char *text;             /* as written, e.g. "[::1]:587" */
	struct conf_pos pos;
};

struct conf_listen {
	struct conf_sockaddr addr;
	bool tls;               /* implicit TLS on connect */
	bool proxy;             /* every connection starts with a PROXY header */
};

/* metrics IP:PORT [tls] */
struct conf_metrics {
	struct conf_sockaddr addr;
	bool tls;               /* HTTPS with the metrics-tls block's certificates */
};

struct conf_cert {
	char *certificate;      /* absolute paths */
	char *key;
	bool acme;              /* "certificate acme": the acme block's file
				 * SPOOL/acme/ACME_CERT_FILE (key and chain) */
	struct conf_pos pos;
};

enum { TLS_VERSION_1_2 = 12, TLS_VERSION_1_3 = 13 };

struct conf_tls {
	struct conf_cert *certs; /* certificate/key pairs, in order */
	size_t ncerts;
	bool require;           /* "require secure channel" */
	unsigned min_bits;      /* default 128 */
	int min_version;        /* TLS_VERSION_1_2 (default) or _1_3 */
	bool strict_sni;        /* default no */
};

struct conf_connection {
	enum conf_action default_action; /* default allow */
	struct conf_rule *rules;
	size_t nrules;
	bool reverse_lookup;    /* look the client's name up for Received:
				 * even without domain rules; default yes */
};

enum conf_mech {
	MECH_PLAIN = 1u << 0,
	MECH_LOGIN = 1u << 1,
	MECH_SCRAM_SHA_256 = 1u << 2,
	MECH_GSSAPI = 1u << 3,  /* Kerberos (RFC 4752): no password crosses */
	/* The mechanisms that send the password (PLAIN, LOGIN) or material
	 * derived from it (SCRAM's salt, iteration count and proof: enough
	 * for an offline dictionary attack): `plaintext-requires-tls` keeps
	 * them inside TLS.  GSSAPI is not one. */
	MECH_PASSWORD_BASED = MECH_PLAIN | MECH_LOGIN | MECH_SCRAM_SHA_256,
};

/* realm REALM DOMAIN: a Kerberos principal NAME@REALM is the user
 * NAME@DOMAIN. */
struct conf_realm {
	char *realm;            /* as written (realms are case-sensitive) */
	char *domain;           /* lower case, no trailing dot */
	struct conf_pos pos;
};

struct conf_auth {
	unsigned mechanisms;    /* enum conf_mech bits; default PLAIN, LOGIN
				 * and SCRAM-SHA-256 */
	bool anonymous;         /* default no */
	bool plaintext_requires_tls; /* password-based mechanisms only inside
				      * TLS (MECH_PASSWORD_BASED); default yes */
	bool sender_must_match; /* default yes */
	unsigned lockout_failures; /* default 5 */
	unsigned lockout_window;   /* seconds, default 15m */
	unsigned lockout_duration; /* seconds, default 30m */
	unsigned lockout_ipv6_prefix; /* IPv6 clients counted per network of
				       * this many bits; default 64 */
	bool received_auth;     /* "(authenticated as USER)" in Received:; default yes */
	/* GSSAPI: the acceptor's keys (absolute path; NULL: none), the realms
	 * whose principals are users, and the replay cache, SPOOL/gssapi-replay
	 * (derived, not a directive) */
	char *keytab;
	struct conf_pos keytab_pos;
	struct conf_realm *realms;
	size_t nrealms;
	char *replay_cache;
};

struct conf_relay {
	bool authenticated;     /* default yes */
	struct conf_rule *rules; /* action is always ACTION_ALLOW */
	size_t nrules;
};

struct conf_limits {
	uint64_t message_size;  /* bytes, default 25M */
	unsigned recipients;    /* per message, default 100 */
	unsigned connections;   /* at once, this server, default 1000 */
	unsigned connections_per_ip; /* default 20 */
	unsigned timeout;       /* seconds idle, default 5m (pop3 10m, imap 30m) */
	unsigned error_delay;   /* SMTP: seconds before a refused recipient's
				 * reply, 0: none; default 1 */
	unsigned error_delay_after; /* ... once the session made this many
				     * errors; default 3 */
	unsigned unknown_recipients; /* SMTP: this many unknown recipients
				      * from one client refuse it; 0: off;
				      * default 50 */
	unsigned unknown_recipients_window;   /* seconds, default 1h */
	unsigned unknown_recipients_duration; /* seconds, default 1h */
	unsigned proxy_timeout; /* seconds for a PROXY header to arrive, default 5 */
};

/* verify { ... }: what an SMTP server checks of the mail it receives. */
enum conf_dmarc { CONF_DMARC_NO, CONF_DMARC_REPORT, CONF_DMARC_ENFORCE };

struct conf_verify {
	bool set;               /* the block was given */
	bool spf;               /* RFC 7208 on MAIL FROM (HELO for <>); default no */
	bool dkim;              /* RFC 6376 signatures; default no */
	enum conf_dmarc dmarc;  /* RFC 7489: no, report (header and log only), enforce */
	bool arc;               /* RFC 8617; default no */
	struct conf_pos pos;    /* of "verify" */
};

struct conf_dns {
	struct conf_sockaddr *servers; /* port defaults to 53 */
	size_t nservers;        /* 0: use /etc/resolv.conf */
};

/* Is every server on loopback (127.0.0.0/8, ::1)?  Only then is the AD bit
 * of their answers believed (a local validating resolver). */
bool conf_dns_on_loopback(const struct conf_dns *dns);
/* A milter (the Sendmail mail filter protocol): milter NAME { ... } */
enum conf_milter_failure { MILTER_ON_FAILURE_TEMPFAIL, MILTER_ON_FAILURE_ACCEPT,
			   MILTER_ON_FAILURE_REJECT };
enum conf_milter_stage {
	MILTER_STAGE_CONNECT = 1u << 0,
	MILTER_STAGE_HELO = 1u << 1,
	MILTER_STAGE_MAIL = 1u << 2,
	MILTER_STAGE_RCPT = 1u << 3,
	MILTER_STAGE_DATA = 1u << 4,    /* DATA, the header fields and the body */
};
#define MILTER_STAGE_ALL 0x1fu

struct conf_milter {
	char *name;
	char *socket;           /* as written: "inet:IP:PORT" or "unix:/PATH" */
	struct conf_sockaddr inet; /* inet: the address (len 0 for unix:) */
	char *unix_path;        /* unix: the absolute path, or NULL */
	unsigned timeout;       /* seconds per exchange, default 30s */
	unsigned connect_timeout; /* seconds, default 5s */
	enum conf_milter_failure on_failure; /* default tempfail */
	unsigned stages;        /* enum conf_milter_stage bits; default all */
	struct conf_pos pos;
};

struct conf_server {
	char *name;
	enum conf_protocol protocol;
	struct conf_listen *listens;
	size_t nlistens;
	char *hostname;         /* defaults to the global hostname */
	struct conf_dns dns;    /* empty: the global servers */
	struct conf_tls tls;
	struct conf_connection connection;
	struct conf_auth auth;
	struct conf_relay relay;
	struct conf_limits limits;
	struct conf_verify verify;
	struct conf_rule *proxy_from; /* the peers that may send a PROXY header
				       * (ACTION_ALLOW, RULE_NETWORK) */
	size_t nproxy_from;
	char **hosts;           /* the names of its host rules (connection and
				 * relay), each once, in order of appearance */
	size_t nhosts;
	struct conf_milter *milters; /* applied in this order (SMTP) */
	size_t nmilters;
	char *junk_header;      /* junk-header NAME VALUE: a message with this
				 * field (any case) and value goes to Junk */
	char *junk_value;
	struct conf_pos pos;
};

enum conf_outbound_tls { OUTBOUND_TLS_OPPORTUNISTIC, OUTBOUND_TLS_REQUIRED, OUTBOUND_TLS_NO };

struct conf_outbound {
	char *smarthost;        /* "host:port" as written, or NULL */
	char *smarthost_host;
	unsigned short smarthost_port; /* default 25 */
	char *smarthost_user;   /* smarthost-auth USER FILE */
	char *smarthost_secret; /* absolute path of the password file */
	unsigned short port;    /* default 25 */
	enum conf_outbound_tls tls; /* default opportunistic */
	bool tls_policy_dane;   /* tls-policy dane (default): RFC 7672 */
	bool tls_policy_sts;    /* tls-policy mta-sts (default): RFC 8461 */
	char *ca_file;          /* CAs for MTA-STS; NULL: the system's */
	bool tls_reports;       /* send TLS reports (RFC 8460); default: when dkim keys exist */
	bool tls_reports_set;   /* tls-reports was given */
	unsigned lifetime;      /* seconds, default 5d */
	unsigned *retry;        /* seconds; default 5m 15m 1h 4h */
	size_t nretry;
};

enum conf_acme_challenge { ACME_CHALLENGE_HTTP01, ACME_CHALLENGE_TLSALPN01 };

/* In SPOOL/acme/: the certificate's key, then its chain (mode 0600). */
#define ACME_CERT_FILE "certificate.pem"

/* The acme block: certificates from an ACME CA (RFC 8555). */
struct conf_acme {
	bool set;               /* the block was given */
	char *directory;        /* the CA's directory URL (https) */
	char *contact;          /* "mailto:..." or NULL */
	enum conf_acme_challenge challenge;
	bool challenge_set;
	struct conf_sockaddr http; /* http-01: where the CA's validation connects;
				    * tls-alpn-01 answers on every "listen ... tls" */
	char **names;           /* lower case, no trailing dot, each once */
	size_t nnames;
	char *ca;               /* absolute path of the CAs trusted for the
				 * directory's HTTPS, or NULL: the system's */
	struct conf_pos pos;
};

/* users ldap { ... }: the users live in an LDAP directory (Active
 * Directory, OpenLDAP), not in the users file. */
struct conf_ldap {
	char **uris;            /* tried in order: ldaps://, ldap:// (StartTLS), ldapi:// */
	size_t nuris;
	bool starttls;          /* StartTLS on ldap:// URIs; default yes */
	char *ca;               /* absolute; NULL: the system's CAs */
	char *bind_dn;          /* the service account; NULL: anonymous search */
	char *bind_password_file; /* absolute; with bind_dn */
	char *base;             /* where the users are searched, subtree */
	char *filter;           /* RFC 4515 with %a %u %d (escaped when expanded) */
	char **addresses;       /* attributes listing a user's addresses; default mail */
	size_t naddresses;
	char *principal;        /* attribute matched against a Kerberos principal; NULL: none */
	unsigned cache;         /* seconds an answer is kept; default 5m; 0: never */
	struct conf_pos pos;
};

/* dkim { key DOMAIN SELECTOR FILE }: a key posthorn signs with (RFC 6376). */
struct conf_dkim_key {
	char *domain;           /* lower case, no trailing dot */
	char *selector;         /* lower case */
	char *file;             /* absolute path of the PEM private key */
	struct conf_pos pos;
};

enum { CONF_DKIM_KEYS_MAX = 64 };

struct conf {
	char *path;             /* the main file, as given */
	char **files;           /* every file read (owned; conf_pos.file points here) */
	size_t nfiles;
	char *hostname;         /* default: the system's host name */
	char **domains;         /* lower case, no trailing dot */
	size_t ndomains;
	char *spool;            /* absolute; default /var/spool/posthorn */
	char *mailboxes;        /* absolute; default /var/mail/posthorn */
	uint64_t quota_bytes;   /* quota: each user's default limit (RFC 9208 */
	uint64_t quota_messages;/* STORAGE in octets, MESSAGE); 0: none */
	char *users;            /* absolute; default /etc/posthorn/users */
	struct conf_ldap *ldap; /* users ldap { }; NULL: the users file */
	char *aliases;          /* absolute or NULL */
	struct conf_dns dns;
	unsigned host_refresh_min; /* host rules' names are looked up again after */
	unsigned host_refresh_max; /* their TTL bounded to these; 30s, 1d */
	char *run_as;           /* NULL: keep the starting user */
	struct conf_outbound outbound;
	struct conf_metrics *metrics; /* HTTP: GET /metrics and the status page */
	size_t nmetrics;
	char *metrics_password; /* absolute path of the HTTP Basic password; NULL: none */
	struct conf_tls metrics_tls; /* the metrics-tls block (ncerts 0: none); only
				      * certificate, key, min-bits, min-version and
				      * strict-sni apply */
	struct conf_acme acme;
	struct conf_server *servers;
	size_t nservers;
	struct conf_dkim_key *dkim_keys; /* the dkim block's keys, in order */
	size_t ndkim_keys;
};

/* Parse and validate the file at path.  On success returns 0 and sets *out.
 * On failure prints every error as "FILE:LINE:COL: message" (one per line)
 * on errout, returns the number of errors and sets *out to NULL. */
int conf_load(const char *path, struct conf **out, FILE *errout);

/* The same, from text in memory; name is used as FILE in messages and
 * relative paths are resolved against basedir (include too). */
int conf_parse_string(const char *name, const char *text, const char *basedir,
		      struct conf **out, FILE *errout);

void conf_free(struct conf *conf);

/* Where the acme block keeps its files: SPOOL/acme/FILE (an owned string;
 * file NULL: the folder itself). */
char *conf_acme_path(const struct conf *conf, const char *file);

/* `posthorn check`: each virtual server's effective policy in plain words,
 * then the warnings.  Returns the number of warnings, or -1 when out could
 * not be written (errno set). */
int conf_print_policy(const struct conf *conf, FILE *out);
/* Does this SMTP server let clients log in (a mechanism, and a channel it
 * may cross: TLS offered, or passwords allowed in the clear)?  Then a
 * client on a block list is refused at MAIL unless it logged in, not at
 * the greeting. */
bool conf_smtp_offers_login(const struct conf_server *s);

/* Is domain (any case, one trailing dot allowed) a local domain? */
bool conf_is_local_domain(const struct conf *conf, const char *domain);

const char *conf_protocol_name(enum conf_protocol p);
/* The GSS-API service name of a protocol (RFC 4752 §3.1, the IANA
 * registry): "smtp", "pop", "imap". */
const char *conf_gssapi_service(enum conf_protocol p);

/* Parse "K/M/G" sizes and "s/m/h/d" durations; 0 on success, -1 on error.
 * Exposed for the unit tests and for the command line. */
int conf_parse_size(const char *s, uint64_t *out);
int conf_parse_duration(const char *s, unsigned *out);

/* The autologout timer (RFC 3501 §5.4): limits.timeout, but at least
 * IMAP_AUTOLOGOUT_MIN seconds once logged in and at most
 * IMAP_LOGIN_IDLE_MAX seconds before (posthorn check prints both). */
enum {
	IMAP_AUTOLOGOUT_MIN = 30 * 60,
	IMAP_LOGIN_IDLE_MAX = 60,
};

#endif

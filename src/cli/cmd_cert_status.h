/* cmd_cert_status: `posthorn cert status` (posthorn(8)) — the ACME
 * certificate: the names configured, the names, issuer and expiry of the
 * certificate in SPOOL/acme/certificate.pem, and the last attempt to get one. */
#ifndef POSTHORN_CMD_CERT_STATUS_H
#define POSTHORN_CMD_CERT_STATUS_H

/* Exit status: 0, or 1 (no acme block, configuration errors, output
 * failed; one "posthorn: ..." line on stderr). */
int cmd_cert_status(const char *conf_path);

#endif

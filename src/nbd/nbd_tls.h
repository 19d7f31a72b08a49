/* NBD over TLS (GnuTLS): the server's credentials, loaded once, and the TLS
 * transport a connection switches to after NBD_OPT_STARTTLS. */
#ifndef BDF_NBD_TLS_H
#define BDF_NBD_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct nbd_transport;
struct nbd_tls;

/* What a listener does with TLS (bdfilterd's --tls). */
enum nbd_tls_mode {
	NBD_TLS_OFF,     /* STARTTLS is refused (NBD_REP_ERR_POLICY) */
	NBD_TLS_ON,      /* offered: a client may use it or not */
	NBD_TLS_REQUIRE, /* nothing but STARTTLS and ABORT before TLS */
};

struct nbd_tls_config {
	/* Exactly one of these. CREDS_DIR holds QEMU's tls-creds-x509 layout:
	 * server-cert.pem and server-key.pem, ca-cert.pem (needed to verify
	 * clients), ca-crl.pem (optional). PSK_FILE is psktool's format,
	 * "identity:hexkey" per line. */
	const char *creds_dir;
	const char *psk_file;
	/* X.509: ask every client for a certificate signed by ca-cert.pem and
	 * refuse the ones without. */
	bool verify_peer;
	/* Accept only this client: the certificate's distinguished name as
	 * RFC 4514 writes it ("CN=client,O=Example"), or the PSK identity.
	 * NULL: any client the credentials let in. Implies verify_peer. */
	const char *authz;
};

/* Load CFG's credentials. A message for the user in ERR on failure. */
int nbd_tls_new(const struct nbd_tls_config *cfg, struct nbd_tls **out, char *err, size_t errlen);
void nbd_tls_free(struct nbd_tls *tls);

/* Run the TLS handshake on T's socket as the server and, when it succeeds
 * and the client passes verification and --tls-authz, make T a TLS
 * transport. DEADLINE_NS (CLOCK_MONOTONIC; 0: none) bounds the handshake.
 * PEER names the connection in the log, where every failure is said once.
 * 0 or -1; after -1 T is still the plain socket, to be closed. */
int nbd_tls_start(struct nbd_tls *tls, struct nbd_transport *t, const char *peer, uint64_t deadline_ns);

/* The parse of --tls: 0, or -1 for a word that is not off, on or require.
 * Inline: the command line's code links no TLS. */
static inline int nbd_tls_mode_parse(const char *s, enum nbd_tls_mode *out)
{
	if (strcmp(s, "off") == 0)
		*out = NBD_TLS_OFF;
	else if (strcmp(s, "on") == 0)
		*out = NBD_TLS_ON;
	else if (strcmp(s, "require") == 0)
		*out = NBD_TLS_REQUIRE;
	else
		return -1;
	return 0;
}

static inline const char *nbd_tls_mode_name(enum nbd_tls_mode m)
{
	return m == NBD_TLS_REQUIRE ? "require" : m == NBD_TLS_ON ? "on" : "off";
}

#endif

/* NBD over TLS (nbd-tls): the server's GnuTLS credentials, the handshake
 * after NBD_OPT_STARTTLS with the client's verification and --tls-authz, and
 * the transport (nbd_transport.h) that reads and writes TLS records.
 *
 * GnuTLS lets one thread receive while another sends on a session once the
 * handshake is over, which is what the transport contract asks for: the
 * connection's read lock and write lock keep one of each at a time. */
#include "nbd/nbd_tls.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <poll.h>
#include <gnutls/x509.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "nbd/nbd_transport.h"

/* The largest TLS record's plaintext. Small pieces at the front of a send (a
 * reply header, the start of its payload) are gathered into one record of at
 * most this size rather than a record each. */
#define TLS_RECORD_MAX 16384
/* GnuTLS reads a record's header and then its body, two recv()s a record:
 * what it pulls comes from a buffer this large, refilled by one recv(). */
#define TLS_PULL_BUFFER (128 * 1024)
/* How long a closing connection waits to say goodbye (close_notify). */
#define TLS_BYE_TIMEOUT_MS 1000

/* With a PSK, the key exchanges that use one must be asked for by name. */
#define PRIORITY_X509 "NORMAL"
#define PRIORITY_PSK "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK"

struct nbd_tls {
	gnutls_certificate_credentials_t x509; /* NULL with a PSK */
	gnutls_psk_server_credentials_t psk;   /* NULL with X.509 */
	gnutls_priority_t priority;
	bool verify_peer;
	char *authz;
};

struct tls_session {
	gnutls_session_t s;
	int fd;
	char stage[TLS_RECORD_MAX];
	/* Ciphertext received and not yet pulled by GnuTLS (only the reading
	 * thread touches it). */
	size_t rpos, rlen;
	char rbuf[TLS_PULL_BUFFER];
};

/* ---- credentials ---- */

__attribute__((format(printf, 3, 4)))
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

static int load_x509(struct nbd_tls *tls, const char *dir, char *err, size_t errlen)
{
	char cert[4096], key[4096], ca[4096], crl[4096];
	int r;

	snprintf(cert, sizeof(cert), "%s/server-cert.pem", dir);
	snprintf(key, sizeof(key), "%s/server-key.pem", dir);
	snprintf(ca, sizeof(ca), "%s/ca-cert.pem", dir);
	snprintf(crl, sizeof(crl), "%s/ca-crl.pem", dir);
	/* GnuTLS says "error parsing" of a file that is not there: say what is. */
	if (access(cert, R_OK) < 0)
		return fail(err, errlen, "--tls-creds: %s: %s", cert, strerror(errno));
	if (access(key, R_OK) < 0)
		return fail(err, errlen, "--tls-creds: %s: %s", key, strerror(errno));
	if (gnutls_certificate_allocate_credentials(&tls->x509) < 0)
		return fail(err, errlen, "--tls-creds: out of memory");
	r = gnutls_certificate_set_x509_key_file(tls->x509, cert, key, GNUTLS_X509_FMT_PEM);
	if (r < 0)
		return fail(err, errlen, "--tls-creds: cannot load %s and %s: %s", cert, key, gnutls_strerror(r));
	if (access(ca, F_OK) == 0) {
		r = gnutls_certificate_set_x509_trust_file(tls->x509, ca, GNUTLS_X509_FMT_PEM);
		if (r <= 0)
			return fail(err, errlen, "--tls-creds: cannot load %s: %s", ca,
				    r < 0 ? gnutls_strerror(r) : "no certificate in it");
	} else if (tls->verify_peer) {
		return fail(err, errlen, "--tls-verify-peer: %s: %s (the CA that signs the clients' certificates)",
			    ca, strerror(errno));
	}
	if (access(crl, F_OK) == 0) {
		r = gnutls_certificate_set_x509_crl_file(tls->x509, crl, GNUTLS_X509_FMT_PEM);
		if (r < 0)
			return fail(err, errlen, "--tls-creds: cannot load %s: %s", crl, gnutls_strerror(r));
	}
	/* For the DHE suites some clients still ask for. */
	gnutls_certificate_set_known_dh_params(tls->x509, GNUTLS_SEC_PARAM_MEDIUM);
	return 0;
}

static bool is_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') || (s[i] >= 'A' && s[i] <= 'F')))
			return false;
	return true;
}

/* GnuTLS reads a PSK file at each handshake, so a broken one would only show
 * as clients refused: check it now, line by line. */
static int check_psk_file(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	char line[1024];
	unsigned lineno = 0, keys = 0;
	struct stat st;
	int r = 0;

	if (!f)
		return fail(err, errlen, "--tls-psk: %s: %s", path, strerror(errno));
	while (r == 0 && fgets(line, sizeof(line), f)) {
		size_t n = strcspn(line, "\r\n");
		char *colon;

		lineno++;
		if (line[n] == '\0' && !feof(f)) {
			r = fail(err, errlen, "--tls-psk: %s:%u: line too long", path, lineno);
			break;
		}
		line[n] = '\0';
		if (n == 0)
			continue;
		colon = strchr(line, ':');
		if (!colon || colon == line)
			r = fail(err, errlen, "--tls-psk: %s:%u: expected IDENTITY:HEXKEY (as psktool writes)",
				 path, lineno);
		else if (strlen(colon + 1) == 0 || strlen(colon + 1) % 2 || !is_hex(colon + 1, strlen(colon + 1)))
			r = fail(err, errlen, "--tls-psk: %s:%u: the key of '%.*s' is not in hex digits, two per byte",
				 path, lineno, (int)(colon - line), line);
		else
			keys++;
	}
	if (r == 0 && ferror(f))
		r = fail(err, errlen, "--tls-psk: %s: %s", path, strerror(errno));
	if (r == 0 && keys == 0)
		r = fail(err, errlen, "--tls-psk: %s: no key in it", path);
	if (r == 0 && fstat(fileno(f), &st) == 0 && (st.st_mode & 077))
		log_warn("--tls-psk: %s can be read by others than its owner (mode %03o)", path,
			 (unsigned)(st.st_mode & 0777));
	fclose(f);
	return r;
}

int nbd_tls_new(const struct nbd_tls_config *cfg, struct nbd_tls **out, char *err, size_t errlen)
{
	struct nbd_tls *tls;
	int r;

	*out = NULL;
	if (!!cfg->creds_dir == !!cfg->psk_file)
		return fail(err, errlen, "TLS needs one of --tls-creds DIR and --tls-psk FILE");
	if (cfg->psk_file && cfg->verify_peer)
		return fail(err, errlen, "--tls-verify-peer is for X.509 certificates (--tls-creds): "
			    "a PSK client is always verified by its key");
	tls = calloc(1, sizeof(*tls));
	if (!tls)
		return fail(err, errlen, "out of memory");
	tls->verify_peer = cfg->verify_peer || (cfg->authz && cfg->creds_dir);
	if (cfg->authz && !(tls->authz = strdup(cfg->authz))) {
		r = fail(err, errlen, "out of memory");
		goto out;
	}
	if (cfg->creds_dir) {
		r = load_x509(tls, cfg->creds_dir, err, errlen);
	} else {
		r = check_psk_file(cfg->psk_file, err, errlen);
		if (r == 0 && gnutls_psk_allocate_server_credentials(&tls->psk) < 0)
			r = fail(err, errlen, "--tls-psk: out of memory");
		if (r == 0 && (r = gnutls_psk_set_server_credentials_file(tls->psk, cfg->psk_file)) < 0)
			r = fail(err, errlen, "--tls-psk: %s: %s", cfg->psk_file, gnutls_strerror(r));
	}
	if (r == 0) {
		const char *bad = NULL;

		r = gnutls_priority_init(&tls->priority, tls->psk ? PRIORITY_PSK : PRIORITY_X509, &bad);
		if (r < 0)
			r = fail(err, errlen, "TLS priority string: %s", gnutls_strerror(r));
	}
out:
	if (r < 0) {
		nbd_tls_free(tls);
		return -1;
	}
	*out = tls;
	return 0;
}

void nbd_tls_free(struct nbd_tls *tls)
{
	if (!tls)
		return;
	if (tls->priority)
		gnutls_priority_deinit(tls->priority);
	if (tls->x509)
		gnutls_certificate_free_credentials(tls->x509);
	if (tls->psk)
		gnutls_psk_free_server_credentials(tls->psk);
	free(tls->authz);
	free(tls);
}

/* ---- the transport ---- */

static ssize_t tls_errno(gnutls_session_t s, ssize_t r)
{
	switch (r) {
	case GNUTLS_E_INTERRUPTED:
		return -EINTR;
	case GNUTLS_E_AGAIN:
		return -EAGAIN; /* SO_SNDTIMEO or SO_RCVTIMEO ran out */
	case GNUTLS_E_PREMATURE_TERMINATION:
		return 0; /* the client hung up without close_notify: an end all the same */
	case GNUTLS_E_REHANDSHAKE:
		log_debug("TLS: the client asked for a renegotiation; refused");
		return -EPROTO;
	default:
		log_debug("TLS: %s", gnutls_strerror((int)r));
		return -EIO;
	}
}

static ssize_t tls_recv(struct nbd_transport *t, void *buf, size_t len)
{
	struct tls_session *ts = t->priv;
	ssize_t r = gnutls_record_recv(ts->s, buf, len);

	return r >= 0 ? r : tls_errno(ts->s, r);
}

static ssize_t tls_sendv(struct nbd_transport *t, const struct iovec *iov, int n)
{
	struct tls_session *ts = t->priv;
	const void *p;
	size_t len;
	ssize_t r;

	if (iov[0].iov_len >= TLS_RECORD_MAX || n == 1) {
		p = iov[0].iov_base;
		len = iov[0].iov_len;
	} else {
		/* Gather the front into one record. */
		len = 0;
		for (int i = 0; i < n && len < TLS_RECORD_MAX; i++) {
			size_t take = iov[i].iov_len < TLS_RECORD_MAX - len ? iov[i].iov_len : TLS_RECORD_MAX - len;

			memcpy(ts->stage + len, iov[i].iov_base, take);
			len += take;
		}
		p = ts->stage;
	}
	/* GnuTLS sends one record per call and says how much of LEN it took. */
	r = gnutls_record_send(ts->s, p, len);
	return r >= 0 ? r : tls_errno(ts->s, r);
}

static size_t tls_pending(struct nbd_transport *t)
{
	struct tls_session *ts = t->priv;

	/* Plaintext GnuTLS holds, and ciphertext we hold for it: poll() sees
	 * neither. */
	return gnutls_record_check_pending(ts->s) + (ts->rlen - ts->rpos);
}

/* GnuTLS's pull: from our buffer, refilled by one recv() of what the socket
 * has (a large read goes straight to GnuTLS's buffer). */
static ssize_t tls_pull(gnutls_transport_ptr_t ptr, void *data, size_t size)
{
	struct tls_session *ts = ptr;
	ssize_t r;

	if (ts->rpos == ts->rlen) {
		if (size >= sizeof(ts->rbuf)) {
			r = recv(ts->fd, data, size, 0);
			if (r < 0)
				gnutls_transport_set_errno(ts->s, errno);
			return r;
		}
		r = recv(ts->fd, ts->rbuf, sizeof(ts->rbuf), 0);
		if (r <= 0) {
			if (r < 0)
				gnutls_transport_set_errno(ts->s, errno);
			return r;
		}
		ts->rpos = 0;
		ts->rlen = (size_t)r;
	}
	r = (ssize_t)(size < ts->rlen - ts->rpos ? size : ts->rlen - ts->rpos);
	memcpy(data, ts->rbuf + ts->rpos, (size_t)r);
	ts->rpos += (size_t)r;
	return r;
}

/* Is there anything to pull within MS milliseconds? (GnuTLS's handshake
 * timeout waits through this.) 1 yes, 0 no, -1 error. */
static int tls_pull_timeout(gnutls_transport_ptr_t ptr, unsigned ms)
{
	struct tls_session *ts = ptr;
	struct pollfd pfd = { .fd = ts->fd, .events = POLLIN };
	int r;

	if (ts->rpos < ts->rlen)
		return 1;
	r = poll(&pfd, 1, ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : (int)(ms > INT32_MAX ? INT32_MAX : ms));
	if (r < 0)
		gnutls_transport_set_errno(ts->s, errno);
	return r < 0 ? -1 : r > 0;
}

static void tls_shutdown(struct nbd_transport *t, int how)
{
	shutdown(t->fd, how);
}

static void set_send_timeout(int fd, unsigned ms)
{
	struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };

	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static void tls_close(struct nbd_transport *t)
{
	struct tls_session *ts = t->priv;

	if (t->fd >= 0) {
		/* close_notify, so that the client sees an orderly end; a client
		 * that does not read cannot hold the close up for long. */
		set_send_timeout(t->fd, TLS_BYE_TIMEOUT_MS);
		gnutls_bye(ts->s, GNUTLS_SHUT_WR);
		close(t->fd);
		t->fd = -1;
	}
	gnutls_deinit(ts->s);
	free(ts);
	t->priv = NULL;
}

static const struct nbd_transport_ops tls_ops = {
	.name = "tls",
	.recv = tls_recv,
	.sendv = tls_sendv,
	.pending = tls_pending,
	.shutdown = tls_shutdown,
	.close = tls_close,
};

/* ---- the handshake ---- */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The client's certificate DN (RFC 4514) in DN; 0 or -1 (logged). */
static int peer_dn(gnutls_session_t s, const char *peer, gnutls_datum_t *dn)
{
	const gnutls_datum_t *certs;
	unsigned n = 0;
	gnutls_x509_crt_t crt;
	int r;

	certs = gnutls_certificate_get_peers(s, &n);
	if (!certs || n == 0) {
		log_warn("%s: TLS client sent no certificate", peer);
		return -1;
	}
	if (gnutls_x509_crt_init(&crt) < 0)
		return -1;
	r = gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER);
	if (r == 0)
		r = gnutls_x509_crt_get_dn3(crt, dn, 0);
	gnutls_x509_crt_deinit(crt);
	if (r < 0) {
		log_warn("%s: cannot read the TLS client's certificate: %s", peer, gnutls_strerror(r));
		return -1;
	}
	return 0;
}

/* Verification the handshake did not do, and --tls-authz. */
static int check_client(struct nbd_tls *tls, gnutls_session_t s, const char *peer)
{
	const char *who;
	gnutls_datum_t dn = { 0 };
	int ok;

	if (tls->psk) {
		who = gnutls_psk_server_get_username(s);
		if (!who)
			who = "";
		if (tls->authz && strcmp(who, tls->authz) != 0) {
			log_warn("%s: TLS PSK identity '%s' refused (--tls-authz)", peer, who);
			return -1;
		}
		log_debug("%s: TLS with PSK identity '%s'", peer, who);
		return 0;
	}
	if (!tls->verify_peer)
		return 0;
	{
		unsigned status = 0;
		int r = gnutls_certificate_verify_peers2(s, &status);

		if (r < 0 || status != 0) {
			gnutls_datum_t why = { 0 };

			if (r == 0)
				gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &why, 0);
			log_warn("%s: TLS client certificate refused: %s", peer,
				 r < 0 ? gnutls_strerror(r) : why.data ? (char *)why.data : "not trusted");
			gnutls_free(why.data);
			return -1;
		}
	}
	if (peer_dn(s, peer, &dn) < 0)
		return -1;
	ok = !tls->authz || strcmp((char *)dn.data, tls->authz) == 0;
	if (ok)
		log_debug("%s: TLS client %s", peer, (char *)dn.data);
	else
		log_warn("%s: TLS client '%s' refused (--tls-authz)", peer, (char *)dn.data);
	gnutls_free(dn.data);
	return ok ? 0 : -1;
}

int nbd_tls_start(struct nbd_tls *tls, struct nbd_transport *t, const char *peer, uint64_t deadline_ns)
{
	struct tls_session *ts = calloc(1, sizeof(*ts));
	gnutls_session_t s = NULL;
	int r;

	if (!ts || gnutls_init(&s, GNUTLS_SERVER | GNUTLS_NO_SIGNAL) < 0) {
		log_error("%s: TLS: out of memory", peer);
		free(ts);
		return -1;
	}
	r = gnutls_priority_set(s, tls->priority);
	if (r == 0 && tls->x509) {
		r = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, tls->x509);
		if (tls->verify_peer) {
			gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
			/* Verified in the handshake: a bad client gets an alert. */
			gnutls_session_set_verify_cert(s, NULL, 0);
		}
	}
	if (r == 0 && tls->psk)
		r = gnutls_credentials_set(s, GNUTLS_CRD_PSK, tls->psk);
	if (r < 0) {
		log_error("%s: TLS: %s", peer, gnutls_strerror(r));
		goto fail;
	}
	/* Sends go straight to the socket, receives through our buffer. */
	ts->s = s;
	ts->fd = t->fd;
	gnutls_transport_set_ptr2(s, ts, (gnutls_transport_ptr_t)(intptr_t)t->fd);
	gnutls_transport_set_pull_function(s, tls_pull);
	gnutls_transport_set_pull_timeout_function(s, tls_pull_timeout);
	do {
		uint64_t now = now_ns();

		if (deadline_ns && now >= deadline_ns) {
			r = GNUTLS_E_TIMEDOUT;
			break;
		}
		gnutls_handshake_set_timeout(s, deadline_ns ? (unsigned)((deadline_ns - now + 999999) / 1000000)
							    : GNUTLS_INDEFINITE_TIMEOUT);
		r = gnutls_handshake(s);
	} while (r < 0 && !gnutls_error_is_fatal(r));
	if (r < 0) {
		if (r == GNUTLS_E_TIMEDOUT)
			log_info("%s: TLS handshake timed out", peer);
		else
			log_warn("%s: TLS handshake failed: %s", peer, gnutls_strerror(r));
		/* GnuTLS leaves the alert to us: the client learns why. */
		if (r != GNUTLS_E_TIMEDOUT && r != GNUTLS_E_PUSH_ERROR && r != GNUTLS_E_PULL_ERROR)
			gnutls_alert_send_appropriate(s, r);
		goto fail;
	}
	if (check_client(tls, s, peer) < 0) {
		/* Said to the client too, rather than a bare hang-up. */
		gnutls_alert_send(s, GNUTLS_AL_FATAL, GNUTLS_A_ACCESS_DENIED);
		goto fail;
	}
	{
		char *desc = gnutls_session_get_desc(s);

		log_debug("%s: TLS session %s", peer, desc ? desc : "");
		gnutls_free(desc);
	}
	t->ops = &tls_ops;
	t->priv = ts;
	return 0;
fail:
	gnutls_deinit(s);
	free(ts);
	return -1;
}

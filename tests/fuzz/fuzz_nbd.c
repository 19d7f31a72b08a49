/* libFuzzer harness for the NBD server: the bytes are what a client sends.
 *
 * Built three times: fuzz_nbd_handshake feeds the input from the first byte on (client
 * flags, options); fuzz_nbd_tls does the same on a --tls require connection
 * (the plaintext phase, STARTTLS, and GnuTLS's handshake on what follows,
 * with a self-signed certificate made at start-up); fuzz_nbd_requests puts a canned handshake in front (fixed
 * newstyle, STRUCTURED_REPLY or EXTENDED_HEADERS as the first input byte picks,
 * SET_META_CONTEXT base:allocation, GO "disk"), so the input is transmission
 * requests. The server runs for real on one end of a socketpair, against a 1 MiB
 * device in a memfd; a thread writes the input and drains the replies. */
#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "core/device.h"
#include "nbd/nbd_internal.h"
#include "nbd/nbd_proto.h"
#ifdef FUZZ_TLS
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include "nbd/nbd_tls.h"
#endif

static struct nbd_server *srv;
static struct device *dev;

struct feed {
	int fd;
	const uint8_t *data;
	size_t len;
};

static void *feeder(void *arg)
{
	struct feed *f = arg;
	char sink[65536];
	size_t off = 0;

	/* Alternate: write what fits, read what came back, so neither side blocks. */
	while (off < f->len) {
		ssize_t w = send(f->fd, f->data + off, f->len - off, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (w > 0)
			off += (size_t)w;
		else if (w < 0 && errno != EAGAIN)
			break;
		while (recv(f->fd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
			;
	}
	shutdown(f->fd, SHUT_WR);
	while (recv(f->fd, sink, sizeof(sink), 0) > 0)
		;
	return NULL;
}

#ifdef FUZZ_REQUESTS
static size_t put_opt(uint8_t *p, uint32_t opt, const void *data, uint32_t len)
{
	uint64_t magic = htobe64(NBD_IHAVEOPT);
	uint32_t o = htobe32(opt), l = htobe32(len);

	memcpy(p, &magic, 8);
	memcpy(p + 8, &o, 4);
	memcpy(p + 12, &l, 4);
	if (len)
		memcpy(p + 16, data, len);
	return 16 + len;
}

static size_t canned_handshake(uint8_t *p, uint8_t mode)
{
	uint32_t cflags = htobe32(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	static const uint8_t meta[] = { 0, 0, 0, 4, 'd', 'i', 's', 'k', 0, 0, 0, 1,
					0, 0, 0, 15, 'b', 'a', 's', 'e', ':', 'a', 'l', 'l',
					'o', 'c', 'a', 't', 'i', 'o', 'n' };
	static const uint8_t go[] = { 0, 0, 0, 4, 'd', 'i', 's', 'k', 0, 1, 0, 3 };
	size_t n = 0;

	memcpy(p, &cflags, 4);
	n += 4;
	if (mode % 3 == 1)
		n += put_opt(p + n, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	else if (mode % 3 == 2)
		n += put_opt(p + n, NBD_OPT_EXTENDED_HEADERS, NULL, 0);
	if (mode % 3)
		n += put_opt(p + n, NBD_OPT_SET_META_CONTEXT, meta, sizeof(meta));
	n += put_opt(p + n, NBD_OPT_GO, go, sizeof(go));
	return n;
}

#endif

#ifdef FUZZ_TLS
static void write_pem(const char *dir, const char *name, const gnutls_datum_t *d)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	if (!f || fwrite(d->data, 1, d->size, f) != d->size || fclose(f) != 0)
		abort();
}

/* A self-signed server certificate in a fresh directory, QEMU's layout. */
static struct nbd_tls *make_tls(void)
{
	static char dir[] = "/tmp/fuzz-nbd-tls.XXXXXX";
	gnutls_x509_privkey_t key;
	gnutls_x509_crt_t crt;
	gnutls_datum_t pem;
	struct nbd_tls *tls;
	char err[256];
	time_t now = time(NULL);
	struct nbd_tls_config cfg = { .creds_dir = dir };

	if (!mkdtemp(dir) || gnutls_x509_privkey_init(&key) < 0 ||
	    gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0) < 0 ||
	    gnutls_x509_crt_init(&crt) < 0 || gnutls_x509_crt_set_version(crt, 3) < 0 ||
	    gnutls_x509_crt_set_serial(crt, "\x01", 1) < 0 || gnutls_x509_crt_set_activation_time(crt, now - 60) < 0 ||
	    gnutls_x509_crt_set_expiration_time(crt, now + 86400) < 0 ||
	    gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, "localhost", 9) < 0 ||
	    gnutls_x509_crt_set_key(crt, key) < 0 || gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0) < 0)
		abort();
	if (gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_PEM, &pem) < 0)
		abort();
	write_pem(dir, "server-key.pem", &pem);
	gnutls_free(pem.data);
	if (gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &pem) < 0)
		abort();
	write_pem(dir, "server-cert.pem", &pem);
	write_pem(dir, "ca-cert.pem", &pem);
	gnutls_free(pem.data);
	gnutls_x509_crt_deinit(crt);
	gnutls_x509_privkey_deinit(key);
	if (nbd_tls_new(&cfg, &tls, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		abort();
	}
	return tls;
}
#endif

static void setup_once(void)
{
	struct nbd_server_config cfg = { .threads = 1, .handshake_timeout_ms = 0 };
	char path[64];
	int fd;

	log_set_level(LOG_LEVEL_ERROR);
#ifdef FUZZ_TLS
	cfg.tls = make_tls();
#endif
	fd = memfd_create("fuzz-disk", 0);
	if (fd < 0 || ftruncate(fd, 1 << 20) < 0)
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if (device_open("disk", path, false, &dev) < 0 || nbd_server_new(&cfg, &srv) < 0 ||
	    nbd_server_add_export(srv, dev, "disk", "fuzz", false) < 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct nbd_conn *c;
	struct feed f;
	pthread_t t;
	uint8_t *buf;
	size_t n = 0;
	int sv[2];

	if (!srv)
		setup_once();
	buf = malloc(size + 256);
	if (!buf)
		return 0;
#ifdef FUZZ_REQUESTS
	if (size == 0) {
		free(buf);
		return 0;
	}
	n = canned_handshake(buf, data[0]);
	data++;
	size--;
#endif
	memcpy(buf + n, data, size);
	n += size;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		abort();
	f = (struct feed){ .fd = sv[1], .data = buf, .len = n };
	pthread_create(&t, NULL, feeder, &f);

	c = nbd_conn_new(srv, sv[0]); /* closes sv[0] when freed */
	if (!c)
		abort();
	strcpy(c->peer, "fuzz");
#ifdef FUZZ_TLS
	c->tls_mode = NBD_TLS_REQUIRE;
#endif
	if (nbd_handshake(c) == 0)
		nbd_transmission(c);
	conn_shutdown(c, SHUT_RDWR);
	pthread_join(t, NULL);
	nbd_conn_free(c);
	close(sv[1]);
	free(buf);
	return 0;
}

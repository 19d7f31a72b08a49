/* The S3 backend of the object store (store.h): store_s3_open and the
 * operations behind it. This file owns everything S3: parsing
 * "s3://BUCKET/PREFIX", reading the AWS configuration the way the AWS tools
 * do (environment, then the shared credentials and config files of the
 * profile), making each request with libcurl signed with AWS Signature V4,
 * retrying what may pass on a second try, turning S3's answers into one
 * message and a negative errno, reading ListObjectsV2's XML, and the
 * repository lock kept as objects under PREFIX/locks/.
 *
 * Why libcurl and not libs3: Debian's libs3 is version 2.0, which signs only
 * with AWS Signature V2, and current S3 services reject V2 (AWS regions opened
 * since 2014 never took it, and it is being turned off everywhere else).
 *
 * What curl 7.88's SigV4 (CURLOPT_AWS_SIGV4, lib/http_aws_sigv4.c) does and
 * does not, and what this file does about it:
 * - It adds no x-amz-content-sha256 header (curl 8.0 adds one, with
 *   UNSIGNED-PAYLOAD). Without the header it signs the SHA-256 of
 *   CURLOPT_POSTFIELDS, that is of nothing for an upload from a read
 *   callback, and S3 refuses any SigV4 request that lacks the header. When
 *   the header is there curl signs its value as the payload's hash. So every
 *   request sends it: the SHA-256 of its body (gnutls_hash_fast), which S3
 *   then checks against the bytes it receives.
 * - It puts the query string into the canonical request as it is given, not
 *   sorted nor re-encoded (curl 8 sorts it): our queries are built with their
 *   parameters in sorted order and each value encoded as SigV4 wants.
 * - The path likewise: keys are limited to characters that need no encoding.
 * - Every header of CURLOPT_HTTPHEADER is signed, even "Name:" which only
 *   tells curl not to send one of its own: so this file never removes a
 *   header that way (a signed header not sent is a signature S3 rejects).
 *
 * Requests: one CURL easy handle per call, so any number of threads may call
 * at once; a CURLSH shares DNS answers, TLS sessions and the connections.
 *
 * The lock (store.h's semantics): an object PREFIX/locks/<random id> holding
 * {"mode", "host", "pid", "time"}. To take it: list locks/, refuse if a live
 * lock conflicts, put ours, list again, and if a conflicting lock appeared
 * meanwhile withdraw ours. Both of two racing lockers may withdraw; never
 * may both keep theirs (S3 lists what was written before the list began, so
 * of two puts at least one is seen by the other's second list). One that
 * withdrew pauses a random 0.1 to 0.5 s (times its attempt) and starts
 * again, three attempts in all, so that one of two racers mostly gets it;
 * a live lock seen in the first list is a refusal at once. "The lower id
 * wins" was not chosen: a locker whose second list saw nothing keeps its
 * lock, and a later one with a lower id would think it won too.
 * A background thread rewrites ours every 5 minutes; one whose time is older
 * than 30 minutes (by the writer's clock: hosts are assumed to agree within
 * minutes) is stale, ignored, and reported once. */
#include <errno.h>
#include <signal.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <json-c/json.h>

#include "backup/store.h"
#include "backup/util.h"
#include "common/base64.h"

#define S3_DEFAULT_REGION "us-east-1"
#define S3_ERROR_BODY_MAX (64u << 10) /* of an error answer, kept for its XML */
#define S3_LOCKS "locks/"
#define S3_LOCK_ATTEMPTS 3 /* of a locker that raced another */

struct s3_store {
	struct store base;
	char *bucket;
	char *prefix;   /* "" or "a/b/": what every key is stored under */
	char *base_url; /* up to the bucket: objects are base_url + "/" + key */
	bool path_style;
	char *access_key, *secret_key, *token;
	char *sigv4; /* "aws:amz:REGION:s3" */
	char *user_agent;
	CURLSH *share;
	pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];

	/* Tunables (BDFILTER_S3_*), for tests mostly. */
	long connect_timeout; /* s */
	long stall_timeout;   /* s below 1 byte/s before a transfer fails */
	int tries;
	double retry_delay; /* s, doubled at each try */
	double lock_stale;  /* s */
	double lock_refresh;

	/* The lock we hold, if any; the refresher reads it under lock_mutex. */
	pthread_mutex_t lock_mutex;
	pthread_cond_t lock_cond;
	pthread_t refresher;
	bool refresher_running, refresher_stop;
	char *lock_key; /* "locks/<id>" */
	enum store_lock_mode lock_mode;
	/* Stale locks already reported, so each is reported once. */
	char **stale_seen;
	size_t n_stale_seen;
};

static const char *mode_name(enum store_lock_mode m)
{
	switch (m) {
	case STORE_LOCK_READ: return "read";
	case STORE_LOCK_APPEND: return "append";
	case STORE_LOCK_PRUNE: return "prune";
	}
	return "?";
}

/* ---- Small helpers ---- */

static void hex(const uint8_t *b, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[b[i] >> 4];
		out[2 * i + 1] = digits[b[i] & 15];
	}
	out[2 * n] = '\0';
}

/* Percent-encoding as SigV4 wants it: all but A-Za-z0-9-_.~, as %XX. */
static char *uri_encode(const char *s)
{
	size_t n = strlen(s);
	char *out = malloc(3 * n + 1), *o = out;

	if (!out)
		return NULL;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '_' || c == '.' || c == '~') {
			*o++ = (char)c;
		} else {
			o += sprintf(o, "%%%02X", c);
		}
	}
	*o = '\0';
	return out;
}

/* Keys go into the URL's path as they are (curl signs the path as given):
 * only store.h's characters, so that none needs encoding. */
static bool s3_key_ok(const char *key)
{
	if (!key || !*key || key[0] == '/' || key[0] == '.' || strstr(key, ".."))
		return false;
	for (const char *p = key; *p; p++) {
		char c = *p;

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-' || c == '/'))
			return false;
	}
	return true;
}

/* A positive number from the environment variable NAME, else DEF; -1 if
 * it is set but is not one (message printed). */
static double env_number(const char *url, const char *name, double def)
{
	const char *v = getenv(name);
	char *end;
	double d;

	if (!v || !*v)
		return def;
	d = strtod(v, &end);
	if (*end || !(d > 0) || d > 1e9) {
		bk_error("%s: %s=%s is not a positive number", url, name, v);
		return -1;
	}
	return d;
}

static double now_real(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- AWS configuration: shared credentials and config files ---- */

/* "~/x" with $HOME. */
static char *expand_home(const char *path)
{
	const char *home = getenv("HOME");

	if (path[0] == '~' && path[1] == '/' && home)
		return bk_format("%s%s", home, path + 1);
	return strdup(path);
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
		*--e = '\0';
	return s;
}

/* The value of KEY in [SECTION] of the INI file PATH (the AWS layout: a
 * key whose value is empty opens a sub-section of the indented lines after
 * it, as in "s3 =\n  endpoint_url = ..."; SUB names one, NULL for the
 * section's own keys). A new string, or NULL if absent. */
static char *ini_get(const char *path, const char *section, const char *sub, const char *key)
{
	FILE *f = fopen(path, "re");
	char line[4096];
	bool in_section = false;
	char cur_sub[128] = "";
	char *found = NULL;

	if (!f)
		return NULL;
	while (!found && fgets(line, sizeof(line), f)) {
		bool indented = line[0] == ' ' || line[0] == '\t';
		char *l = trim(line), *eq;

		if (!*l || *l == '#' || *l == ';')
			continue;
		if (*l == '[') {
			char *close = strchr(l, ']');

			if (close) {
				*close = '\0';
				in_section = !strcmp(trim(l + 1), section);
			}
			cur_sub[0] = '\0';
			continue;
		}
		if (!in_section || !(eq = strchr(l, '=')))
			continue;
		*eq = '\0';
		char *k = trim(l), *v = trim(eq + 1);

		if (!indented)
			cur_sub[0] = '\0';
		if (!indented && !*v) {
			snprintf(cur_sub, sizeof(cur_sub), "%s", k);
			continue;
		}
		if (strcmp(k, key))
			continue;
		if (sub ? (indented && !strcmp(cur_sub, sub)) : !cur_sub[0])
			found = strdup(v);
	}
	fclose(f);
	return found;
}

static char *env_dup(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? strdup(v) : NULL;
}

struct aws_conf {
	char *access, *secret, *token, *region, *endpoint;
	char *profile, *cred_file, *config_file, *config_section;
};

static void aws_conf_free(struct aws_conf *c)
{
	free(c->access);
	free(c->secret);
	free(c->token);
	free(c->region);
	free(c->endpoint);
	free(c->profile);
	free(c->cred_file);
	free(c->config_file);
	free(c->config_section);
}

/* The configuration as the AWS CLI and SDKs read it. -ENOMEM or 0. */
static int aws_conf_read(struct aws_conf *c)
{
	const char *v;

	memset(c, 0, sizeof(*c));
	c->profile = env_dup("AWS_PROFILE");
	if (!c->profile)
		c->profile = strdup("default");
	v = getenv("AWS_SHARED_CREDENTIALS_FILE");
	c->cred_file = expand_home(v && *v ? v : "~/.aws/credentials");
	v = getenv("AWS_CONFIG_FILE");
	c->config_file = expand_home(v && *v ? v : "~/.aws/config");
	if (!c->profile || !c->cred_file || !c->config_file)
		return -ENOMEM;
	c->config_section = !strcmp(c->profile, "default") ? strdup("default")
							   : bk_format("profile %s", c->profile);
	if (!c->config_section)
		return -ENOMEM;

	/* Keys: the environment (both), else the credentials file, else the
	 * config file; the token comes with the keys it belongs to. */
	c->access = env_dup("AWS_ACCESS_KEY_ID");
	c->secret = env_dup("AWS_SECRET_ACCESS_KEY");
	if (c->access && c->secret) {
		c->token = env_dup("AWS_SESSION_TOKEN");
	} else {
		free(c->access);
		free(c->secret);
		c->access = ini_get(c->cred_file, c->profile, NULL, "aws_access_key_id");
		c->secret = ini_get(c->cred_file, c->profile, NULL, "aws_secret_access_key");
		c->token = ini_get(c->cred_file, c->profile, NULL, "aws_session_token");
		if (!c->access || !c->secret) {
			free(c->access);
			free(c->secret);
			free(c->token);
			c->access = ini_get(c->config_file, c->config_section, NULL, "aws_access_key_id");
			c->secret = ini_get(c->config_file, c->config_section, NULL, "aws_secret_access_key");
			c->token = ini_get(c->config_file, c->config_section, NULL, "aws_session_token");
		}
	}

	c->region = env_dup("AWS_REGION");
	if (!c->region)
		c->region = env_dup("AWS_DEFAULT_REGION");
	if (!c->region)
		c->region = ini_get(c->config_file, c->config_section, NULL, "region");
	if (!c->region)
		c->region = strdup(S3_DEFAULT_REGION);

	c->endpoint = env_dup("AWS_ENDPOINT_URL_S3");
	if (!c->endpoint)
		c->endpoint = env_dup("AWS_ENDPOINT_URL");
	if (!c->endpoint)
		c->endpoint = ini_get(c->config_file, c->config_section, "s3", "endpoint_url");
	if (!c->endpoint)
		c->endpoint = ini_get(c->config_file, c->config_section, NULL, "endpoint_url");
	return c->region ? 0 : -ENOMEM;
}

/* ---- One request ---- */

struct s3_io {
	CURL *h;
	/* The answer's body: into FIXED (get_range) when the status is 200 or
	 * 206, else into a growing buffer (an error answer's: at most
	 * S3_ERROR_BODY_MAX of it). */
	char *fixed;
	size_t fixed_len, fixed_got;
	uint64_t skip0, skip; /* of a 200 answer to a Range request: the offset */
	char *buf;
	size_t len, cap;
	bool oom;
	/* The request's body. */
	const char *up;
	size_t up_len, up_off;
};

static size_t io_write(char *data, size_t size, size_t nmemb, void *opaque)
{
	struct s3_io *io = opaque;
	size_t n = size * nmemb;
	long status = 0;

	curl_easy_getinfo(io->h, CURLINFO_RESPONSE_CODE, &status);
	if (io->fixed && (status == 200 || status == 206)) {
		size_t d = n;
		const char *p = data;

		if (status == 200 && io->skip) {
			uint64_t k = io->skip < d ? io->skip : d;

			io->skip -= k;
			p += k;
			d -= (size_t)k;
		}
		if (d > io->fixed_len - io->fixed_got)
			d = io->fixed_len - io->fixed_got;
		memcpy(io->fixed + io->fixed_got, p, d);
		io->fixed_got += d;
		return n;
	}
	if (status < 200 || status > 299) {
		if (io->len >= S3_ERROR_BODY_MAX)
			return n;
		if (n > S3_ERROR_BODY_MAX - io->len)
			n = S3_ERROR_BODY_MAX - io->len;
	}
	if (io->len + n + 1 > io->cap) {
		size_t cap = io->cap ? io->cap : 16384;
		char *b;

		while (cap < io->len + n + 1)
			cap *= 2;
		b = realloc(io->buf, cap);
		if (!b) {
			io->oom = true;
			return 0;
		}
		io->buf = b;
		io->cap = cap;
	}
	memcpy(io->buf + io->len, data, n);
	io->len += n;
	io->buf[io->len] = '\0';
	return size * nmemb;
}

static size_t io_read(char *dst, size_t size, size_t nmemb, void *opaque)
{
	struct s3_io *io = opaque;
	size_t n = size * nmemb, left = io->up_len - io->up_off;

	if (n > left)
		n = left;
	memcpy(dst, io->up + io->up_off, n);
	io->up_off += n;
	return n;
}

static int io_seek(void *opaque, curl_off_t offset, int origin)
{
	struct s3_io *io = opaque;

	if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > io->up_len)
		return CURL_SEEKFUNC_FAIL;
	io->up_off = (size_t)offset;
	return CURL_SEEKFUNC_OK;
}

/* Forget the answer of a try, before the next. */
static void io_reset(struct s3_io *io)
{
	io->len = 0;
	if (io->buf)
		io->buf[0] = '\0';
	io->fixed_got = 0;
	io->skip = io->skip0;
	io->up_off = 0;
	io->oom = false;
}

/* ---- XML: just what S3's answers need ---- */

/* Entity-decoded copy of [P, P+N): a new string, NULL if it is not valid
 * XML text (an unknown or broken entity) or out of memory. */
static char *xml_decode(const char *p, size_t n)
{
	char *out = malloc(n + 1), *o = out;
	const char *end = p + n;

	if (!out)
		return NULL;
	while (p < end) {
		const char *semi;

		if (*p != '&') {
			*o++ = *p++;
			continue;
		}
		semi = memchr(p, ';', (size_t)(end - p));
		if (!semi)
			goto bad;
		size_t en = (size_t)(semi - p - 1);
		const char *e = p + 1;

		if (en == 2 && !memcmp(e, "lt", 2)) {
			*o++ = '<';
		} else if (en == 2 && !memcmp(e, "gt", 2)) {
			*o++ = '>';
		} else if (en == 3 && !memcmp(e, "amp", 3)) {
			*o++ = '&';
		} else if (en == 4 && !memcmp(e, "quot", 4)) {
			*o++ = '"';
		} else if (en == 4 && !memcmp(e, "apos", 4)) {
			*o++ = '\'';
		} else if (en >= 2 && e[0] == '#') {
			unsigned long cp = 0;
			bool x = e[1] == 'x' || e[1] == 'X';
			const char *d = e + (x ? 2 : 1);

			if (d == semi)
				goto bad;
			for (; d < semi; d++) {
				int v;

				if (*d >= '0' && *d <= '9')
					v = *d - '0';
				else if (x && *d >= 'a' && *d <= 'f')
					v = *d - 'a' + 10;
				else if (x && *d >= 'A' && *d <= 'F')
					v = *d - 'A' + 10;
				else
					goto bad;
				cp = cp * (x ? 16 : 10) + (unsigned long)v;
				if (cp > 0x10ffff)
					goto bad;
			}
			if (cp == 0)
				goto bad;
			/* UTF-8; 5 bytes of the entity at least, 4 of output at most. */
			if (cp < 0x80) {
				*o++ = (char)cp;
			} else if (cp < 0x800) {
				*o++ = (char)(0xc0 | (cp >> 6));
				*o++ = (char)(0x80 | (cp & 0x3f));
			} else if (cp < 0x10000) {
				*o++ = (char)(0xe0 | (cp >> 12));
				*o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
				*o++ = (char)(0x80 | (cp & 0x3f));
			} else {
				*o++ = (char)(0xf0 | (cp >> 18));
				*o++ = (char)(0x80 | ((cp >> 12) & 0x3f));
				*o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
				*o++ = (char)(0x80 | (cp & 0x3f));
			}
		} else {
			goto bad;
		}
		p = semi + 1;
	}
	*o = '\0';
	return out;
bad:
	free(out);
	return NULL;
}

/* The first element TAG in [P, END): its text in *TEXT (new string, decoded)
 * and where it ends in *AFTER. 1 found, 0 absent, -EINVAL broken, -ENOMEM.
 * Text in XML never holds a raw '<', so a search for "<Tag>" cannot land
 * inside a key. */
static int xml_elem(const char *p, const char *end, const char *tag, char **text, const char **after)
{
	char open[64], close[64];
	size_t ol, cl, tl = strlen(tag);
	const char *s, *e;

	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	ol = strlen(open);
	cl = strlen(close);
	for (s = p; s < end; s++) {
		s = memchr(s, '<', (size_t)(end - s));
		if (!s)
			return 0;
		if ((size_t)(end - s) >= ol && !memcmp(s, open, ol))
			break;
		/* <Tag/>: empty. */
		if ((size_t)(end - s) >= tl + 3 && !memcmp(s + 1, tag, tl) && !memcmp(s + 1 + tl, "/>", 2)) {
			*text = strdup("");
			if (after)
				*after = s + tl + 3;
			return *text ? 1 : -ENOMEM;
		}
	}
	if (s >= end)
		return 0;
	s += ol;
	for (e = s; e < end; e++) {
		e = memchr(e, '<', (size_t)(end - e));
		if (!e)
			return -EINVAL;
		if ((size_t)(end - e) >= cl && !memcmp(e, close, cl))
			break;
		if (!((size_t)(end - e) >= 9 && !memcmp(e, "<![CDATA[", 9)))
			return -EINVAL; /* S3's text elements hold no elements */
		const char *ce = memmem(e, (size_t)(end - e), "]]>", 3);

		if (!ce)
			return -EINVAL;
		e = ce + 2;
	}
	if (e >= end)
		return -EINVAL;
	if (memmem(s, (size_t)(e - s), "<![CDATA[", 9)) {
		/* Rare (S3 does not send it): the CDATA's text as it is. */
		const char *cs = memmem(s, (size_t)(e - s), "<![CDATA[", 9) + 9;
		const char *ce = memmem(cs, (size_t)(e - cs), "]]>", 3);

		*text = ce ? strndup(cs, (size_t)(ce - cs)) : NULL;
	} else {
		*text = xml_decode(s, (size_t)(e - s));
		if (!*text)
			return -EINVAL;
	}
	if (!*text)
		return -ENOMEM;
	if (after)
		*after = e + cl;
	return 1;
}

/* Does the answer look like XML whose root element is ROOT? */
static bool xml_root_is(const char *body, size_t len, const char *root)
{
	const char *p = body, *end = body + len;
	size_t rl = strlen(root);

	while (p < end) {
		while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
			p++;
		if (end - p >= 2 && p[0] == '<' && (p[1] == '?' || p[1] == '!')) {
			const char *gt = memchr(p, '>', (size_t)(end - p));

			if (!gt)
				return false;
			p = gt + 1;
			continue;
		}
		break;
	}
	return (size_t)(end - p) > rl + 1 && p[0] == '<' && !memcmp(p + 1, root, rl) &&
	       (p[1 + rl] == '>' || p[1 + rl] == ' ' || p[1 + rl] == '\n' || p[1 + rl] == '\r' ||
		p[1 + rl] == '\t');
}

/* ---- Requests, retries and what their answers mean ---- */

enum {
	S3_F_OPEN = 1,      /* the check at open: NoSuchBucket is -ENOENT */
	S3_F_RANGE_416 = 2, /* 416 is -ERANGE, not printed */
	S3_F_404_OK = 4,    /* DELETE: an absent object is done */
	S3_F_404_ERR = 8,   /* PUT, LIST: a 404 is no absent object but an error */
};

static bool retryable_status(long st)
{
	return st == 500 || st == 502 || st == 503 || st == 504;
}

static bool retryable_curl(CURLcode rc)
{
	switch (rc) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_SEND_FAIL_REWIND:
		return true;
	default:
		return false;
	}
}

/* The answer is not HTTP at all. */
static bool garbage_curl(CURLcode rc)
{
	return rc == CURLE_WEIRD_SERVER_REPLY || rc == CURLE_UNSUPPORTED_PROTOCOL ||
	       rc == CURLE_BAD_CONTENT_ENCODING;
}

/* Sleep before try number TRY (2, 3, ...): RETRY_DELAY doubled each time,
 * times a random factor in [0.5, 1.5) so that threads do not retry in step. */
static void backoff(struct s3_store *s, int try)
{
	uint32_t r = 0;
	double d = s->retry_delay;
	struct timespec ts;

	for (int i = 2; i < try; i++)
		d *= 2;
	gnutls_rnd(GNUTLS_RND_NONCE, &r, sizeof(r));
	d *= 0.5 + (double)r / 4294967296.0;
	ts.tv_sec = (time_t)d;
	ts.tv_nsec = (long)((d - (double)ts.tv_sec) * 1e9);
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* "Code: Message" of an S3 error answer, or NULL if it is not one. */
static char *s3_error_text(const char *body, size_t len, char **code_out)
{
	char *code = NULL, *msg = NULL, *r;

	if (!body || !xml_root_is(body, len, "Error"))
		return NULL;
	if (xml_elem(body, body + len, "Code", &code, NULL) != 1)
		return NULL;
	if (xml_elem(body, body + len, "Message", &msg, NULL) != 1)
		msg = NULL;
	r = msg && *msg ? bk_format("%s: %s", code, msg) : bk_format("%s", code);
	free(msg);
	if (code_out)
		*code_out = code;
	else
		free(code);
	return r;
}

struct s3_req {
	const char *method; /* "GET", "PUT", "DELETE" */
	const char *url;
	const char *what;   /* for messages: "GET packs/3f/3f8a" */
	const char *range;  /* "bytes=A-B" or NULL */
	const void *body;   /* PUT */
	size_t body_len;
	int flags;
};

static struct curl_slist *add_header(struct curl_slist *l, bool *oom, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static struct curl_slist *add_header(struct curl_slist *l, bool *oom, const char *fmt, ...)
{
	va_list ap;
	char *h;
	struct curl_slist *n;

	va_start(ap, fmt);
	h = bk_vformat(fmt, ap);
	va_end(ap);
	if (!h) {
		*oom = true;
		return l;
	}
	n = curl_slist_append(l, h);
	free(h);
	if (!n)
		*oom = true;
	return n ? n : l;
}

/* The request's headers: the payload's SHA-256 (curl 7.88 signs it but
 * does not send it: see the top), its MD5 for S3 to check the bytes, the
 * session token, the range. */
static struct curl_slist *req_headers(struct s3_store *s, const struct s3_req *r)
{
	struct curl_slist *l = NULL;
	bool oom = false;
	char sha[65];
	uint8_t d[32];

	if (gnutls_hash_fast(GNUTLS_DIG_SHA256, r->body ? r->body : "", r->body ? r->body_len : 0, d) < 0)
		return NULL;
	hex(d, 32, sha);
	if (r->body) {
		uint8_t m[16];
		char *md5;

		if (gnutls_hash_fast(GNUTLS_DIG_MD5, r->body, r->body_len, m) >= 0) {
			md5 = base64_encode(m, sizeof(m));
			if (!md5)
				oom = true;
			else
				l = add_header(l, &oom, "Content-MD5: %s", md5);
			free(md5);
		}
		l = add_header(l, &oom, "Content-Type: application/octet-stream");
	}
	l = add_header(l, &oom, "x-amz-content-sha256: %s", sha);
	if (s->token)
		l = add_header(l, &oom, "x-amz-security-token: %s", s->token);
	if (r->range)
		l = add_header(l, &oom, "Range: %s", r->range);
	if (oom) {
		curl_slist_free_all(l);
		return NULL;
	}
	return l;
}

/* Make the request R, with retries. 0 for a 2xx answer (its body in IO);
 * otherwise the error printed (but for an absent object: -ENOENT, silent)
 * and a negative errno returned. */
static int s3_call(struct s3_store *s, const struct s3_req *r, struct s3_io *io, long *status_out)
{
	struct curl_slist *headers = req_headers(s, r);
	char errbuf[CURL_ERROR_SIZE];
	CURLcode rc = CURLE_OK;
	long status = 0;
	int try, ret;

	if (!headers) {
		bk_error("%s: %s: out of memory", s->base.url, r->what);
		return -ENOMEM;
	}
	for (try = 1; try <= s->tries; try++) {
		CURL *h;

		if (try > 1)
			backoff(s, try);
		h = curl_easy_init();
		if (!h) {
			curl_slist_free_all(headers);
			bk_error("%s: %s: out of memory", s->base.url, r->what);
			return -ENOMEM;
		}
		io_reset(io);
		io->h = h;
		errbuf[0] = '\0';
		curl_easy_setopt(h, CURLOPT_URL, r->url);
		curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
		curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(h, CURLOPT_SHARE, s->share);
		curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
		curl_easy_setopt(h, CURLOPT_USERAGENT, s->user_agent);
		curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, s->connect_timeout);
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, s->stall_timeout);
		curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s->sigv4);
		curl_easy_setopt(h, CURLOPT_USERNAME, s->access_key);
		curl_easy_setopt(h, CURLOPT_PASSWORD, s->secret_key);
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
		curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, io_write);
		curl_easy_setopt(h, CURLOPT_WRITEDATA, io);
		if (!strcmp(r->method, "PUT")) {
			io->up = r->body;
			io->up_len = r->body_len;
			curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
			curl_easy_setopt(h, CURLOPT_READFUNCTION, io_read);
			curl_easy_setopt(h, CURLOPT_READDATA, io);
			curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, io_seek);
			curl_easy_setopt(h, CURLOPT_SEEKDATA, io);
			curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
		} else if (strcmp(r->method, "GET")) {
			curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, r->method);
		}
		rc = curl_easy_perform(h);
		status = 0;
		if (rc == CURLE_OK)
			curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
		curl_easy_cleanup(h);
		io->h = NULL;
		if (io->oom) {
			curl_slist_free_all(headers);
			bk_error("%s: %s: out of memory", s->base.url, r->what);
			return -ENOMEM;
		}
		if (rc == CURLE_OK ? !retryable_status(status) : !retryable_curl(rc))
			break;
	}
	curl_slist_free_all(headers);
	if (try > s->tries)
		try = s->tries;
	if (status_out)
		*status_out = status;

	if (rc != CURLE_OK) {
		const char *why = errbuf[0] ? errbuf : curl_easy_strerror(rc);

		if (garbage_curl(rc))
			bk_error("%s: %s: the server's answer is not HTTP (%s)", s->base.url, r->what, why);
		else if (try > 1)
			bk_error("%s: %s: %s (%d tries)", s->base.url, r->what, why, try);
		else
			bk_error("%s: %s: %s", s->base.url, r->what, why);
		return rc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -EIO;
	}
	if (status >= 200 && status <= 299)
		return 0;

	char *code = NULL, *text = s3_error_text(io->buf, io->len, &code);

	if (status == 404 && code && !strcmp(code, "NoSuchBucket")) {
		bk_error("%s: no such bucket (%s)", s->base.url, s->bucket);
		ret = r->flags & S3_F_OPEN ? -ENOENT : -EIO;
	} else if (status == 404 && !(r->flags & S3_F_404_ERR)) {
		ret = r->flags & S3_F_404_OK ? 0 : -ENOENT;
	} else if (status == 416 && (r->flags & S3_F_RANGE_416)) {
		ret = -ERANGE;
	} else if (status == 403) {
		bk_error("%s: access denied (%s)", s->base.url, text ? text : "HTTP 403, not an S3 answer");
		ret = -EACCES;
	} else if (!text) {
		if (retryable_status(status) && try > 1)
			bk_error("%s: %s: HTTP %ld, not an S3 answer, after %d tries", s->base.url, r->what, status, try);
		else
			bk_error("%s: %s: HTTP %ld, not an S3 answer", s->base.url, r->what, status);
		ret = -EIO;
	} else if (retryable_status(status) && try > 1) {
		bk_error("%s: %s: HTTP %ld (%s) after %d tries", s->base.url, r->what, status, text, try);
		ret = -EIO;
	} else {
		bk_error("%s: %s: HTTP %ld (%s)", s->base.url, r->what, status, text);
		ret = -EIO;
	}
	free(code);
	free(text);
	return ret;
}

/* ---- The operations ---- */

static char *object_url(struct s3_store *s, const char *key)
{
	return bk_format("%s/%s%s", s->base_url, s->prefix, key);
}

static int check_key(struct s3_store *s, const char *key)
{
	if (s3_key_ok(key))
		return 0;
	bk_error("%s: invalid object key '%s'", s->base.url, key ? key : "");
	return -EINVAL;
}

static int s3_get(struct store *st, const char *key, void **buf, size_t *len)
{
	struct s3_store *s = (struct s3_store *)st;
	struct s3_io io = {0};
	char *url, *what;
	int ret;

	if ((ret = check_key(s, key)))
		return ret;
	url = object_url(s, key);
	what = bk_format("GET %s", key);
	if (!url || !what) {
		ret = -ENOMEM;
		goto out;
	}
	ret = s3_call(s, &(struct s3_req){.method = "GET", .url = url, .what = what}, &io, NULL);
	if (!ret) {
		if (!io.buf) {
			io.buf = malloc(1);
			if (!io.buf) {
				ret = -ENOMEM;
				goto out;
			}
		}
		*buf = io.buf;
		*len = io.len;
		io.buf = NULL;
	}
out:
	free(io.buf);
	free(url);
	free(what);
	return ret;
}

static int s3_get_range(struct store *st, const char *key, uint64_t offset, size_t len, void *buf)
{
	struct s3_store *s = (struct s3_store *)st;
	struct s3_io io = {.fixed = buf, .fixed_len = len, .skip0 = offset};
	char *url = NULL, *what = NULL, *range = NULL;
	long status = 0;
	int ret;

	if ((ret = check_key(s, key)))
		return ret;
	if (len == 0)
		return 0;
	if (offset > UINT64_MAX - len) {
		bk_error("%s: %s: range out of bounds", s->base.url, key);
		return -EINVAL;
	}
	url = object_url(s, key);
	what = bk_format("GET %s", key);
	range = bk_format("bytes=%" PRIu64 "-%" PRIu64, offset, offset + len - 1);
	if (!url || !what || !range) {
		ret = -ENOMEM;
		goto out;
	}
	ret = s3_call(s, &(struct s3_req){.method = "GET", .url = url, .what = what, .range = range,
					  .flags = S3_F_RANGE_416},
		      &io, &status);
	if (ret == -ERANGE || (!ret && (io.fixed_got < len || (status != 200 && status != 206)))) {
		if (!ret && status != 200 && status != 206)
			bk_error("%s: %s: HTTP %ld to a range request", s->base.url, what, status);
		else
			bk_error("%s: %s is shorter than %" PRIu64 " bytes (%zu read at %" PRIu64 ")",
				 s->base.url, key, offset + len, ret ? 0 : io.fixed_got, offset);
		ret = -EIO;
	}
out:
	free(io.buf);
	free(url);
	free(what);
	free(range);
	return ret;
}

static int s3_put(struct store *st, const char *key, const void *buf, size_t len)
{
	struct s3_store *s = (struct s3_store *)st;
	struct s3_io io = {0};
	char *url, *what;
	int ret;

	if ((ret = check_key(s, key)))
		return ret;
	url = object_url(s, key);
	what = bk_format("PUT %s", key);
	if (!url || !what) {
		ret = -ENOMEM;
		goto out;
	}
	ret = s3_call(s, &(struct s3_req){.method = "PUT", .url = url, .what = what,
					  .body = buf ? buf : "", .body_len = len, .flags = S3_F_404_ERR},
		      &io, NULL);
out:
	free(io.buf);
	free(url);
	free(what);
	return ret;
}

static int s3_del(struct store *st, const char *key)
{
	struct s3_store *s = (struct s3_store *)st;
	struct s3_io io = {0};
	char *url, *what;
	int ret;

	if ((ret = check_key(s, key)))
		return ret;
	url = object_url(s, key);
	what = bk_format("DELETE %s", key);
	if (!url || !what) {
		ret = -ENOMEM;
		goto out;
	}
	ret = s3_call(s, &(struct s3_req){.method = "DELETE", .url = url, .what = what, .flags = S3_F_404_OK},
		      &io, NULL);
out:
	free(io.buf);
	free(url);
	free(what);
	return ret;
}

/* One page of ListObjectsV2: FN for each object, *TOKEN the next page's
 * continuation token (NULL on the last). MAX_KEYS 0 for the server's
 * default. FLAGS for s3_call. */
static int list_page(struct s3_store *s, const char *prefix, char **token, int max_keys, int flags,
		     store_list_fn fn, void *opaque)
{
	struct s3_io io = {0};
	char *full = NULL, *eprefix = NULL, *etoken = NULL, *url = NULL, *what = NULL, *trunc = NULL;
	char maxk[32] = "";
	size_t plen = strlen(s->prefix);
	int ret;

	full = bk_format("%s%s", s->prefix, prefix);
	eprefix = full ? uri_encode(full) : NULL;
	etoken = *token ? uri_encode(*token) : NULL;
	if (max_keys)
		snprintf(maxk, sizeof(maxk), "&max-keys=%d", max_keys);
	/* Parameters in sorted order: curl 7.88 signs the query as given. */
	url = bk_format("%s%s?%s%s%slist-type=2%s&prefix=%s", s->base_url, s->path_style ? "" : "/",
			etoken ? "continuation-token=" : "", etoken ? etoken : "", etoken ? "&" : "", maxk,
			eprefix ? eprefix : "");
	what = *prefix ? bk_format("LIST %s", prefix) : strdup("LIST");
	if (!full || !eprefix || (*token && !etoken) || !url || !what) {
		ret = -ENOMEM;
		goto out;
	}
	free(*token);
	*token = NULL;
	ret = s3_call(s, &(struct s3_req){.method = "GET", .url = url, .what = what, .flags = flags | S3_F_404_ERR},
		      &io, NULL);
	if (ret)
		goto out;
	if (!io.buf || !xml_root_is(io.buf, io.len, "ListBucketResult")) {
		bk_error("%s: %s: the answer is not an S3 listing", s->base.url, what);
		ret = -EIO;
		goto out;
	}

	const char *p = io.buf, *end = io.buf + io.len;

	for (;;) {
		const char *c = memmem(p, (size_t)(end - p), "<Contents>", 10), *ce;
		char *key = NULL, *size = NULL, *e;
		unsigned long long sz;

		if (!c)
			break;
		ce = memmem(c, (size_t)(end - c), "</Contents>", 11);
		if (!ce || xml_elem(c, ce, "Key", &key, NULL) != 1 || xml_elem(c, ce, "Size", &size, NULL) != 1) {
			free(key);
			bk_error("%s: %s: a broken entry in the listing", s->base.url, what);
			ret = -EIO;
			goto out;
		}
		errno = 0;
		sz = strtoull(size, &e, 10);
		if (!*size || *e || errno) {
			bk_error("%s: %s: a broken size '%s' in the listing", s->base.url, what, size);
			free(key);
			free(size);
			ret = -EIO;
			goto out;
		}
		free(size);
		if (strlen(key) > plen && !strncmp(key, s->prefix, plen))
			ret = fn(opaque, key + plen, sz);
		free(key);
		if (ret)
			goto out;
		p = ce + 11;
	}
	ret = xml_elem(io.buf, end, "IsTruncated", &trunc, NULL);
	if (ret < 0 || (ret == 1 && strcmp(trunc, "true") && strcmp(trunc, "false"))) {
		bk_error("%s: %s: a broken IsTruncated in the listing", s->base.url, what);
		ret = -EIO;
		goto out;
	}
	ret = 0;
	if (trunc && !strcmp(trunc, "true")) {
		if (xml_elem(io.buf, end, "NextContinuationToken", token, NULL) != 1 || !**token) {
			free(*token);
			*token = NULL;
			bk_error("%s: %s: a truncated listing without a continuation token", s->base.url, what);
			ret = -EIO;
		}
	}
out:
	free(io.buf);
	free(full);
	free(eprefix);
	free(etoken);
	free(url);
	free(what);
	free(trunc);
	return ret;
}

static int s3_list(struct store *st, const char *prefix, store_list_fn fn, void *opaque)
{
	struct s3_store *s = (struct s3_store *)st;
	char *token = NULL, *prev = NULL;
	int ret;

	if (!prefix)
		prefix = "";
	if (*prefix && !s3_key_ok(prefix)) {
		bk_error("%s: invalid list prefix '%s'", s->base.url, prefix);
		return -EINVAL;
	}
	do {
		ret = list_page(s, prefix, &token, 0, 0, fn, opaque);
		if (!ret && token && prev && !strcmp(token, prev)) {
			bk_error("%s: LIST %s: the server repeats its continuation token", s->base.url, prefix);
			ret = -EIO;
		}
		free(prev);
		prev = token ? strdup(token) : NULL;
		if (token && !prev)
			ret = -ENOMEM;
	} while (!ret && token);
	free(token);
	free(prev);
	return ret;
}

/* ---- The lock ---- */

static bool modes_conflict(enum store_lock_mode a, enum store_lock_mode b)
{
	return a == STORE_LOCK_PRUNE || b == STORE_LOCK_PRUNE || (a == STORE_LOCK_APPEND && b == STORE_LOCK_APPEND);
}

static char *lock_json(enum store_lock_mode mode)
{
	struct json_object *o = json_object_new_object();
	char host[256] = "";
	char *r = NULL;

	if (!o)
		return NULL;
	gethostname(host, sizeof(host) - 1);
	if (!json_object_object_add(o, "mode", json_object_new_string(mode_name(mode))) &&
	    !json_object_object_add(o, "host", json_object_new_string(host)) &&
	    !json_object_object_add(o, "pid", json_object_new_int64(getpid())) &&
	    !json_object_object_add(o, "time", json_object_new_int64((int64_t)time(NULL))))
		r = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return r;
}

struct key_list {
	char **keys;
	size_t n;
	bool oom;
};

static int collect_key(void *opaque, const char *key, uint64_t size)
{
	struct key_list *l = opaque;
	char **k = realloc(l->keys, (l->n + 1) * sizeof(*k));

	(void)size;
	if (!k || !(k[l->n] = strdup(key))) {
		if (k)
			l->keys = k;
		l->oom = true;
		return -ENOMEM;
	}
	l->keys = k;
	l->n++;
	return 0;
}

static void key_list_free(struct key_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->keys[i]);
	free(l->keys);
}

/* Was the lock taken on this host by a process that no longer runs? (A pid
 * may be reused; then the lock is only honoured until it goes stale.) */
static bool holder_gone(const char *host, int64_t pid)
{
	char me[256] = "";

	gethostname(me, sizeof(me) - 1);
	return host && !strcmp(host, me) && pid > 0 && pid <= INT32_MAX && pid != getpid() &&
	       kill((pid_t)pid, 0) < 0 && errno == ESRCH;
}

static bool stale_reported(struct s3_store *s, const char *key)
{
	char **n;

	for (size_t i = 0; i < s->n_stale_seen; i++)
		if (!strcmp(s->stale_seen[i], key))
			return true;
	n = realloc(s->stale_seen, (s->n_stale_seen + 1) * sizeof(*n));
	if (n) {
		s->stale_seen = n;
		if ((n[s->n_stale_seen] = strdup(key)))
			s->n_stale_seen++;
	}
	return false;
}

/* 0 if no live lock but MINE conflicts with MODE; -EBUSY (message printed)
 * if one does; another negative errno if the locks could not be read.
 * AFTER_PUT: this is the check after ours was written; QUIET: a conflict is
 * -EAGAIN, not printed (there will be another attempt). */
static int lock_check(struct s3_store *s, enum store_lock_mode mode, const char *mine, bool after_put,
		      bool quiet)
{
	struct key_list l = {0};
	int ret = s3_list(&s->base, S3_LOCKS, collect_key, &l);

	if (ret || l.oom) {
		key_list_free(&l);
		return ret ? ret : -ENOMEM;
	}
	for (size_t i = 0; i < l.n && !ret; i++) {
		const char *key = l.keys[i];
		void *buf = NULL;
		size_t len = 0;
		struct json_object *o = NULL, *jm, *jh, *jp, *jt;
		enum store_lock_mode m;
		int64_t t;
		double age;

		if (mine && !strcmp(key, mine))
			continue;
		ret = s3_get(&s->base, key, &buf, &len);
		if (ret == -ENOENT) { /* released since the listing */
			ret = 0;
			continue;
		}
		if (ret)
			break;
		char *text = strndup(buf, len);

		free(buf);
		o = text ? json_tokener_parse(text) : NULL;
		free(text);
		if (!o || !json_object_object_get_ex(o, "mode", &jm) || !json_object_object_get_ex(o, "host", &jh) ||
		    !json_object_object_get_ex(o, "pid", &jp) || !json_object_object_get_ex(o, "time", &jt)) {
			bk_error("%s: %s is not a lock (delete it if no bdfilter-backup uses the repository)",
				 s->base.url, key);
			json_object_put(o);
			ret = -EBUSY;
			break;
		}
		const char *ms = json_object_get_string(jm);

		m = !strcmp(ms, "read") ? STORE_LOCK_READ : !strcmp(ms, "append") ? STORE_LOCK_APPEND : STORE_LOCK_PRUNE;
		t = json_object_get_int64(jt);
		age = now_real() - (double)t;
		if (age > s->lock_stale) {
			if (!stale_reported(s, key))
				bk_error("%s: ignoring a stale lock: %s by pid %" PRId64 " on %s, last renewed %.0f min ago (%s%s)",
					 s->base.url, ms, json_object_get_int64(jp), json_object_get_string(jh),
					 age / 60, key, s3_del(&s->base, key) == 0 ? ", removed" : "");
		} else if (holder_gone(json_object_get_string(jh), json_object_get_int64(jp))) {
			/* Its process is gone from this machine (killed, or it
			 * could not delete the lock through a dead server). */
			if (!stale_reported(s, key))
				bk_error("%s: ignoring the lock of pid %" PRId64 ", which is gone from this host (%s%s)",
					 s->base.url, json_object_get_int64(jp), key,
					 s3_del(&s->base, key) == 0 ? ", removed" : "");
		} else if (modes_conflict(mode, m) && quiet) {
			ret = -EAGAIN;
		} else if (modes_conflict(mode, m)) {
			bk_error("%s: locked for %s by pid %" PRId64 " on %s%s", s->base.url, ms,
				 json_object_get_int64(jp), json_object_get_string(jh),
				 after_put ? ", taken as we took ours (ours withdrawn; try again)" : "");
			ret = -EBUSY;
		}
		json_object_put(o);
	}
	key_list_free(&l);
	return ret;
}

static void *lock_refresher(void *opaque)
{
	struct s3_store *s = opaque;
	struct timespec ts;
	bool failing = false;

	pthread_mutex_lock(&s->lock_mutex);
	while (!s->refresher_stop) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += (time_t)s->lock_refresh;
		ts.tv_nsec += (long)((s->lock_refresh - (double)(time_t)s->lock_refresh) * 1e9);
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		while (!s->refresher_stop && pthread_cond_timedwait(&s->lock_cond, &s->lock_mutex, &ts) != ETIMEDOUT)
			;
		if (s->refresher_stop)
			break;
		char *key = strdup(s->lock_key), *json = lock_json(s->lock_mode);

		pthread_mutex_unlock(&s->lock_mutex);
		int ret = key && json ? s3_put(&s->base, key, json, strlen(json)) : -ENOMEM;

		if (ret && !failing)
			bk_error("%s: could not renew the lock %s; it goes stale in %.0f s unless a retry works",
				 s->base.url, key ? key : "", s->lock_stale);
		failing = ret != 0;
		free(key);
		free(json);
		pthread_mutex_lock(&s->lock_mutex);
	}
	pthread_mutex_unlock(&s->lock_mutex);
	return NULL;
}

static void s3_unlock(struct store *st)
{
	struct s3_store *s = (struct s3_store *)st;

	if (!s->lock_key)
		return;
	if (s->refresher_running) {
		pthread_mutex_lock(&s->lock_mutex);
		s->refresher_stop = true;
		pthread_cond_signal(&s->lock_cond);
		pthread_mutex_unlock(&s->lock_mutex);
		pthread_join(s->refresher, NULL);
		s->refresher_running = false;
	}
	s3_del(st, s->lock_key);
	free(s->lock_key);
	s->lock_key = NULL;
}

static int s3_lock(struct store *st, enum store_lock_mode mode)
{
	struct s3_store *s = (struct s3_store *)st;
	uint8_t id[16];
	char idhex[33], *key, *json;
	int ret;

	if (s->lock_key) {
		bk_error("%s: the lock is already held", s->base.url);
		return -EINVAL;
	}
	for (int attempt = 1;; attempt++) {
		uint32_t r = 0;
		struct timespec ts;

		ret = lock_check(s, mode, NULL, false, false);
		if (ret)
			return ret;
		if (gnutls_rnd(GNUTLS_RND_NONCE, id, sizeof(id)) < 0) {
			bk_error("%s: no random numbers for a lock id", s->base.url);
			return -EIO;
		}
		hex(id, sizeof(id), idhex);
		key = bk_format(S3_LOCKS "%s", idhex);
		json = lock_json(mode);
		if (!key || !json) {
			free(key);
			free(json);
			return -ENOMEM;
		}
		ret = s3_put(st, key, json, strlen(json));
		free(json);
		if (!ret)
			ret = lock_check(s, mode, key, true, attempt < S3_LOCK_ATTEMPTS);
		if (!ret)
			break;
		s3_del(st, key);
		free(key);
		if (ret != -EAGAIN)
			return ret;
		/* Raced: apart by a random pause, and again. */
		gnutls_rnd(GNUTLS_RND_NONCE, &r, sizeof(r));
		ts.tv_sec = 0;
		ts.tv_nsec = (long)((100 + r % 400) * 1000000L) * attempt;
		while (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		nanosleep(&ts, NULL);
	}
	s->lock_key = key;
	s->lock_mode = mode;
	s->refresher_stop = false;
	if (pthread_create(&s->refresher, NULL, lock_refresher, s)) {
		bk_error("%s: cannot start the thread that renews the lock", s->base.url);
		s3_unlock(st);
		return -EAGAIN;
	}
	s->refresher_running = true;
	return 0;
}

/* ---- Open and close ---- */

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *opaque)
{
	struct s3_store *s = opaque;

	(void)h;
	(void)access;
	pthread_mutex_lock(&s->share_locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *opaque)
{
	struct s3_store *s = opaque;

	(void)h;
	pthread_mutex_unlock(&s->share_locks[data]);
}

static void s3_close(struct store *st)
{
	struct s3_store *s = (struct s3_store *)st;

	s3_unlock(st);
	if (s->share) {
		curl_share_cleanup(s->share);
		for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
			pthread_mutex_destroy(&s->share_locks[i]);
	}
	pthread_mutex_destroy(&s->lock_mutex);
	pthread_cond_destroy(&s->lock_cond);
	for (size_t i = 0; i < s->n_stale_seen; i++)
		free(s->stale_seen[i]);
	free(s->stale_seen);
	free(s->base.url);
	free(s->bucket);
	free(s->prefix);
	free(s->base_url);
	free(s->access_key);
	if (s->secret_key) {
		explicit_bzero(s->secret_key, strlen(s->secret_key));
		free(s->secret_key);
	}
	free(s->token);
	free(s->sigv4);
	free(s->user_agent);
	free(s);
}

static const struct store_ops s3_ops = {
	.get = s3_get,
	.get_range = s3_get_range,
	.put = s3_put,
	.del = s3_del,
	.list = s3_list,
	.lock = s3_lock,
	.unlock = s3_unlock,
	.close = s3_close,
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* "s3://BUCKET[/PREFIX]" into S's bucket and prefix ("" or "a/b/"). */
static int parse_url(struct s3_store *s, const char *url)
{
	const char *b = url + 5, *slash = strchr(b, '/');
	size_t bl = slash ? (size_t)(slash - b) : strlen(b);
	char *p;

	if (strncmp(url, "s3://", 5) || bl == 0) {
		bk_error("%s: not an S3 URL (s3://BUCKET/PREFIX)", url);
		return -EINVAL;
	}
	s->bucket = strndup(b, bl);
	if (!s->bucket)
		return -ENOMEM;
	for (const char *c = s->bucket; *c; c++) {
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
		      *c == '.' || *c == '-' || *c == '_')) {
			bk_error("%s: invalid bucket name '%s'", url, s->bucket);
			return -EINVAL;
		}
	}
	p = strdup(slash ? slash + 1 : "");
	if (!p)
		return -ENOMEM;
	size_t pl = strlen(p);

	while (pl && p[pl - 1] == '/')
		p[--pl] = '\0';
	if (pl && !s3_key_ok(p)) {
		bk_error("%s: invalid prefix '%s' (letters, digits, '.', '_', '-' and '/')", url, p);
		free(p);
		return -EINVAL;
	}
	s->prefix = pl ? bk_format("%s/", p) : strdup("");
	free(p);
	return s->prefix ? 0 : -ENOMEM;
}

static int count_one(void *opaque, const char *key, uint64_t size)
{
	(void)opaque;
	(void)key;
	(void)size;
	return 0;
}

int store_s3_open(const char *url, bool create, struct store **out)
{
	struct s3_store *s;
	struct aws_conf c;
	double v;
	int ret;

	(void)create; /* a bucket is never made */
	*out = NULL;
	pthread_once(&curl_once, curl_init);
	if (curl_init_rc != CURLE_OK) {
		bk_error("%s: libcurl: %s", url, curl_easy_strerror(curl_init_rc));
		return -EIO;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->base.ops = &s3_ops;
	pthread_mutex_init(&s->lock_mutex, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&s->lock_cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	s->base.url = strdup(url);
	if (!s->base.url) {
		s3_close(&s->base);
		return -ENOMEM;
	}
	ret = parse_url(s, url);
	if (ret) {
		s3_close(&s->base);
		return ret;
	}

	if ((v = env_number(url, "BDFILTER_S3_CONNECT_TIMEOUT", 10)) < 0)
		goto inval;
	s->connect_timeout = v < 1 ? 1 : (long)v;
	if ((v = env_number(url, "BDFILTER_S3_TIMEOUT", 30)) < 0)
		goto inval;
	s->stall_timeout = v < 1 ? 1 : (long)v;
	if ((v = env_number(url, "BDFILTER_S3_TRIES", 5)) < 0)
		goto inval;
	if (v != (double)(long)v) {
		bk_error("%s: BDFILTER_S3_TRIES=%s is not a whole number of tries", url, getenv("BDFILTER_S3_TRIES"));
		goto inval;
	}
	s->tries = v > 100 ? 100 : (int)v;
	if ((v = env_number(url, "BDFILTER_S3_RETRY_DELAY", 0.2)) < 0)
		goto inval;
	s->retry_delay = v;
	if ((s->lock_stale = env_number(url, "BDFILTER_S3_LOCK_STALE", 30 * 60)) < 0)
		goto inval;
	if ((s->lock_refresh = env_number(url, "BDFILTER_S3_LOCK_REFRESH", 5 * 60)) < 0)
		goto inval;

	ret = aws_conf_read(&c);
	if (ret) {
		aws_conf_free(&c);
		s3_close(&s->base);
		return ret;
	}
	if (!c.access || !c.secret) {
		bk_error("%s: no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give profile '%s' keys in %s",
			 url, c.profile, c.cred_file);
		aws_conf_free(&c);
		s3_close(&s->base);
		return -EACCES;
	}
	s->access_key = c.access;
	s->secret_key = c.secret;
	s->token = c.token;
	c.access = c.secret = c.token = NULL;
	s->sigv4 = bk_format("aws:amz:%s:s3", c.region);
	s->user_agent = bk_format("bdfilter-backup/%s", BDF_VERSION);
	if (c.endpoint) {
		/* A custom endpoint (MinIO, Ceph, a test server): path-style. */
		size_t el = strlen(c.endpoint);

		while (el && c.endpoint[el - 1] == '/')
			c.endpoint[--el] = '\0';
		if (strncmp(c.endpoint, "http://", 7) && strncmp(c.endpoint, "https://", 8)) {
			bk_error("%s: endpoint URL '%s' is not http:// nor https://", url, c.endpoint);
			aws_conf_free(&c);
			s3_close(&s->base);
			return -EINVAL;
		}
		s->base_url = bk_format("%s/%s", c.endpoint, s->bucket);
		s->path_style = true;
	} else if (strchr(s->bucket, '.')) {
		/* Dotted names do not match the wildcard certificate. */
		s->base_url = bk_format("https://s3.%s.amazonaws.com/%s", c.region, s->bucket);
		s->path_style = true;
	} else {
		s->base_url = bk_format("https://%s.s3.%s.amazonaws.com", s->bucket, c.region);
	}
	aws_conf_free(&c);
	if (!s->sigv4 || !s->user_agent || !s->base_url) {
		s3_close(&s->base);
		return -ENOMEM;
	}

	s->share = curl_share_init();
	if (!s->share) {
		s3_close(&s->base);
		return -ENOMEM;
	}
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&s->share_locks[i], NULL);
	curl_share_setopt(s->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(s->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(s->share, CURLSHOPT_USERDATA, s);
	curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);

	/* One listing of a key at most: the bucket, the keys and the endpoint
	 * are checked now, with one clear message, not at the first object. */
	{
		char *token = NULL;

		ret = list_page(s, "", &token, 1, S3_F_OPEN, count_one, NULL);
		free(token);
	}
	if (ret) {
		s3_close(&s->base);
		return ret;
	}
	*out = &s->base;
	return 0;
inval:
	s3_close(&s->base);
	return -EINVAL;
}

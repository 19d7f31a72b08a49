/* The dm userspace-log server (see ulog_server.h): the table of logs, the
 * request decoder, CTR string parsing, and the state file of live logs. */
#include "dirtylog/ulog_server.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <linux/connector.h>

#include "common/io.h"
#include "common/log.h"
#include "dirtylog/dirty_log.h"

#define STATE_FILE "dirtylogs"
#define CTR_WORDS_MAX 8

_Static_assert(sizeof(struct cn_msg) == ULOG_CN_HDR, "struct cn_msg is 20 bytes");
_Static_assert(sizeof(struct dm_ulog_request) == 160, "struct dm_ulog_request is 160 bytes");

struct ulog_entry {
	struct ulog_entry *next;
	char uuid[DM_UUID_LEN];
	uint64_t luid;
	char *ctr;
	struct dirty_log *log;
	unsigned refs;		/* the table's, and one per request in progress */
};

/* A log live when the daemon last stopped (or crashed). */
struct ulog_known {
	struct ulog_known *next;
	char uuid[DM_UUID_LEN];
	uint64_t luid;
	char *ctr;
};

struct ulog_server {
	pthread_mutex_t lock;	/* the two lists and the state file */
	struct ulog_entry *logs;
	struct ulog_known *known;
	char *state_dir;
};

static const char *const request_names[] = {
	[DM_ULOG_CTR] = "CTR",
	[DM_ULOG_DTR] = "DTR",
	[DM_ULOG_PRESUSPEND] = "PRESUSPEND",
	[DM_ULOG_POSTSUSPEND] = "POSTSUSPEND",
	[DM_ULOG_RESUME] = "RESUME",
	[DM_ULOG_GET_REGION_SIZE] = "GET_REGION_SIZE",
	[DM_ULOG_IS_CLEAN] = "IS_CLEAN",
	[DM_ULOG_IN_SYNC] = "IN_SYNC",
	[DM_ULOG_FLUSH] = "FLUSH",
	[DM_ULOG_MARK_REGION] = "MARK_REGION",
	[DM_ULOG_CLEAR_REGION] = "CLEAR_REGION",
	[DM_ULOG_GET_RESYNC_WORK] = "GET_RESYNC_WORK",
	[DM_ULOG_SET_REGION_SYNC] = "SET_REGION_SYNC",
	[DM_ULOG_GET_SYNC_COUNT] = "GET_SYNC_COUNT",
	[DM_ULOG_STATUS_INFO] = "STATUS_INFO",
	[DM_ULOG_STATUS_TABLE] = "STATUS_TABLE",
	[DM_ULOG_IS_REMOTE_RECOVERING] = "IS_REMOTE_RECOVERING",
};
#define REQUEST_TYPE_MAX DM_ULOG_IS_REMOTE_RECOVERING

/* ---- the state file: one line per live log, "UUID LUID CTR" ---- */

static void known_free(struct ulog_known *k)
{
	while (k) {
		struct ulog_known *next = k->next;

		free(k->ctr);
		free(k);
		k = next;
	}
}

static int state_load(struct ulog_server *s)
{
	char path[4096], *line = NULL;
	size_t cap = 0;
	unsigned lineno = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", s->state_dir, STATE_FILE);
	f = fopen(path, "re");
	if (!f) {
		if (errno == ENOENT)
			return 0;
		log_error("dirty log state %s: %s", path, strerror(errno));
		return -errno;
	}
	while (getline(&line, &cap, f) > 0) {
		struct ulog_known *k;
		char uuid[DM_UUID_LEN];
		uint64_t luid;
		int pos = 0;

		lineno++;
		line[strcspn(line, "\n")] = '\0';
		if (sscanf(line, "%128s %" SCNu64 " %n", uuid, &luid, &pos) != 2 || !pos || !line[pos]) {
			log_warn("dirty log state %s line %u: not 'UUID LUID CTR'; skipped", path, lineno);
			continue;
		}
		k = calloc(1, sizeof(*k));
		if (!k || !(k->ctr = strdup(line + pos))) {
			free(k);
			free(line);
			fclose(f);
			return -ENOMEM;
		}
		memcpy(k->uuid, uuid, sizeof(uuid));
		k->luid = luid;
		k->next = s->known;
		s->known = k;
	}
	free(line);
	fclose(f);
	return 0;
}

/* Rewrite the state file from the live logs and the known ones not yet
 * constructed again, atomically. Called with the lock held. */
static int state_save(struct ulog_server *s)
{
	char path[4096], tmp[4096];
	FILE *f;
	int fd, r = 0;

	if (!s->state_dir)
		return 0;
	snprintf(path, sizeof(path), "%s/%s", s->state_dir, STATE_FILE);
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", s->state_dir, STATE_FILE);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || !(f = fdopen(fd, "w"))) {
		r = -errno;
		if (fd >= 0)
			close(fd);
		log_error("dirty log state %s: %s", tmp, strerror(-r));
		return r;
	}
	for (struct ulog_entry *e = s->logs; e; e = e->next)
		fprintf(f, "%s %" PRIu64 " %s\n", e->uuid, e->luid, e->ctr);
	for (struct ulog_known *k = s->known; k; k = k->next)
		fprintf(f, "%s %" PRIu64 " %s\n", k->uuid, k->luid, k->ctr);
	if (fflush(f) != 0 || fdatasync(fileno(f)) != 0)
		r = -errno;
	if (fclose(f) != 0 && !r)
		r = -errno;
	if (!r && rename(tmp, path) != 0)
		r = -errno;
	if (r) {
		log_error("dirty log state %s: %s", path, strerror(-r));
		unlink(tmp);
		return r;
	}
	fd = open(s->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	return 0;
}

int ulog_server_new(const struct ulog_server_config *cfg, struct ulog_server **out)
{
	struct ulog_server *s = calloc(1, sizeof(*s));
	int r;

	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->lock, NULL);
	if (cfg && cfg->state_dir) {
		s->state_dir = strdup(cfg->state_dir);
		if (!s->state_dir) {
			ulog_server_free(s);
			return -ENOMEM;
		}
		r = state_load(s);
		if (r < 0) {
			ulog_server_free(s);
			return r;
		}
	}
	*out = s;
	return 0;
}

static void entry_put(struct ulog_server *s, struct ulog_entry *e)
{
	bool last;

	pthread_mutex_lock(&s->lock);
	last = --e->refs == 0;
	pthread_mutex_unlock(&s->lock);
	if (last) {
		dirty_log_destroy(e->log);
		free(e->ctr);
		free(e);
	}
}

void ulog_server_free(struct ulog_server *s)
{
	if (!s)
		return;
	while (s->logs) {
		struct ulog_entry *e = s->logs;

		s->logs = e->next;
		entry_put(s, e);
	}
	known_free(s->known);
	free(s->state_dir);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* cmirrord's get_log: the uuid, and the luid unless the request's is 0. */
static struct ulog_entry *entry_get(struct ulog_server *s, const char *uuid, uint64_t luid)
{
	struct ulog_entry *e;

	pthread_mutex_lock(&s->lock);
	for (e = s->logs; e; e = e->next)
		if (!strcmp(e->uuid, uuid) && (!luid || luid == e->luid)) {
			e->refs++;
			break;
		}
	pthread_mutex_unlock(&s->lock);
	return e;
}

/* The log of exactly UUID and LUID (a CTR's), with the lock held. */
static struct ulog_entry *entry_find_exact(struct ulog_server *s, const char *uuid, uint64_t luid)
{
	struct ulog_entry *e;

	for (e = s->logs; e; e = e->next)
		if (!strcmp(e->uuid, uuid) && e->luid == luid)
			break;
	return e;
}

/* Where the known log of UUID and LUID is linked, or NULL; the lock held. */
static struct ulog_known **known_find(struct ulog_server *s, const char *uuid, uint64_t luid)
{
	for (struct ulog_known **kp = &s->known; *kp; kp = &(*kp)->next)
		if (!strcmp((*kp)->uuid, uuid) && (*kp)->luid == luid)
			return kp;
	return NULL;
}

void ulog_server_visit(struct ulog_server *s, ulog_server_visit_fn fn, void *opaque)
{
	pthread_mutex_lock(&s->lock);
	for (struct ulog_entry *e = s->logs; e; e = e->next)
		fn(opaque, e->uuid, e->luid, e->ctr, e->log);
	pthread_mutex_unlock(&s->lock);
}

/* ---- CTR ---- */

struct ctr_args {
	struct dirty_log_config cfg;
	char dev_path[4096];
	const char *dev_word;	/* the log device as the table names it */
};

/* The node of block device MAJ:MIN: udev's /dev/block/MAJ:MIN, or the
 * kernel's name for it (sysfs) under /dev; checked to be that device. */
static int block_device_path(unsigned maj, unsigned min, char *path, size_t len)
{
	char sys[64], line[256];
	struct stat st;
	FILE *f;

	snprintf(path, len, "/dev/block/%u:%u", maj, min);
	if (stat(path, &st) == 0 && S_ISBLK(st.st_mode) && st.st_rdev == makedev(maj, min))
		return 0;
	snprintf(sys, sizeof(sys), "/sys/dev/block/%u:%u/uevent", maj, min);
	f = fopen(sys, "re");
	if (!f)
		return -ENOENT;
	path[0] = '\0';
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "DEVNAME=", 8)) {
			line[strcspn(line, "\n")] = '\0';
			snprintf(path, len, "/dev/%s", line + 8);
		}
	fclose(f);
	if (!path[0] || stat(path, &st) < 0 || !S_ISBLK(st.st_mode) || st.st_rdev != makedev(maj, min))
		return -ENOENT;
	return 0;
}

static bool all_digits(const char *w)
{
	if (!*w)
		return false;
	for (; *w; w++)
		if (*w < '0' || *w > '9')
			return false;
	return true;
}

/* "<dev_sectors> <type> [<log_dev>] <region_size> [[no]sync] [block_on_error]",
 * as dm-log-userspace builds it (the uuid and integrated_flush taken off).
 * WORDS points into BUF, which is modified. */
static int ctr_parse(char *buf, struct ctr_args *a, const char *uuid)
{
	char *words[CTR_WORDS_MAX], *save = NULL, *w;
	size_t n = 0, i;
	bool disk;

	memset(a, 0, sizeof(*a));
	for (w = strtok_r(buf, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
		if (n == CTR_WORDS_MAX) {
			log_warn("dirty log %s: CTR: more than %u words", uuid, CTR_WORDS_MAX);
			return -EINVAL;
		}
		words[n++] = w;
	}
	if (n < 3) {
		log_warn("dirty log %s: CTR: '<dev_sectors> <type> <args>' expected", uuid);
		return -EINVAL;
	}
	if (!all_digits(words[0]) || strlen(words[0]) > 19 || !strtoull(words[0], NULL, 10)) {
		log_warn("dirty log %s: CTR: device size '%.32s' is not a number of sectors", uuid, words[0]);
		return -EINVAL;
	}
	a->cfg.dev_sectors = strtoull(words[0], NULL, 10);
	a->cfg.type = words[1];
	if (!strcmp(words[1], "core") || !strcmp(words[1], "clustered-core"))
		disk = false;
	else if (!strcmp(words[1], "disk") || !strcmp(words[1], "clustered-disk"))
		disk = true;
	else {
		log_warn("dirty log %s: CTR: unknown log type '%.32s' (core, disk, clustered-core, clustered-disk)",
			 uuid, words[1]);
		return -EINVAL;
	}
	i = 2;
	if (disk) {
		unsigned maj, min;
		char tail;

		if (n < 4) {
			log_warn("dirty log %s: CTR: a %s log needs '<log_dev> <region_size>'", uuid, words[1]);
			return -EINVAL;
		}
		a->dev_word = words[i++];
		if (sscanf(a->dev_word, "%u:%u%c", &maj, &min, &tail) == 2) {
			if (block_device_path(maj, min, a->dev_path, sizeof(a->dev_path)) < 0) {
				log_warn("dirty log %s: CTR: no block device %u:%u on this machine", uuid, maj, min);
				return -ENOENT;
			}
		} else if (a->dev_word[0] == '/' && strlen(a->dev_word) < sizeof(a->dev_path))
			strcpy(a->dev_path, a->dev_word);
		else {
			log_warn("dirty log %s: CTR: log device '%.64s' is neither MAJOR:MINOR nor an absolute path",
				 uuid, a->dev_word);
			return -EINVAL;
		}
		a->cfg.disk_path = a->dev_path;
	}
	if (!all_digits(words[i]) || strlen(words[i]) > 10 || strtoull(words[i], NULL, 10) > UINT32_MAX) {
		log_warn("dirty log %s: CTR: region size '%.32s' is not a number of sectors", uuid, words[i]);
		return -EINVAL;
	}
	a->cfg.region_sectors = (uint32_t)strtoull(words[i++], NULL, 10);
	for (; i < n; i++) {
		if (!strcmp(words[i], "sync") || !strcmp(words[i], "nosync")) {
			if (a->cfg.sync != DIRTY_LOG_SYNC_DEFAULT) {
				log_warn("dirty log %s: CTR: sync and nosync both given", uuid);
				return -EINVAL;
			}
			a->cfg.sync = words[i][0] == 'n' ? DIRTY_LOG_NOSYNC : DIRTY_LOG_FORCESYNC;
		} else if (!strcmp(words[i], "block_on_error"))
			a->cfg.block_on_error = true;
		else if (strcmp(words[i], "integrated_flush") != 0) {
			log_warn("dirty log %s: CTR: unknown argument '%.32s'", uuid, words[i]);
			return -EINVAL;
		}
	}
	return 0;
}

static bool printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s <= ' ' || *s == 0x7f)
			return false;
	return true;
}

static int do_ctr(struct ulog_server *s, struct dm_ulog_request *rq, const char *data, char *rdata,
		  uint32_t *rsize)
{
	struct ulog_entry *e, *old;
	struct ulog_known **kp;
	struct ctr_args a;
	char *copy;
	bool known = false;
	int r;

	if (!rq->data_size || !memchr(data, '\0', rq->data_size)) {
		log_warn("dirty log %s: CTR without a NUL-terminated table string", rq->uuid);
		return -EINVAL;
	}
	for (const char *p = data; *p; p++)
		if ((unsigned char)*p < ' ' || *p == 0x7f) {
			log_warn("dirty log %s: CTR: a control character in the table string", rq->uuid);
			return -EINVAL;
		}
	if (!rq->uuid[0] || !printable(rq->uuid)) {
		log_warn("dirty log: CTR: the uuid is empty or has a space or a control character");
		return -EINVAL;
	}
	copy = strdup(data);
	if (!copy)
		return -ENOMEM;
	r = ctr_parse(copy, &a, rq->uuid);
	if (r < 0)
		goto out;

	/* The kernel's -ESRCH retry sends CTR again for a log we may still
	 * hold: the same table is that log; another one is a conflict. */
	pthread_mutex_lock(&s->lock);
	old = entry_find_exact(s, rq->uuid, rq->luid);
	if (old) {
		r = strcmp(old->ctr, data) ? -EEXIST : 0;
		pthread_mutex_unlock(&s->lock);
		if (r)
			log_warn("dirty log %s/%" PRIu64 ": CTR of a log that exists with another table",
				 rq->uuid, (uint64_t)rq->luid);
		goto reply;
	}
	known = known_find(s, rq->uuid, rq->luid) != NULL;
	pthread_mutex_unlock(&s->lock);

	a.cfg.name = rq->uuid;
	a.cfg.known = known;
	e = calloc(1, sizeof(*e));
	if (!e || !(e->ctr = strdup(data))) {
		free(e);
		r = -ENOMEM;
		goto out;
	}
	r = dirty_log_create(&e->log, &a.cfg);
	if (r < 0) {
		free(e->ctr);
		free(e);
		goto out;
	}
	memcpy(e->uuid, rq->uuid, sizeof(e->uuid));
	e->luid = rq->luid;
	e->refs = 1;
	pthread_mutex_lock(&s->lock);
	if (entry_find_exact(s, rq->uuid, rq->luid)) { /* a second CTR raced us */
		pthread_mutex_unlock(&s->lock);
		entry_put(s, e);
		r = -EEXIST;
		goto out;
	}
	kp = known_find(s, rq->uuid, rq->luid);
	if (kp) { /* live again: listed as a log from now on */
		struct ulog_known *k = *kp;

		*kp = k->next;
		k->next = NULL;
		known_free(k);
	}
	e->next = s->logs;
	s->logs = e;
	state_save(s); /* logged; the log works without it */
	pthread_mutex_unlock(&s->lock);
	log_info("dirty log %s/%" PRIu64 ": %s%s", rq->uuid, (uint64_t)rq->luid, data, known ? " (again, after a restart)" : "");
reply:
	/* Version 2 on: a disk log names its device for the kernel to open. */
	if (!r && a.dev_word && rq->version > 1) {
		size_t len = strlen(a.dev_word) + 1;

		if (len > ULOG_DATA_MAX)
			r = -ENAMETOOLONG;
		else {
			memcpy(rdata, a.dev_word, len);
			*rsize = (uint32_t)len;
		}
	}
out:
	free(copy);
	return r;
}

static int do_dtr(struct ulog_server *s, struct dm_ulog_request *rq)
{
	struct ulog_entry **ep, *e = NULL;

	pthread_mutex_lock(&s->lock);
	for (ep = &s->logs; *ep; ep = &(*ep)->next)
		if (!strcmp((*ep)->uuid, rq->uuid) && (!rq->luid || rq->luid == (*ep)->luid)) {
			e = *ep;
			*ep = e->next;
			break;
		}
	if (e)
		state_save(s);
	pthread_mutex_unlock(&s->lock);
	if (!e) {
		log_warn("dirty log %s/%" PRIu64 ": DTR of a log that does not exist", rq->uuid, (uint64_t)rq->luid);
		return -EINVAL;
	}
	log_info("dirty log %s/%" PRIu64 ": removed", e->uuid, e->luid);
	entry_put(s, e);
	return 0;
}

static int need(const struct dm_ulog_request *rq, uint32_t size)
{
	if (rq->data_size < size) {
		log_warn("dirty log %s: %s with %u bytes of data, %u expected", rq->uuid,
			 request_names[DM_ULOG_REQUEST_TYPE(rq->request_type)], rq->data_size, size);
		return -EINVAL;
	}
	return 0;
}

static int regions_of(const struct dm_ulog_request *rq)
{
	if (rq->data_size % sizeof(uint64_t)) {
		log_warn("dirty log %s: %s with %u bytes, not a whole number of regions", rq->uuid,
			 request_names[DM_ULOG_REQUEST_TYPE(rq->request_type)], rq->data_size);
		return -EINVAL;
	}
	return (int)(rq->data_size / sizeof(uint64_t));
}

/* One request on a log that exists: the dm dirty-log call it stands for. */
static int do_log_request(struct dirty_log *log, struct dm_ulog_request *rq, const void *data, void *rdata,
			  uint32_t *rsize)
{
	uint64_t regions[ULOG_DATA_MAX / sizeof(uint64_t)], u;
	int64_t i64[2];
	bool recovering;
	int r, n;

	switch (DM_ULOG_REQUEST_TYPE(rq->request_type)) {
	case DM_ULOG_PRESUSPEND:
		return dirty_log_presuspend(log);
	case DM_ULOG_POSTSUSPEND:
		return dirty_log_postsuspend(log);
	case DM_ULOG_RESUME:
		return dirty_log_resume(log);
	case DM_ULOG_GET_REGION_SIZE:
		u = dirty_log_region_sectors(log);
		memcpy(rdata, &u, sizeof(u));
		*rsize = sizeof(u);
		return 0;
	case DM_ULOG_IS_CLEAN:
	case DM_ULOG_IN_SYNC:
		if ((r = need(rq, sizeof(u))) < 0)
			return r;
		memcpy(&u, data, sizeof(u));
		r = DM_ULOG_REQUEST_TYPE(rq->request_type) == DM_ULOG_IS_CLEAN ? dirty_log_is_clean(log, u)
									 : dirty_log_in_sync(log, u);
		if (r < 0)
			return r;
		i64[0] = r;
		memcpy(rdata, i64, sizeof(i64[0]));
		*rsize = sizeof(i64[0]);
		return 0;
	case DM_ULOG_FLUSH:
	case DM_ULOG_MARK_REGION:
	case DM_ULOG_CLEAR_REGION:
		if ((n = regions_of(rq)) < 0)
			return n;
		memcpy(regions, data, (size_t)n * sizeof(uint64_t));
		switch (DM_ULOG_REQUEST_TYPE(rq->request_type)) {
		case DM_ULOG_FLUSH: /* version 3: the marks ride on the flush */
			return n ? dirty_log_mark_flush(log, regions, (size_t)n) : dirty_log_flush(log);
		case DM_ULOG_MARK_REGION:
			return dirty_log_mark(log, regions, (size_t)n);
		default:
			return dirty_log_clear(log, regions, (size_t)n);
		}
	case DM_ULOG_GET_RESYNC_WORK:
		r = dirty_log_get_resync_work(log, &u);
		if (r < 0)
			return r;
		i64[0] = r;
		memcpy(rdata, &i64[0], 8);
		u = r ? u : 0;
		memcpy((char *)rdata + 8, &u, 8);
		*rsize = 16;
		return 0;
	case DM_ULOG_SET_REGION_SYNC:
		if ((r = need(rq, 16)) < 0)
			return r;
		memcpy(&u, data, 8);
		memcpy(&i64[1], (const char *)data + 8, 8);
		return dirty_log_set_region_sync(log, u, i64[1] != 0);
	case DM_ULOG_GET_SYNC_COUNT:
		u = dirty_log_sync_count(log);
		memcpy(rdata, &u, sizeof(u));
		*rsize = sizeof(u);
		return 0;
	case DM_ULOG_STATUS_INFO:
	case DM_ULOG_STATUS_TABLE:
		/* As cmirrord: the string without its NUL (dm appends to it). */
		r = DM_ULOG_REQUEST_TYPE(rq->request_type) == DM_ULOG_STATUS_INFO
			    ? dirty_log_status_info(log, rdata, ULOG_DATA_MAX)
			    : dirty_log_status_table(log, rdata, ULOG_DATA_MAX);
		if (r < 0)
			return r;
		*rsize = (uint32_t)r;
		return 0;
	case DM_ULOG_IS_REMOTE_RECOVERING:
		if ((r = need(rq, sizeof(u))) < 0)
			return r;
		memcpy(&u, data, sizeof(u));
		r = dirty_log_is_remote_recovering(log, u, &recovering, &u);
		if (r < 0)
			return r;
		i64[0] = recovering;
		memcpy(rdata, &i64[0], 8);
		memcpy((char *)rdata + 8, &u, 8);
		*rsize = 16;
		return 0;
	}
	return -EINVAL; /* not reached: the caller checked the type */
}

static void reply_ack(struct ulog_reply *out, uint32_t err)
{
	out->len = 0;
	out->ack = err;
}

void ulog_server_handle(struct ulog_server *s, const void *req, size_t len, struct ulog_reply *out)
{
	struct dm_ulog_request rq;
	const unsigned char *data;
	unsigned char *rdata = out->buf + sizeof(rq);
	uint32_t rsize = 0, type;
	struct ulog_entry *e;
	int r;

	if (len < sizeof(rq)) {
		log_warn("dirty log: a request of %zu bytes, shorter than its %zu-byte header", len, sizeof(rq));
		reply_ack(out, EINVAL);
		return;
	}
	memcpy(&rq, req, sizeof(rq));
	data = (const unsigned char *)req + sizeof(rq);
	type = DM_ULOG_REQUEST_TYPE(rq.request_type);
	memset(out->buf, 0, sizeof(rq));
	out->ack = 0;
	if (type == 0) { /* cmirrord: a bad transmission, ask for it again */
		reply_ack(out, EAGAIN);
		return;
	}
	if (!memchr(rq.uuid, '\0', sizeof(rq.uuid))) {
		/* Unprintable as it is: never echo it back into a message. */
		log_warn("dirty log: %s request (seq %u) with a uuid of %zu bytes and no NUL",
			 type <= REQUEST_TYPE_MAX ? request_names[type] : "unknown", rq.seq, sizeof(rq.uuid));
		r = -EINVAL;
	} else if (len > ULOG_REQUEST_MAX) {
		log_warn("dirty log %s: a request of %zu bytes, over the %u-byte message cap", rq.uuid,
			 len + ULOG_CN_HDR, ULOG_MSG_MAX);
		r = -EINVAL;
	} else if (rq.data_size > len - sizeof(rq)) {
		log_warn("dirty log %s: data_size %u, beyond the %zu bytes that came", rq.uuid, rq.data_size,
			 len - sizeof(rq));
		r = -EINVAL;
	} else if (rq.version == 0) {
		log_warn("dirty log %s: request version 0", rq.uuid);
		r = -EINVAL;
	} else if (type > REQUEST_TYPE_MAX) {
		log_warn("dirty log %s: unknown request type %u", rq.uuid, type);
		r = -EINVAL;
	} else if (type == DM_ULOG_CTR) {
		r = do_ctr(s, &rq, (const char *)data, (char *)rdata, &rsize);
	} else if (type == DM_ULOG_DTR) {
		r = do_dtr(s, &rq);
	} else if (!(e = entry_get(s, rq.uuid, rq.luid))) {
		log_warn("dirty log %s/%" PRIu64 ": %s for a log that does not exist", rq.uuid, (uint64_t)rq.luid,
			 request_names[type]);
		r = -EINVAL;
	} else {
		r = do_log_request(e->log, &rq, data, rdata, &rsize);
		entry_put(s, e);
	}
	if (r < 0)
		rsize = 0;
	rq.error = r < 0 ? r : 0;
	rq.data_size = rsize;
	memcpy(out->buf, &rq, sizeof(rq));
	out->len = sizeof(rq) + rsize;
}

size_t ulog_cn_handle(struct ulog_server *s, const void *pkt, size_t len, void *out, size_t outmax)
{
	struct cn_msg msg, reply;
	struct ulog_reply *rep;
	size_t n;

	if (len < sizeof(msg) || outmax < sizeof(reply)) {
		log_warn("dirty log: a packet of %zu bytes, shorter than a connector header", len);
		return 0;
	}
	memcpy(&msg, pkt, sizeof(msg));
	if (msg.id.idx != CN_IDX_DM || msg.id.val != CN_VAL_DM_USERSPACE_LOG) {
		log_warn("dirty log: a connector message for %u/%u, not dm-log-userspace (%u/%u)", msg.id.idx,
			 msg.id.val, CN_IDX_DM, CN_VAL_DM_USERSPACE_LOG);
		return 0;
	}
	memset(&reply, 0, sizeof(reply));
	reply.id = msg.id;
	reply.seq = msg.seq;
	if (msg.len > len - sizeof(msg)) {
		log_warn("dirty log: connector len %u, beyond the %zu bytes that came", msg.len, len - sizeof(msg));
		reply.ack = EINVAL;
		memcpy(out, &reply, sizeof(reply));
		return sizeof(reply);
	}
	rep = malloc(sizeof(*rep));
	if (!rep) {
		reply.ack = ENOMEM;
		memcpy(out, &reply, sizeof(reply));
		return sizeof(reply);
	}
	ulog_server_handle(s, (const unsigned char *)pkt + sizeof(msg), msg.len, rep);
	n = rep->len;
	if (sizeof(reply) + n > outmax)
		n = 0, rep->ack = ENOSPC;
	reply.ack = n ? 0 : rep->ack;
	reply.len = (uint16_t)n;
	memcpy(out, &reply, sizeof(reply));
	memcpy((unsigned char *)out + sizeof(reply), rep->buf, n);
	free(rep);
	return sizeof(reply) + n;
}

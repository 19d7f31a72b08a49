/* bdfilter-backup run: what one backup of bdfilterd's devices takes, in one
 * command. This file owns the conversation with the daemon's control socket
 * (where its NBD listener is, which devices have the tracker, the snapshot's
 * life from create to destroy) and the signal handling that makes every path
 * end with the snapshot destroyed. Every device's backups go into one
 * repository (version 2), under the device's name.
 * The backups themselves are backup_run()'s, in this process. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup/backup.h"
#include "backup/repo2.h"
#include "backup/run.h"
#include "backup/source.h"
#include "backup/util.h"
#include "control/client.h"

/* bdfilterd names the image of device NAME "NAME-image", and no device may
 * have such a name (docs/snapshots.md). */
#define IMAGE_SUFFIX "-image"

struct target {
	char *name;
	uint64_t size;
	bool tracker;        /* attached when we looked */
	json_object *summary;
};

struct run {
	const struct run_opts *o;
	struct control_client cc;
	struct target *t;
	size_t n;
	char *base_uri;      /* a listener's URI, export name empty */
	struct repo2 *repo;  /* opened and locked (APPEND) until the backups are done */
	char id[37];         /* the snapshot, once created */
	bool created;
	bool attached;       /* we attached --device's tracker */
};

/* ---- signals ----
 * SIGINT and SIGTERM are blocked in every thread and taken by one thread of
 * their own (sigwait): the first asks the copy to stop (backup_run's STOP),
 * and the main thread then cleans up as after any failure; the second exits
 * at once, naming the snapshot that is left. */

static atomic_bool stop_flag;
static atomic_int stop_signal;
static atomic_bool live;   /* LIVE_ID is a snapshot of ours */
static char live_id[37];

static const char *signal_name(int sig)
{
	return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal";
}

static void *signal_thread(void *opaque)
{
	const sigset_t *set = opaque;
	int sig;

	for (;;) {
		if (sigwait(set, &sig) != 0)
			continue;
		if (!atomic_exchange(&stop_flag, true)) {
			atomic_store(&stop_signal, sig);
			continue;
		}
		if (atomic_load(&live))
			fprintf(stderr, "bdfilter-backup: run: %s, a second signal: exiting now; snapshot %s is "
					"left behind (bdfilter snapshot_destroy -i %s removes it)\n",
				signal_name(sig), live_id, live_id);
		else
			fprintf(stderr, "bdfilter-backup: run: %s, a second signal: exiting now\n", signal_name(sig));
		_exit(1);
	}
	return NULL;
}

struct signals {
	sigset_t set;
	pthread_t thread;
	bool started;
};

/* Before any other thread exists, so that every thread inherits the mask. A
 * signal the parent ignores (SIGINT for a script's background job) stays
 * ignored, as the shell meant. */
static int signals_start(struct signals *s)
{
	struct sigaction sa;

	sigemptyset(&s->set);
	if (sigaction(SIGINT, NULL, &sa) == 0 && sa.sa_handler != SIG_IGN)
		sigaddset(&s->set, SIGINT);
	if (sigaction(SIGTERM, NULL, &sa) == 0 && sa.sa_handler != SIG_IGN)
		sigaddset(&s->set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &s->set, NULL);
	if (pthread_create(&s->thread, NULL, signal_thread, &s->set) != 0) {
		bk_error("run: cannot start a thread");
		return -EAGAIN;
	}
	s->started = true;
	return 0;
}

/* The signals stay blocked: one that comes now is left pending, and the
 * process is about to exit with what it has done. */
static void signals_stop(struct signals *s)
{
	if (!s->started)
		return;
	pthread_cancel(s->thread);
	pthread_join(s->thread, NULL);
}

static bool stopping(void)
{
	return atomic_load(&stop_flag);
}

/* ---- the daemon ---- */

/* One request; a refusal or a failure on the way printed as "run: WHAT: why". */
/* ARGS (may be NULL) is taken: control_request holds a reference of its own. */
static int request(struct run *rn, const char *what, const char *cmd, json_object *args, json_object **res)
{
	char err[1024];
	int r = control_request(&rn->cc, cmd, args, res, err, sizeof(err));

	json_object_put(args);
	if (r < 0)
		bk_error("run: %s: %s", what, err);
	return r;
}

static json_object *args_device(const char *name)
{
	json_object *a = json_object_new_object();

	json_object_object_add(a, "device", json_object_new_string(name));
	return a;
}

static json_object *args_id(const char *id)
{
	json_object *a = json_object_new_object();

	json_object_object_add(a, "id", json_object_new_string(id));
	return a;
}

static const char *get_str(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
		       ? json_object_get_string(v) : NULL;
}

/* Where the exports are: the first of the daemon's NBD URIs that we can use,
 * a Unix socket before TCP, plain before TLS (which needs --tls-creds or
 * --tls-psk). */
static int find_nbd(struct run *rn)
{
	static const struct {
		const char *prefix;
		bool tls;
	} order[] = { { "nbd+unix:", false }, { "nbds+unix:", true }, { "nbd:", false }, { "nbds:", true } };
	bool tls = rn->o->tls && (rn->o->tls->creds_dir || rn->o->tls->psk_file);
	json_object *res, *uris;
	size_t n;
	int r;

	if ((r = request(rn, "status", "status", NULL, &res)) < 0)
		return r;
	if (!json_object_object_get_ex(res, "nbd_uri", &uris) || !json_object_is_type(uris, json_type_array)) {
		bk_error("run: bdfilterd does not say where it listens for NBD (a version before 'status' "
			 "printed nbd_uri=)");
		json_object_put(res);
		return -EPROTO;
	}
	n = json_object_array_length(uris);
	for (size_t k = 0; k < sizeof(order) / sizeof(order[0]) && !rn->base_uri; k++) {
		if (order[k].tls && !tls)
			continue;
		for (size_t i = 0; i < n && !rn->base_uri; i++) {
			const char *u = json_object_get_string(json_object_array_get_idx(uris, i));

			if (u && strncmp(u, order[k].prefix, strlen(order[k].prefix)) == 0 &&
			    !(rn->base_uri = strdup(u))) {
				bk_error("out of memory");
				json_object_put(res);
				return -ENOMEM;
			}
		}
	}
	json_object_put(res);
	if (rn->base_uri)
		return 0;
	if (n)
		bk_error("run: bdfilterd's NBD listeners all require TLS: give --tls-creds DIR or --tls-psk FILE");
	else
		bk_error("run: bdfilterd has no NBD listener (start it with --nbd-listen unix:PATH)");
	return -ENOENT;
}

static bool has_tracker(json_object *dev)
{
	json_object *fl;

	if (!json_object_object_get_ex(dev, "filters", &fl) || !json_object_is_type(fl, json_type_array))
		return false;
	for (size_t i = 0; i < json_object_array_length(fl); i++)
		if (!strcmp(json_object_get_string(json_object_array_get_idx(fl, i)), "tracker"))
			return true;
	return false;
}

static bool is_image_name(const char *name)
{
	size_t n = strlen(name), s = strlen(IMAGE_SUFFIX);

	return n > s && !strcmp(name + n - s, IMAGE_SUFFIX);
}

static int add_target(struct run *rn, json_object *dev)
{
	json_object *v;

	rn->t[rn->n] = (struct target){
		.name = strdup(get_str(dev, "name")),
		.size = json_object_object_get_ex(dev, "size", &v) ? (uint64_t)json_object_get_int64(v) : 0,
		.tracker = has_tracker(dev),
	};
	if (!rn->t[rn->n].name) {
		bk_error("out of memory");
		return -ENOMEM;
	}
	rn->n++;
	return 0;
}

/* --device NAME, or with --all every device that has the tracker. */
static int find_devices(struct run *rn)
{
	json_object *res, *devs;
	size_t n;
	int r;

	if ((r = request(rn, "device_list", "device_list", NULL, &res)) < 0)
		return r;
	if (!json_object_object_get_ex(res, "devices", &devs) || !json_object_is_type(devs, json_type_array)) {
		bk_error("run: device_list: malformed response from the daemon");
		json_object_put(res);
		return -EPROTO;
	}
	n = json_object_array_length(devs);
	rn->t = calloc(n ? n : 1, sizeof(*rn->t));
	if (!rn->t) {
		bk_error("out of memory");
		json_object_put(res);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n && r == 0; i++) {
		json_object *d = json_object_array_get_idx(devs, i);
		const char *name = get_str(d, "name");

		if (!name || is_image_name(name))
			continue;
		if (rn->o->all ? has_tracker(d) : !strcmp(name, rn->o->device))
			r = add_target(rn, d);
	}
	json_object_put(res);
	if (r < 0)
		return r;
	if (rn->n)
		return 0;
	if (rn->o->all)
		bk_error("run: no device of bdfilterd has the tracker attached (bdfilter attach -d NAME, "
			 "or run --device NAME)");
	else if (is_image_name(rn->o->device))
		bk_error("run: %s is a snapshot image: back up its device", rn->o->device);
	else
		bk_error("run: bdfilterd has no device %s", rn->o->device);
	return -ENODEV;
}

/* ---- the repository ---- */

/* Open the repository (made if missing) and hold it for the whole run,
 * before the daemon is touched: a second run into it stops here. */
static int open_repo(struct run *rn)
{
	struct repo2_create cr = {
		.block_size = rn->o->block_size,
		.level = rn->o->level < 0 ? REPO2_LEVEL_DEFAULT : rn->o->level,
		.key_file = rn->o->key_file,
	};

	return repo2_open(rn->o->repo, STORE_LOCK_APPEND, &cr, rn->o->key_file, &rn->repo);
}

/* ---- the snapshot ---- */

/* The daemon opens the storage from its own working directory: a relative
 * path is made absolute from ours, as bdfilter does. */
static int absolute(const char *path, char **out)
{
	char cwd[PATH_MAX];

	if (path[0] != '/' && !getcwd(cwd, sizeof(cwd))) {
		int e = errno;

		bk_error("run: --storage %s: cannot make it absolute: %s", path, strerror(e));
		return -e;
	}
	*out = path[0] == '/' ? strdup(path) : bk_format("%s/%s", cwd, path);
	if (!*out) {
		bk_error("out of memory");
		return -ENOMEM;
	}
	return 0;
}

/* Create the snapshot of every target, with self-growing storage, and take
 * it (the daemon freezes the filesystems mounted from the devices). */
static int snapshot_make(struct run *rn)
{
	const char *storage = rn->o->storage ? rn->o->storage : RUN_STORAGE_DEFAULT;
	json_object *args = json_object_new_object(), *devs = json_object_new_array(), *res = NULL;
	uint64_t limit = rn->o->limit;
	char *path = NULL, err[1024];
	const char *id;
	int r;

	/* By default, room for every block of every device to be copied once:
	 * the file grows only as far as the writes during the backup take it. */
	for (size_t i = 0; i < rn->n && !rn->o->limit; i++)
		limit += rn->t[i].size;
	for (size_t i = 0; i < rn->n; i++)
		json_object_array_add(devs, json_object_new_string(rn->t[i].name));
	json_object_object_add(args, "device", devs);
	if ((r = absolute(storage, &path)) < 0) {
		json_object_put(args);
		return r;
	}
	json_object_object_add(args, "file", json_object_new_string(path));
	json_object_object_add(args, "limit", json_object_new_uint64(limit ? limit : 1));
	free(path);
	r = control_request(&rn->cc, "snapshot_create", args, &res, err, sizeof(err));
	json_object_put(args);
	if (r < 0) {
		bk_error("run: snapshot_create: %s%s", err,
			 r == -EBUSY ? " (is another backup of it running?)" : "");
		return r;
	}
	id = get_str(res, "id");
	if (!id || strlen(id) != 36) {
		bk_error("run: snapshot_create: malformed response from the daemon");
		json_object_put(res);
		return -EPROTO;
	}
	memcpy(rn->id, id, sizeof(rn->id));
	memcpy(live_id, id, sizeof(live_id));
	atomic_store(&live, true);
	rn->created = true;
	json_object_put(res);
	if (stopping())
		return -EINTR;
	r = request(rn, "snapshot_take", "snapshot_take", args_id(rn->id), NULL);
	return r < 0 ? r : stopping() ? -EINTR : 0;
}

/* Destroy it, on every path. A control connection that broke is opened
 * again once. */
static int snapshot_remove(struct run *rn)
{
	char err[1024];
	json_object *a = args_id(rn->id);
	int r = control_request(&rn->cc, "snapshot_destroy", a, NULL, err, sizeof(err));

	if (r < 0 && rn->cc.fd >= 0 && (r == -EPIPE || r == -ECONNRESET || r == -EPROTO)) {
		control_close(&rn->cc);
		if (control_open(&rn->cc, rn->o->control, err, sizeof(err)) == 0)
			r = control_request(&rn->cc, "snapshot_destroy", a, NULL, err, sizeof(err));
	}
	json_object_put(a);
	if (r < 0) {
		bk_error("run: snapshot_destroy -i %s: %s: the snapshot is left behind", rn->id, err);
		return r;
	}
	atomic_store(&live, false);
	rn->created = false;
	return 0;
}

/* ---- the backups ---- */

/* BASE with EXPORT, percent-encoded, put after its authority's '/'. */
static char *export_uri(const char *base, const char *export)
{
	const char *p = strstr(base, "://");
	char enc[3 * 256 + 1];
	size_t o = 0;

	if (!p || !(p = strchr(p + 3, '/')))
		return NULL;
	for (const char *s = export; *s && o + 4 < sizeof(enc); s++) {
		unsigned char c = (unsigned char)*s;

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("-._~", c))
			enc[o++] = (char)c;
		else
			o += (size_t)snprintf(enc + o, sizeof(enc) - o, "%%%02X", c);
	}
	enc[o] = '\0';
	return bk_format("%.*s%s%s", (int)(p + 1 - base), base, enc, p + 1);
}

static json_object *summary(const struct target *t, json_object *b, const char *repo)
{
	json_object *s = json_object_new_object(), *v;
	static const char *const keys[] = { "kind", "reason", "backup", "bytes_read", "bytes_stored" };
	char sec[32];

	json_object_object_add(s, "device", json_object_new_string(t->name));
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (json_object_object_get_ex(b, keys[i], &v))
			json_object_object_add(s, keys[i], json_object_get(v));
	json_object_object_add(s, "repo", json_object_new_string(repo));
	if (json_object_object_get_ex(b, "seconds", &v)) {
		snprintf(sec, sizeof(sec), "%.3f", json_object_get_double(v));
		json_object_object_add(s, "seconds", json_object_new_double_s(json_object_get_double(v), sec));
	}
	return s;
}

/* Back up the image of T. */
static int backup_one(struct run *rn, struct target *t)
{
	json_object *res = NULL, *b = NULL;
	const char *image;
	char *uri;
	int r;

	if ((r = request(rn, "snapshot_info", "snapshot_info", args_device(t->name), &res)) < 0)
		return r;
	image = get_str(res, "image");
	uri = image && *image ? export_uri(rn->base_uri, image) : NULL;
	json_object_put(res);
	if (!uri) {
		bk_error("run: snapshot_info -d %s: no image named", t->name);
		return -EPROTO;
	}
	struct backup_opts bo = {
		.uri = uri, .repo = rn->o->repo, .tls = rn->o->tls, .connections = rn->o->connections,
		.block_size = rn->o->block_size, .show_progress = rn->o->show_progress, .opened = rn->repo,
		.device = t->name, .key_file = rn->o->key_file, .level = -1,
		.choose = true, .full_reason = rn->attached ? "tracker newly attached" : NULL, .stop = &stop_flag,
	};
	r = backup_run(&bo, &b);
	free(uri);
	if (r == 0) {
		t->summary = summary(t, b, rn->o->repo);
		json_object_put(b);
	}
	return r;
}

/* ---- the command ---- */

static json_object *total(const struct run *rn, size_t done, double seconds)
{
	json_object *s = json_object_new_object(), *v;
	uint64_t rd = 0, st = 0;
	char sec[32];

	for (size_t i = 0; i < rn->n; i++) {
		if (!rn->t[i].summary)
			continue;
		if (json_object_object_get_ex(rn->t[i].summary, "bytes_read", &v))
			rd += (uint64_t)json_object_get_int64(v);
		if (json_object_object_get_ex(rn->t[i].summary, "bytes_stored", &v))
			st += (uint64_t)json_object_get_int64(v);
	}
	json_object_object_add(s, "devices", json_object_new_int64((int64_t)rn->n));
	json_object_object_add(s, "backed_up", json_object_new_int64((int64_t)done));
	json_object_object_add(s, "failed", json_object_new_int64((int64_t)(rn->n - done)));
	json_object_object_add(s, "bytes_read", json_object_new_int64((int64_t)rd));
	json_object_object_add(s, "bytes_stored", json_object_new_int64((int64_t)st));
	snprintf(sec, sizeof(sec), "%.3f", seconds);
	json_object_object_add(s, "seconds", json_object_new_double_s(seconds, sec));
	return s;
}

int run_backup(const struct run_opts *o, struct json_object **result)
{
	struct run rn = { .o = o, .cc = { .fd = -1 } };
	struct signals sig = { 0 };
	char err[1024];
	double t0 = bk_seconds();
	size_t failed = 0, done = 0;
	const char *cut = NULL; /* the device whose backup a signal stopped */
	json_object *prune_summary = NULL;
	int r, rd;

	*result = NULL;
	if ((r = signals_start(&sig)) < 0)
		return r;
	if ((r = control_open(&rn.cc, o->control, err, sizeof(err))) < 0) {
		bk_error("run: %s", err);
		goto out;
	}
	if ((r = find_nbd(&rn)) < 0 || (r = find_devices(&rn)) < 0 || (r = open_repo(&rn)) < 0)
		goto out;
	if (stopping()) {
		r = -EINTR;
		goto out;
	}
	/* A device with no tracker gets one; its changes are known from now on,
	 * so this backup is a full one. */
	if (!o->all && !rn.t[0].tracker) {
		json_object *a = args_device(rn.t[0].name);

		r = control_request(&rn.cc, "attach", a, NULL, err, sizeof(err));
		json_object_put(a);
		if (r < 0 && r != -EALREADY) {
			bk_error("run: attach -d %s: %s", rn.t[0].name, err);
			goto out;
		}
		rn.attached = r == 0;
	}
	if ((r = snapshot_make(&rn)) < 0)
		goto out;
	for (size_t i = 0; i < rn.n; i++) {
		if (stopping()) {
			r = -EINTR;
			break;
		}
		r = backup_one(&rn, &rn.t[i]);
		if (r == -EINTR)
			cut = rn.t[i].name;
		if (r == -EINTR || (r < 0 && stopping())) {
			r = -EINTR;
			break;
		}
		if (r < 0)
			failed++;
		else
			done++;
	}
	if (r == 0 && failed)
		r = -EIO; /* each said why */
out:
	rd = rn.created ? snapshot_remove(&rn) : 0;
	/* The retention policy, once the backups are in and the repository
	 * is let go (prune takes it alone). */
	repo2_close(rn.repo);
	rn.repo = NULL;
	if (r == 0 && rd == 0 && o->prune) {
		/* --device: that device's backups only; --all: every device's. */
		struct prune_opts po = { .repo = o->repo, .key_file = o->key_file, .keep = o->keep,
					 .device = o->all ? NULL : o->device };
		json_object *pres = NULL;

		if ((r = prune_run(&po, &pres)) < 0)
			bk_error("run: the backups are in, but prune failed (see above)");
		else
			prune_summary = pres;
	}
	/* (A snapshot left behind has had its line from snapshot_remove.) */
	if (r == -EINTR)
		bk_error("run: stopped by %s%s%s%s", signal_name(atomic_load(&stop_signal)),
			 rd < 0 ? "" : rn.id[0] ? ": snapshot destroyed" : ": no snapshot made",
			 cut ? "; nothing stored for " : "", cut ? cut : "");
	else if (r == 0 && rd < 0)
		r = rd;
	/* A line per device backed up; with --all, once backups were tried, a
	 * total whose failed= counts those not backed up. */
	if (done || (o->all && rn.id[0])) {
		*result = json_object_new_array();
		for (size_t i = 0; i < rn.n; i++)
			if (rn.t[i].summary)
				json_object_array_add(*result, json_object_get(rn.t[i].summary));
		if (o->all)
			json_object_array_add(*result, total(&rn, done, bk_seconds() - t0));
		if (prune_summary) {
			json_object *line = json_object_new_object(), *v;

			json_object_object_add(line, "prune", json_object_new_string(o->repo));
			if (json_object_object_get_ex(prune_summary, "removed", &v))
				json_object_object_add(line, "removed", json_object_new_int64(json_object_array_length(v)));
			if (json_object_object_get_ex(prune_summary, "kept", &v))
				json_object_object_add(line, "kept", json_object_new_int64(json_object_array_length(v)));
			if (json_object_object_get_ex(prune_summary, "bytes_removed", &v))
				json_object_object_add(line, "bytes_removed", json_object_get(v));
			json_object_array_add(*result, line);
		}
	}
	json_object_put(prune_summary);
	control_close(&rn.cc);
	for (size_t i = 0; i < rn.n; i++) {
		json_object_put(rn.t[i].summary);
		free(rn.t[i].name);
	}
	free(rn.t);
	free(rn.base_uri);
	signals_stop(&sig);
	return r;
}

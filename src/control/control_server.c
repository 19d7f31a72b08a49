/* The control socket server (see control_server.h).
 *
 * Each peer is checked (SO_PEERCRED, SO_PEERGROUPS) before a byte of it is
 * read: a control client is root's equal for the devices. Every request is
 * checked against the commands table before a handler sees it: malformed
 * JSON, an unknown command, unknown or mistyped arguments and oversized lines
 * all get an error response, and the client may go on. */
#include "control/control_server.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/unix_socket.h"
#include "control/wire.h"

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59 /* Linux 4.13 */
#endif

/* At most one line per this many seconds about refused peers: a flood of
 * them must not flood the log (as the NBD server's --max-connections). */
#define REFUSED_LOG_INTERVAL_S 10

struct control_client {
	struct control_server *cs;
	int fd;
	struct control_client *next;
};

struct control_server {
	const control_handler *handlers;
	void *ctx;
	int listen_fd;
	int wake[2]; /* a byte here stops the accept loop */
	char *path;
	pthread_t accept_thread;
	pthread_mutex_t lock;
	pthread_cond_t gone;
	struct control_client *clients;
	size_t n_clients;
	bool stopping;
	struct control_access access;
	uid_t self; /* our euid, always let in: its processes could ptrace us anyway */
	/* Refused peers, for the log; the accept thread's alone. */
	unsigned long refused;
	uint64_t refused_logged_ns;
};

static json_object *error_response(int err, const char *msg)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "ok", json_object_new_boolean(0));
	json_object_object_add(o, "errno", json_object_new_string(wire_errno_name(err)));
	json_object_object_add(o, "code", json_object_new_int(err < 0 ? -err : err));
	json_object_object_add(o, "message", json_object_new_string(msg && *msg ? msg : strerror(err < 0 ? -err : err)));
	return o;
}

json_object *control_dispatch(const control_handler *handlers, void *ctx, const char *line, size_t len)
{
	json_tokener *tok = json_tokener_new();
	json_object *req, *cmd, *args = NULL, *result, *resp;
	const struct command_def *def;
	char msg[512] = "";
	int r;

	if (!tok)
		return error_response(-ENOMEM, "out of memory");
	req = json_tokener_parse_ex(tok, line, (int)len);
	if (!req || json_tokener_get_error(tok) != json_tokener_success ||
	    tok->char_offset != (int)len) {
		snprintf(msg, sizeof(msg), "malformed JSON: %s",
			 req ? "trailing data after the object" : json_tokener_error_desc(json_tokener_get_error(tok)));
		json_object_put(req);
		json_tokener_free(tok);
		return error_response(-EINVAL, msg);
	}
	json_tokener_free(tok);
	if (!json_object_is_type(req, json_type_object) || !json_object_object_get_ex(req, "command", &cmd) ||
	    !json_object_is_type(cmd, json_type_string)) {
		json_object_put(req);
		return error_response(-EINVAL, "a request is an object with a string \"command\"");
	}
	def = command_find(json_object_get_string(cmd));
	if (!def) {
		snprintf(msg, sizeof(msg), "unknown command '%.64s'", json_object_get_string(cmd));
		json_object_put(req);
		return error_response(-EINVAL, msg);
	}
	json_object_object_foreach(req, key, val) {
		(void)val;
		if (strcmp(key, "command") != 0 && strcmp(key, "args") != 0) {
			snprintf(msg, sizeof(msg), "unknown request field '%.64s'", key);
			json_object_put(req);
			return error_response(-EINVAL, msg);
		}
	}
	json_object_object_get_ex(req, "args", &args);
	if (wire_check_args(def, args, msg, sizeof(msg)) < 0) {
		json_object_put(req);
		return error_response(-EINVAL, msg);
	}
	if (!handlers[def->id]) {
		json_object_put(req);
		return error_response(-ENOTSUP, "command not available");
	}
	result = json_object_new_object();
	r = handlers[def->id](ctx, args, result, msg, sizeof(msg));
	json_object_put(req);
	if (r < 0) {
		json_object_put(result);
		return error_response(r, msg);
	}
	resp = json_object_new_object();
	json_object_object_add(resp, "ok", json_object_new_boolean(1));
	json_object_object_add(resp, "result", result);
	return resp;
}

static void *client_thread(void *arg)
{
	struct control_client *cl = arg;
	struct control_server *cs = cl->cs;
	struct line_reader lr;
	char *line;
	size_t len;
	int r;

	line_reader_init(&lr, cl->fd);
	while ((r = line_reader_next(&lr, &line, &len)) != 0) {
		json_object *resp;

		if (r == -EMSGSIZE)
			resp = error_response(r, "request longer than the limit");
		else if (r < 0)
			break;
		else if (len == 0)
			continue;
		else
			resp = control_dispatch(cs->handlers, cs->ctx, line, len);
		r = wire_send(cl->fd, resp);
		json_object_put(resp);
		if (r < 0)
			break;
	}
	line_reader_free(&lr);

	pthread_mutex_lock(&cs->lock);
	for (struct control_client **pp = &cs->clients; *pp; pp = &(*pp)->next)
		if (*pp == cl) {
			*pp = cl->next;
			break;
		}
	close(cl->fd);
	if (--cs->n_clients == 0)
		pthread_cond_broadcast(&cs->gone);
	pthread_mutex_unlock(&cs->lock);
	free(cl);
	return NULL;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Is GID among the peer's supplementary groups (as of its connect())? */
static bool peer_in_group(int fd, gid_t gid)
{
	static atomic_bool warned;
	gid_t small[64], *groups = small;
	socklen_t len = sizeof(small);
	bool found = false;
	int r;

	r = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len);
	if (r < 0 && errno == ERANGE) { /* len now says how much it needs */
		groups = malloc(len);
		if (!groups)
			return false; /* refused; the peer may try again */
		r = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len);
	}
	if (r < 0) {
		/* Before Linux 4.13: the primary group only, said once. */
		if (!atomic_exchange(&warned, true))
			log_warn("control: SO_PEERGROUPS: %s; --control-group is matched against "
				 "the peer's primary group only", strerror(errno));
		if (groups != small)
			free(groups);
		return false;
	}
	for (size_t i = 0; i < len / sizeof(gid_t) && !found; i++)
		found = groups[i] == gid;
	if (groups != small)
		free(groups);
	return found;
}

/* May the peer on FD use us? CRED gets its credentials for the log. */
static bool peer_allowed(const struct control_server *cs, int fd, struct ucred *cred)
{
	socklen_t len = sizeof(*cred);

	/* Never fails on a connected Unix socket; if it did, the refusal's
	 * log line says uid 4294967295. */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) < 0) {
		*cred = (struct ucred){ .pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1 };
		return false;
	}
	if (cred->uid == 0 || cred->uid == cs->self)
		return true;
	if (!cs->access.group)
		return false;
	return cred->gid == cs->access.gid || peer_in_group(fd, cs->access.gid);
}

/* Tell a refused peer why in one error line, as the answer to the request it
 * sent or is about to send, and close it unread: nothing it sent runs. */
static void refuse(struct control_server *cs, int fd, const struct ucred *cred)
{
	char msg[160], self[32] = "", group[32] = "";
	json_object *resp;
	const char *s;
	uint64_t now = now_ns();

	if (cs->self != 0)
		snprintf(self, sizeof(self), ", uid %u", (unsigned)cs->self);
	if (cs->access.group)
		snprintf(group, sizeof(group), " and group %u", (unsigned)cs->access.gid);
	snprintf(msg, sizeof(msg), "permission denied: the control socket is for root%s%s only", self, group);
	resp = error_response(-EACCES, msg);
	s = json_object_to_json_string_ext(resp, JSON_C_TO_STRING_PLAIN);
	/* A new socket's buffer holds the line; never wait on a refused peer. */
	if (send(fd, s, strlen(s), MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
		(void)send(fd, "\n", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
	json_object_put(resp);
	close(fd);

	cs->refused++;
	if (cs->refused_logged_ns && now - cs->refused_logged_ns < (uint64_t)REFUSED_LOG_INTERVAL_S * 1000000000u)
		return;
	if (cs->refused == 1)
		log_warn("control: connection from uid %u gid %u pid %d refused: not root%s%s",
			 (unsigned)cred->uid, (unsigned)cred->gid, (int)cred->pid,
			 cs->self != 0 ? ", not bdfilterd's user" : "", cs->access.group ? ", not in the control group" : "");
	else
		log_warn("control: %lu connections refused since the last message, the latest from "
			 "uid %u gid %u pid %d", cs->refused, (unsigned)cred->uid, (unsigned)cred->gid, (int)cred->pid);
	cs->refused = 0;
	cs->refused_logged_ns = now;
}

static void *accept_loop(void *arg)
{
	struct control_server *cs = arg;
	struct pollfd pfd[2] = {
		{ .fd = cs->listen_fd, .events = POLLIN },
		{ .fd = cs->wake[0], .events = POLLIN },
	};

	for (;;) {
		struct control_client *cl;
		struct ucred cred;
		pthread_attr_t attr;
		pthread_t t;
		int fd;

		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[1].revents)
			break;
		fd = accept4(cs->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE)
				usleep(100 * 1000);
			continue;
		}
		if (!peer_allowed(cs, fd, &cred)) {
			refuse(cs, fd, &cred);
			continue;
		}
		cl = calloc(1, sizeof(*cl));
		if (!cl) {
			close(fd);
			continue;
		}
		cl->cs = cs;
		cl->fd = fd;
		pthread_mutex_lock(&cs->lock);
		cl->next = cs->clients;
		cs->clients = cl;
		cs->n_clients++;
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &attr, client_thread, cl) != 0) {
			cs->clients = cl->next;
			cs->n_clients--;
			close(fd);
			free(cl);
		}
		pthread_attr_destroy(&attr);
		pthread_mutex_unlock(&cs->lock);
	}
	return NULL;
}

/* Let GID through DIR (ours, the default socket's): 0750 of that group.
 * Through an fd opened without following links, so nothing else changes. */
static int share_dir(const char *dir, gid_t gid, char *err, size_t errlen)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0 || fchown(fd, (uid_t)-1, gid) < 0 || fchmod(fd, 0750) < 0) {
		snprintf(err, errlen, "cannot open %s to group %u: %s", dir, (unsigned)gid, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

int control_socket_bind(const char *path, const struct control_access *acc, char *err, size_t errlen)
{
	bool group = acc && acc->group;
	int fd;

	/* The default lives in /run/bdfilter, which we own: make it, root only
	 * (and the group's with one). Any other directory is the caller's. */
	if (strcmp(path, WIRE_DEFAULT_SOCKET) == 0) {
		char dir[] = WIRE_DEFAULT_SOCKET;

		*strrchr(dir, '/') = '\0';
		(void)mkdir(dir, 0700); /* if this fails, the bind below says why */
		if (group && share_dir(dir, acc->gid, err, errlen) < 0)
			return -1;
	}
	/* With a group, bound 0660 at once (no chmod, which could follow a link
	 * put in its place), then given to the group. Until then our own group
	 * could connect, and the peer check refuses it like anyone else. */
	fd = unix_socket_listen(path, group ? 0660 : 0600, err, errlen);
	if (fd < 0 || !group)
		return fd;
	if (fchownat(AT_FDCWD, path, (uid_t)-1, acc->gid, AT_SYMLINK_NOFOLLOW) < 0) {
		snprintf(err, errlen, "cannot give unix:%s to group %u: %s", path, (unsigned)acc->gid, strerror(errno));
		close(fd);
		unlink(path);
		return -1;
	}
	return fd;
}

int control_server_start(int listen_fd, const char *path, const struct control_access *acc,
			 const control_handler *handlers, void *ctx, struct control_server **out)
{
	struct control_server *cs = calloc(1, sizeof(*cs));

	if (!cs || !(cs->path = strdup(path))) {
		free(cs);
		return -ENOMEM;
	}
	cs->handlers = handlers;
	cs->ctx = ctx;
	if (acc)
		cs->access = *acc;
	cs->self = geteuid();
	cs->listen_fd = listen_fd;
	if (pipe2(cs->wake, O_CLOEXEC) < 0) {
		free(cs->path);
		free(cs);
		return -errno;
	}
	pthread_mutex_init(&cs->lock, NULL);
	pthread_cond_init(&cs->gone, NULL);
	if (pthread_create(&cs->accept_thread, NULL, accept_loop, cs) != 0) {
		close(cs->wake[0]);
		close(cs->wake[1]);
		free(cs->path);
		free(cs);
		return -EAGAIN;
	}
	*out = cs;
	return 0;
}

void control_server_stop(struct control_server *cs)
{
	if (!cs)
		return;
	if (write(cs->wake[1], "", 1) < 0)
		log_warn("cannot wake the control thread: %s", strerror(errno));
	pthread_join(cs->accept_thread, NULL);
	close(cs->listen_fd);
	unlink(cs->path);
	pthread_mutex_lock(&cs->lock);
	cs->stopping = true;
	for (struct control_client *cl = cs->clients; cl; cl = cl->next)
		shutdown(cl->fd, SHUT_RDWR);
	while (cs->n_clients > 0)
		pthread_cond_wait(&cs->gone, &cs->lock);
	pthread_mutex_unlock(&cs->lock);
	close(cs->wake[0]);
	close(cs->wake[1]);
	pthread_cond_destroy(&cs->gone);
	pthread_mutex_destroy(&cs->lock);
	free(cs->path);
	free(cs);
}

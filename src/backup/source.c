/* NBD connections and extents for the backup client, through libnbd. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backup/repo.h"
#include "backup/util.h"
#include "backup/source.h"

#define DIRTY_PREFIX "qemu:dirty-bitmap:"
/* Extents asked for in one BLOCK_STATUS: servers answer up to this much. */
#define STATUS_SPAN (1ull << 30)

char *source_bitmap_context(const char *name)
{
	char *s;

	if (strncmp(name, DIRTY_PREFIX, strlen(DIRTY_PREFIX)) == 0)
		return strdup(name);
	if (asprintf(&s, DIRTY_PREFIX "%s", name) < 0)
		return NULL;
	return s;
}

static struct nbd_handle *new_handle(void)
{
	struct nbd_handle *h = nbd_create();

	/* Buffers are filled by the server before they are used: libnbd need
	 * not zero them first. */
	if (!h || nbd_set_pread_initialize(h, false) < 0 || nbd_set_full_info(h, true) < 0 ||
	    nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0) {
		bk_error("%s", nbd_get_error());
		nbd_close(h);
		return NULL;
	}
	return h;
}

static bool is_tls_uri(const char *uri)
{
	return strncmp(uri, "nbds://", 7) == 0 || strncmp(uri, "nbds+unix://", 12) == 0 ||
	       strncmp(uri, "nbds+vsock://", 13) == 0;
}

/* The first identity in a PSK file: what a user with one key means. */
static char *psk_first_identity(const char *path)
{
	FILE *f = fopen(path, "re");
	char line[1024];
	char *id = NULL;

	if (!f)
		return NULL;
	while (!id && fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':');

		if (colon && colon > line)
			id = strndup(line, (size_t)(colon - line));
	}
	fclose(f);
	return id;
}

int source_connect_uri(struct nbd_handle *h, const char *uri, const struct source_tls *tls)
{
	int r = 0;

	/* The user's own command line may name local files in the URI
	 * (tls-certificates=, tls-psk-file=), as nbdinfo and nbdcopy allow. */
	if (nbd_set_uri_allow_local_file(h, true) < 0)
		r = -1;
	if (r == 0 && tls && (tls->creds_dir || tls->psk_file)) {
		if (!is_tls_uri(uri)) {
			bk_error("%s: --tls-creds and --tls-psk need an nbds:// or nbds+unix:// URI", uri);
			return -EINVAL;
		}
		if (tls->creds_dir && nbd_set_tls_certificates(h, tls->creds_dir) < 0)
			r = -1;
		if (r == 0 && tls->psk_file) {
			char *id = tls->username ? NULL : psk_first_identity(tls->psk_file);

			if (nbd_set_tls_psk_file(h, tls->psk_file) < 0 ||
			    ((tls->username || id) && nbd_set_tls_username(h, tls->username ? tls->username : id) < 0))
				r = -1;
			free(id);
		}
	}
	if (r == 0 && nbd_connect_uri(h, uri) < 0)
		r = -1;
	if (r < 0) {
		bk_error("cannot connect to %s: %s", uri, nbd_get_error());
		return -EIO;
	}
	return 0;
}

struct nbd_handle *source_connect(const char *uri, const struct source_tls *tls)
{
	struct nbd_handle *h = new_handle();

	if (h && source_connect_uri(h, uri, tls) < 0) {
		nbd_close(h);
		return NULL;
	}
	return h;
}

/* bdfilterd describes a snapshot image as "snapshot image of NAME
 * generation=G changes_number=P". */
static char *token(const char *desc, const char *key)
{
	size_t klen = strlen(key);

	for (const char *p = desc; (p = strstr(p, key)); p += klen)
		if (p == desc || p[-1] == ' ') {
			const char *v = p + klen;

			return strndup(v, strcspn(v, " "));
		}
	return NULL;
}

static int read_info(struct nbd_handle *h, const char *uri, struct source_info *info)
{
	int64_t size = nbd_get_size(h);
	char *cn;

	*info = (struct source_info){ .changes_number = -1 };
	if (size < 0) {
		bk_error("%s: %s", uri, nbd_get_error());
		return -EIO;
	}
	info->size = (uint64_t)size;
	info->description = nbd_get_export_description(h); /* NULL: none sent */
	if (!info->description)
		return 0;
	info->generation = token(info->description, "generation=");
	cn = token(info->description, "changes_number=");
	if (cn) {
		char *end;
		unsigned long v = strtoul(cn, &end, 10);

		if (*cn && !*end && v <= 255)
			info->changes_number = (int64_t)v;
		free(cn);
	}
	if (!info->generation || info->changes_number < 0) {
		free(info->generation);
		info->generation = NULL;
		info->changes_number = -1;
	}
	return 0;
}

struct nbd_handle *source_open(const char *uri, const struct source_tls *tls, struct source_info *info, source_choose_fn choose, void *opaque,
			       char **context, int *err)
{
	struct nbd_handle *h = new_handle();
	char *ctx = NULL;

	*context = NULL;
	*info = (struct source_info){ .changes_number = -1 };
	*err = -EIO;
	if (!h)
		return NULL;
	if (nbd_set_opt_mode(h, true) < 0) {
		bk_error("%s", nbd_get_error());
		goto fail;
	}
	if (source_connect_uri(h, uri, tls) < 0)
		goto fail;
	/* A server without NBD_OPT_INFO tells the size at GO, and no more. */
	if (nbd_opt_info(h) < 0 && nbd_get_errno() != ENOTSUP) {
		bk_error("cannot connect to %s: %s", uri, nbd_get_error());
		goto fail;
	}
	if (nbd_get_size(h) >= 0 && (*err = read_info(h, uri, info)) < 0)
		goto fail;
	if (choose && !(ctx = choose(opaque, info, err)) && *err < 0)
		goto fail;
	if (ctx && nbd_add_meta_context(h, ctx) < 0) {
		bk_error("%s", nbd_get_error());
		*err = -EIO;
		goto fail;
	}
	if (nbd_opt_go(h) < 0) {
		bk_error("cannot connect to %s: %s", uri, nbd_get_error());
		*err = -EIO;
		goto fail;
	}
	if (!info->size && (*err = read_info(h, uri, info)) < 0)
		goto fail;
	if (ctx && nbd_can_meta_context(h, ctx) != 1) {
		bk_error("%s does not offer %s (no such bitmap, or one of another generation)", uri, ctx);
		*err = -ENOENT;
		goto fail;
	}
	*context = ctx;
	*err = 0;
	return h;
fail:
	free(ctx);
	source_info_free(info);
	*info = (struct source_info){ .changes_number = -1 };
	nbd_close(h);
	return NULL;
}

void source_info_free(struct source_info *info)
{
	free(info->description);
	free(info->generation);
}

struct extents_walk {
	const char *context;
	bool dirty; /* which bits mean "take it" */
	uint64_t size;
	uint32_t block_size;
	struct block_list *l;
	uint64_t next; /* where the replies got to */
	int err;
};

static int on_extents(void *opaque, const char *metacontext, uint64_t offset, uint32_t *entries,
		      size_t nr_entries, int *error)
{
	struct extents_walk *w = opaque;

	if (strcmp(metacontext, w->context) != 0)
		return 0;
	for (size_t i = 0; i + 1 < nr_entries; i += 2) {
		uint32_t len = entries[i], flags = entries[i + 1];
		bool take = w->dirty ? (flags & 1) != 0 : (flags & LIBNBD_STATE_ZERO) == 0;

		if (take && w->err == 0)
			w->err = block_list_add(w->l, offset, len, w->block_size, w->size);
		offset += len;
	}
	w->next = offset;
	return 0;
}

int source_blocks(struct nbd_handle *h, const char *uri, const char *context, uint64_t size,
		  uint32_t block_size, struct block_list *l)
{
	struct extents_walk w = {
		.context = context,
		.dirty = strcmp(context, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0,
		.size = size,
		.block_size = block_size,
		.l = l,
	};
	uint64_t off = 0;

	while (off < size) {
		uint64_t span = size - off < STATUS_SPAN ? size - off : STATUS_SPAN;

		w.next = off;
		if (nbd_block_status(h, span, off, (nbd_extent_callback){ .callback = on_extents, .user_data = &w },
				     0) < 0) {
			bk_error("%s: block status (%s) at %" PRIu64 ": %s", uri, context, off, nbd_get_error());
			return -EIO;
		}
		if (w.err < 0) {
			bk_error("%s: %s: %s", uri, context,
				 w.err == -ENOMEM ? "out of memory" : "extents out of order");
			return w.err;
		}
		if (w.next <= off) {
			bk_error("%s: block status (%s) at %" PRIu64 " made no progress", uri, context, off);
			return -EIO;
		}
		off = w.next;
	}
	return 0;
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

char *source_uri_export(const char *uri)
{
	const char *p = strstr(uri, "://"), *end;
	char *name, *q;

	if (!p)
		return strdup("");
	p += 3;
	p += strcspn(p, "/?#"); /* the authority */
	if (*p != '/')
		return strdup("");
	p++;
	end = p + strcspn(p, "?#");
	if (!(name = malloc((size_t)(end - p) + 1)))
		return NULL;
	for (q = name; p < end; p++) {
		if (*p == '%' && p + 2 < end && hex_digit(p[1]) >= 0 && hex_digit(p[2]) >= 0) {
			*q++ = (char)(hex_digit(p[1]) << 4 | hex_digit(p[2]));
			p += 2;
		} else {
			*q++ = *p;
		}
	}
	*q = 0;
	return name;
}

/* The NBD side of a backup: connections to the server (libnbd), what the
 * export says of itself (size; bdfilterd's generation and changes_number in
 * its description), and its extents: allocated data (base:allocation) or
 * changed blocks (a qemu:dirty-bitmap: context). */
#ifndef BDF_BACKUP_SOURCE_H
#define BDF_BACKUP_SOURCE_H

#include <stdint.h>

#include <libnbd.h>

#include "backup/block_list.h"

struct source_info {
	uint64_t size;
	char *description;    /* NULL if the server sent none */
	char *generation;     /* bdfilterd's generation=, or NULL */
	int64_t changes_number; /* bdfilterd's changes_number=, or -1 */
};

/* TLS for every connection (--tls-creds, --tls-psk, --tls-username); all
 * NULL: what the URI says (nbds:// and its tls-certificates= or tls-psk-file=). */
struct source_tls {
	const char *creds_dir; /* QEMU's layout: ca-cert.pem, client-cert.pem, client-key.pem */
	const char *psk_file;  /* psktool's IDENTITY:HEXKEY lines */
	const char *username;  /* the PSK identity; NULL: the URI's user, else the file's first */
};

/* nbd_connect_uri with TLS; errors printed, a negative errno returned. */
int source_connect_uri(struct nbd_handle *h, const char *uri, const struct source_tls *tls);

/* A plain connection to URI, for reading; errors printed, NULL returned. */
struct nbd_handle *source_connect(const char *uri, const struct source_tls *tls);

/* Which meta context to ask for besides base:allocation, once the export is
 * known: a new string, or NULL with *ERR set (its message printed) or with
 * *ERR 0 for none. */
typedef char *(*source_choose_fn)(void *opaque, const struct source_info *info, int *err);

/* One connection to URI that learns what the export is (NBD_OPT_INFO: its
 * size, and bdfilterd's generation and changes_number in the description),
 * lets CHOOSE (may be NULL) pick a context from that, and then asks for it:
 * one connection, since some servers (qemu-nbd) serve one client at a time
 * and go away after it. *CONTEXT gets the context chosen, or NULL. With a
 * context, a server that does not offer it is an error. Errors printed. */
struct nbd_handle *source_open(const char *uri, const struct source_tls *tls, struct source_info *info, source_choose_fn choose, void *opaque,
			       char **context, int *err);
void source_info_free(struct source_info *info);

/* Add to L the blocks of BLOCK_SIZE holding what CONTEXT marks: with
 * base:allocation, the data (extents without NBD_STATE_ZERO); with a dirty
 * bitmap, the dirty extents. Errors printed. */
int source_blocks(struct nbd_handle *h, const char *uri, const char *context, uint64_t size,
		  uint32_t block_size, struct block_list *l);

/* The export name an NBD URI names (its path without the first '/',
 * percent-decoded, up to '?' or '#'): a new string, "" for the default
 * export; NULL when out of memory. */
char *source_uri_export(const char *uri);

/* "NAME" -> "qemu:dirty-bitmap:NAME"; a full context name is kept. */
char *source_bitmap_context(const char *name);

#endif

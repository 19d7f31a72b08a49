/* Metadata contexts: named maps of a device's blocks that a layer of its
 * stack publishes (a snapshot image's CBT, say) and exports list (NBD's
 * NBD_OPT_LIST_META_CONTEXT and NBD_CMD_BLOCK_STATUS). A context is a name
 * and the extents its publisher fills in; core knows nothing of what one
 * means. */
#ifndef BDF_CORE_META_CONTEXT_H
#define BDF_CORE_META_CONTEXT_H

/* The longest name, with its NUL. */
#define META_CONTEXT_NAME_MAX 128

/* Called for each context a layer publishes: NAME and what it tells, for
 * people. A nonzero return stops the listing and is returned. */
typedef int (*meta_context_fn)(const char *name, const char *description, void *opaque);

#endif

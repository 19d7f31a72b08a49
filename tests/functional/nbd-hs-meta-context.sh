#!/bin/bash
# Handshake: NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT.
# Before structured replies: NBD_REP_ERR_INVALID. LIST with no query, with "base:"
# and with "base:allocation" lists base:allocation (id 0); queries in unknown
# namespaces and unknown base: leaves are ignored (just ACK). SET with
# base:allocation selects it once (one REP_META_CONTEXT, nonzero id, then ACK);
# SET with "base:" or no query selects nothing. Malformed payloads (a query
# length beyond the option, trailing bytes, too short, NUL in a query) are
# NBD_REP_ERR_INVALID; an unknown export is NBD_REP_ERR_UNKNOWN.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "meta contexts"
from nbdraw import *

def be32(n): return struct.pack(">I", n)

with Client() as c:
    c.greeting()
    q = c.meta_data("disk", ["base:allocation"])
    for opt in (OPT_SET_META_CONTEXT, OPT_LIST_META_CONTEXT):
        expect([r.type for r in c.option(opt, q)], [REP_ERR_INVALID], "option %d before structured replies" % opt)
    c.structured_reply()

    for queries in ([], ["base:"], ["base:allocation"], ["base:allocation", "base:"]):
        final, ctx = c.meta_context(OPT_LIST_META_CONTEXT, "disk", queries)
        expect(final, REP_ACK, "LIST %r" % queries)
        names = [n for _, n in ctx]
        check("base:allocation" in names, "LIST %r: %r" % (queries, names))
        check(all(n.startswith("base:") for n in names) or not queries, "LIST %r: %r" % (queries, names))
        check(all(i == 0 for i, _ in ctx), "LIST ids SHOULD be 0: %r" % ctx)
    for queries in (["x-unknown:thing"], ["qemu-nope:"], ["base:nope"], ["nons:base:allocation"]):
        expect(c.option(OPT_LIST_META_CONTEXT, c.meta_data("disk", queries)),
               [(OPT_LIST_META_CONTEXT, REP_ACK, b"")], "LIST %r is ignored" % queries)
        expect(c.option(OPT_SET_META_CONTEXT, c.meta_data("disk", queries)),
               [(OPT_SET_META_CONTEXT, REP_ACK, b"")], "SET %r is ignored" % queries)
    for queries in ([], ["base:"]):
        expect(c.option(OPT_SET_META_CONTEXT, c.meta_data("disk", queries)),
               [(OPT_SET_META_CONTEXT, REP_ACK, b"")], "SET %r selects nothing" % queries)

    ctx = c.set_meta("disk", ["base:allocation", "base:allocation", "x-foo:bar"])
    expect(list(ctx), ["base:allocation"], "SET selects base:allocation once")
    check(ctx["base:allocation"] != 0, "a selected context has a nonzero id")

    bad = {
        "query length beyond the option": c.meta_data("disk", [])[:-4] + be32(1) + be32(99) + b"base:",
        "query count beyond the option": c.meta_data("disk", [])[:-4] + be32(2) + be32(5) + b"base:",
        "trailing bytes": c.meta_data("disk", ["base:allocation"]) + b"zz",
        "too short": b"\0\0\0",
        "name length beyond the option": be32(100) + b"disk" + be32(0),
        "NUL in a query": c.meta_data("disk", [b"base:alloc\0ation"]),
        "NUL in the name": c.meta_data(b"di\0k", ["base:allocation"]),
    }
    for what, data in bad.items():
        for opt in (OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT):
            expect([r.type for r in c.option(opt, data)], [REP_ERR_INVALID], "option %d: %s" % (opt, what))
    for opt in (OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT):
        expect([r.type for r in c.option(opt, c.meta_data("nope", ["base:allocation"]))], [REP_ERR_UNKNOWN],
               "option %d on an unknown export" % opt)

    # the last SET (which failed) selected nothing: select again, then GO and use it
    ctx = c.set_meta("disk", ["base:allocation"])
    c.go("disk")
    err, chunks = c.cmd(CMD_BLOCK_STATUS, 0, MiB)
    expect(err, 0, "BLOCK_STATUS")
    expect([(ch.type, ch.context_id) for ch in chunks],
           [(REPLY_TYPE_BLOCK_STATUS, ctx["base:allocation"])], "one status chunk for the context")

# a SET that fails clears an earlier selection (spec: SET replaces, even when it fails)
with Client() as c:
    c.greeting()
    c.structured_reply()
    c.set_meta("disk", ["base:allocation"])
    expect(c.option_final(OPT_SET_META_CONTEXT, b"\0\0\0"), REP_ERR_INVALID, "bad SET")
    c.go("disk")
    expect(c.cmd(CMD_BLOCK_STATUS, 0, 4096)[0], EINVAL, "BLOCK_STATUS after a failed SET")
EOF

nbd_done

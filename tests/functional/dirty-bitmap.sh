#!/bin/bash
# The CBT over NBD: each snapshot image offers qemu:dirty-bitmap:G/N ("changed
# after snapshot N of generation G"). Random writes between takes are the
# ground truth; the maps read by libnbd, nbdinfo --map and qemu-img map
# (x-dirty-bitmap) must equal it, rounded to CBT blocks: no block missed, none
# extra. Also: the description's tokens, what LIST offers, stale generations,
# image writes, REQ_ONE, two contexts at once, and destroy under a connection.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need nbdinfo qemu-img qemu-io
$PY -c 'import nbd' 2>/dev/null || skip "python3-libnbd not installed"

truncate -s 64M "$T/a.img"
truncate -s 1G "$T/diff.img"
bdf_start --device "a=$T/a.img"
"$BDFILTER" attach -d a
export SOCK T BDFILTER

$PY - <<'PYEOF' || fail "dirty bitmap"
import json, os, random, subprocess, sys, uuid
import nbd

SOCK, T, CLI = os.environ["SOCK"], os.environ["T"], os.environ["BDFILTER"]
SIZE, BLK = 64 << 20, 64 << 10
rnd = random.Random(7)

def fail(msg):
    print("FAIL:", msg, file=sys.stderr)
    sys.exit(1)

def cli(*args):
    out = subprocess.run([CLI, *args], capture_output=True, text=True)
    if out.returncode:
        fail("bdfilter %s: %s" % (" ".join(args), out.stderr))
    return dict(l.split("=", 1) for l in out.stdout.split("\n") if "=" in l)

def uri(name):
    return "nbd+unix:///%s?socket=%s" % (name, SOCK)

def take():
    sid = cli("snapshot_create", "-d", "a")["id"]
    cli("snapshot_appendstorage", "-i", sid, "-f", T + "/diff.img")
    cli("snapshot_take", "-i", sid)
    return sid

def random_writes(n):
    """Writes of random sizes at random offsets; returns the CBT blocks touched."""
    h = nbd.NBD()
    h.connect_uri(uri("a"))
    blocks = set()
    for _ in range(n):
        kind = rnd.choice(["write", "write", "zero", "trim"])
        ln = rnd.choice([1, 512, 4096, BLK, BLK + 1, 3 * BLK + 123])
        off = rnd.randrange(0, SIZE - ln)
        if kind == "write":
            h.pwrite(os.urandom(ln), off)
        elif kind == "zero":
            h.zero(ln, off)
        else:
            h.trim(ln, off)
        blocks.update(range(off // BLK, (off + ln - 1) // BLK + 1))
    h.shutdown()
    return blocks

def as_extents(blocks):
    """Dirty blocks as sorted (offset, length) runs, clipped to SIZE."""
    runs = []
    for b in sorted(blocks):
        if runs and runs[-1][0] + runs[-1][1] == b * BLK:
            runs[-1][1] += BLK
        else:
            runs.append([b * BLK, BLK])
    return [(o, min(l, SIZE - o)) for o, l in runs]

def libnbd_dirty(ctx, flags=0, step=SIZE):
    h = nbd.NBD()
    h.add_meta_context(ctx)
    h.connect_uri(uri("a-image"))
    if not h.can_meta_context(ctx):
        fail("context %s not granted" % ctx)
    runs, pos = [], 0
    while pos < SIZE:
        got = []
        def cb(metacontext, offset, entries, err):
            if metacontext == ctx:
                got.append((offset, entries))
            return 0
        h.block_status(min(step, SIZE - pos), pos, cb, flags=flags)
        if len(got) != 1:
            fail("block status at %d: %d replies for %s" % (pos, len(got), ctx))
        off, ent = got[0]
        for i in range(0, len(ent), 2):
            ln, st = ent[i], ent[i + 1]
            if st & 1:
                if runs and runs[-1][0] + runs[-1][1] == off:
                    runs[-1][1] += ln
                else:
                    runs.append([off, ln])
            off += ln
            pos = off
            if flags:
                break
    h.shutdown()
    return [tuple(r) for r in runs]

def nbdinfo_dirty(ctx):
    out = subprocess.run(["nbdinfo", "--json", "--map=" + ctx, uri("a-image")],
                         capture_output=True, text=True)
    if out.returncode:
        fail("nbdinfo --map=%s: %s" % (ctx, out.stderr))
    runs = []
    for e in json.loads(out.stdout):
        if e["type"] & 1:
            if runs and runs[-1][0] + runs[-1][1] == e["offset"]:
                runs[-1][1] += e["length"]
            else:
                runs.append([e["offset"], e["length"]])
    return [tuple(r) for r in runs]

def qemu_img_dirty(ctx):
    # qemu reports dirty areas as "data": false through x-dirty-bitmap.
    opts = "driver=nbd,export=a-image,server.type=unix,server.path=%s,x-dirty-bitmap=%s" % (SOCK, ctx)
    out = subprocess.run(["qemu-img", "map", "--output=json", "--image-opts", opts],
                         capture_output=True, text=True)
    if out.returncode:
        fail("qemu-img map %s: %s" % (ctx, out.stderr))
    runs = []
    for e in json.loads(out.stdout):
        if not e["data"]:
            if runs and runs[-1][0] + runs[-1][1] == e["start"]:
                runs[-1][1] += e["length"]
            else:
                runs.append([e["start"], e["length"]])
    return [tuple(r) for r in runs]

def contexts(name):
    out = subprocess.run(["nbdinfo", "--json", "--list", "nbd+unix:///?socket=" + SOCK],
                         capture_output=True, text=True)
    for e in json.loads(out.stdout)["exports"]:
        if e["export-name"] == name:
            return e.get("contexts", []), e.get("description", "")
    fail("export %s not listed" % name)

def check(ctx, want, what):
    for reader, name in ((libnbd_dirty, "libnbd"), (nbdinfo_dirty, "nbdinfo"), (qemu_img_dirty, "qemu-img")):
        got = reader(ctx)
        if got != want:
            fail("%s: %s map of %s:\n got  %s\n want %s" % (what, name, ctx, got[:10], want[:10]))

# Writes before the first take, between takes 1 and 2, and after take 2.
w0 = random_writes(40)
s1 = take()
cli("snapshot_destroy", "-i", s1)
w1 = random_writes(60)
s2 = take()
w2 = random_writes(30)  # on the origin after take 2: not in the image's map

info = cli("cbtinfo", "-d", "a")
G, P = info["generation_id"], int(info["changes_number"])
if P != 2:
    fail("changes_number %d after two takes" % P)
ctxs, desc = contexts("a-image")
if "generation=%s" % G not in desc.split() or "changes_number=2" not in desc.split():
    fail("image description: %r" % desc)
want = ["base:allocation"] + ["qemu:dirty-bitmap:%s/%d" % (G, n) for n in range(P)]
if sorted(ctxs) != sorted(want):
    fail("image contexts %s, want %s" % (ctxs, want))
if contexts("a")[0] != ["base:allocation"]:
    fail("origin contexts: %s" % contexts("a")[0])

check("qemu:dirty-bitmap:%s/1" % G, as_extents(w1), "since 1")
check("qemu:dirty-bitmap:%s/0" % G, as_extents(w0 | w1), "since 0")
print("# since 1: %d dirty blocks of %d written; since 0: %d" % (len(w1), SIZE // BLK, len(w0 | w1)))

# REQ_ONE and small steps give the same map.
if libnbd_dirty("qemu:dirty-bitmap:%s/1" % G, flags=nbd.CMD_FLAG_REQ_ONE) != as_extents(w1):
    fail("REQ_ONE walk differs")
if libnbd_dirty("qemu:dirty-bitmap:%s/1" % G, step=3 * BLK + 512) != as_extents(w1):
    fail("unaligned steps differ")

# Names that are not offered: a stale or made-up generation, N >= changes_number,
# malformed leaves. SET grants nothing for them, and the connection goes on.
for bad in ["qemu:dirty-bitmap:%s/1" % uuid.uuid4(), "qemu:dirty-bitmap:%s/2" % G,
            "qemu:dirty-bitmap:%s/256" % G, "qemu:dirty-bitmap:%s" % G, "qemu:dirty-bitmap:%s/01" % G,
            "qemu:dirty-bitmap:", "qemu:dirty-bitmap:%s/-1" % G]:
    h = nbd.NBD()
    h.add_meta_context(bad)
    h.add_meta_context("base:allocation")
    h.connect_uri(uri("a-image"))
    if h.can_meta_context(bad):
        fail("context %s granted" % bad)
    if not h.can_meta_context("base:allocation"):
        fail("base:allocation lost beside %s" % bad)
    h.shutdown()
h = nbd.NBD()
h.add_meta_context("qemu:dirty-bitmap:%s/1" % G)
h.connect_uri(uri("a"))
if h.can_meta_context("qemu:dirty-bitmap:%s/1" % G):
    fail("the origin grants a dirty bitmap")
h.shutdown()

# Both contexts in one request: one chunk each.
h = nbd.NBD()
ctx = "qemu:dirty-bitmap:%s/1" % G
h.add_meta_context("base:allocation")
h.add_meta_context(ctx)
h.connect_uri(uri("a-image"))
seen = []
h.block_status(SIZE, 0, lambda m, o, e, err: seen.append(m) or 0)
if sorted(seen) != sorted(["base:allocation", ctx]):
    fail("two contexts: replies for %s" % seen)

# An image write marks the image's map (it changed after snapshot 1), not the origin's data.
clean = sorted(set(range(SIZE // BLK)) - w1 - w0)[0]
h2 = nbd.NBD()
h2.connect_uri(uri("a-image"))
h2.pwrite(b"\x5a" * 4096, clean * BLK + 100)
h2.shutdown()
check(ctx, as_extents(w1 | {clean}), "after an image write")

# Destroy while a connection holds the context: EIO, not a crash.
cli("snapshot_destroy", "-i", s2)
try:
    h.block_status(SIZE, 0, lambda m, o, e, err: 0)
    fail("block status after destroy succeeded")
except nbd.Error as e:
    if e.errno != "EIO":
        fail("block status after destroy: %s" % e)
h.shutdown()

# The next take: changes since 2 are the writes after take 2, and the image
# write too: the image that backup 2 read differs there from the origin, so
# the next backup must copy that block again (blksnap marks both maps).
s3 = take()
P3 = int(cli("cbtinfo", "-d", "a")["changes_number"])
if P3 != 3:
    fail("changes_number %d after three takes" % P3)
check("qemu:dirty-bitmap:%s/2" % G, as_extents(w2 | {clean}), "since 2")
check("qemu:dirty-bitmap:%s/1" % G, as_extents(w1 | w2 | {clean}), "since 1 at take 3")
cli("snapshot_destroy", "-i", s3)
PYEOF

bdf_alive
bdf_stop

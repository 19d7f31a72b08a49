#!/bin/bash
# Limits: twice --max-connections clients try to connect; those let in each
# pipeline 32 MiB WRITEs and READs (the maximum payload) and read no reply for
# a while. The daemon's peak RSS (VmHWM) stays under --max-inflight plus a
# fixed allowance, not (connections x threads x 32 MiB); the clients over the
# limit get EOF; then every request is answered with success and the right
# data (requests wait for memory, they do not fail); once all are answered the
# RSS is back under the allowance though the clients are still connected
# (workers keep no large buffer); and a well-behaved client works.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
mkimage "$DISK" 64
MAXCONN=4
INFLIGHT_MIB=96
export MAXCONN INFLIGHT_MIB
# One 32 MiB request per connection at a time; three connections fill the total.
nbd_start --threads 8 --max-connections "$MAXCONN" \
	--max-inflight "${INFLIGHT_MIB}M" --max-inflight-per-conn 40M

$PY - <<'EOF' || fail "memory bound"
from nbdraw import *

pid = int(os.environ["BDF_PID"])
path = os.environ["DISK"]
maxconn = int(os.environ["MAXCONN"])
# Thread stacks, the per-connection receive buffers, malloc's arenas (and a
# sanitizer's own, in an ASan build): what the daemon holds besides request
# payloads. Without the bound the peak is about connections x requests x
# 32 MiB (1 GiB here).
allowance_kib = 64 * 1024
bound_kib = int(os.environ["INFLIGHT_MIB"]) * 1024 + allowance_kib
N = 32 * MiB
data = [file_bytes(path, 0, N), file_bytes(path, N, N)]

hogs, refused = [], 0
for i in range(2 * maxconn):
    c = Client(timeout=120)
    try:
        c.connect(structured=i % 2 == 1)
    except Closed:
        refused += 1
        c.close()
        continue
    hogs.append(c)

def send_all(c, blobs, err):
    try:
        for hdr, payload in blobs:
            c.send(hdr)
            if payload is not None:
                c.send(payload)
    except Exception as e:  # noqa: BLE001 - reported below
        err.append(e)

# Each hog: 2 WRITEs of what the file holds (so every READ still matches it)
# and 2 READs, all sent before any reply is read.
work = []
for c in hogs:
    blobs, want = [], {}
    for k in range(4):
        half = k % 2
        if k < 2:
            hdr, cookie = c.header(CMD_WRITE, half * N, N)
            c.pending[cookie] = (CMD_WRITE, N)
            blobs.append((hdr, data[half]))
            want[cookie] = None
        else:
            hdr, cookie = c.header(CMD_READ, half * N, N)
            c.pending[cookie] = (CMD_READ, N)
            blobs.append((hdr, None))
            want[cookie] = half
    err = []
    t = threading.Thread(target=send_all, args=(c, blobs, err))
    t.start()
    work.append((c, t, want, err))

time.sleep(3)
check(os.path.exists("/proc/%d" % pid), "bdfilterd died under the flood")
stalled_hwm = rss_kib(pid, "VmHWM")
print("# %d clients let in, %d refused; peak RSS while stalled %d MiB (bound %d MiB)"
      % (len(hogs), refused, stalled_hwm // 1024, bound_kib // 1024))
check(stalled_hwm <= bound_kib, "peak RSS %d MiB over the bound of %d MiB"
      % (stalled_hwm // 1024, bound_kib // 1024))
expect(len(hogs), maxconn, "clients let in")
expect(refused, maxconn, "clients refused")

# Now every client reads, all at once (one reading alone could wait for the
# bytes the others pin in replies they do not read): every request succeeds,
# READs return the file's data.
def drain(c, want, out):
    try:
        out.append(c.replies(list(want)))
    except Exception as e:  # noqa: BLE001 - reported below
        out.append(e)

readers = []
for c, t, want, err in work:
    out = []
    r = threading.Thread(target=drain, args=(c, want, out))
    r.start()
    readers.append((r, out))
for (c, t, want, err), (r, out) in zip(work, readers):
    r.join()
    t.join()
    check(not err, "sending failed: %r" % err)
    check(not isinstance(out[0], Exception), "reading the replies failed: %r" % out[0])
    for cookie, chunks in out[0].items():
        expect(Client.error_of(chunks), 0, "reply to cookie %d" % cookie)
        half = want[cookie]
        if half is not None:
            check(Client.assemble(half * N, N, chunks) == data[half], "READ data differs")
hwm = rss_kib(pid, "VmHWM")
print("# peak RSS after the replies %d MiB" % (hwm // 1024))
check(hwm <= bound_kib, "peak RSS %d MiB over the bound of %d MiB" % (hwm // 1024, bound_kib // 1024))
# Answered, still connected: idle workers keep no 32 MiB buffer.
rss = rss_kib(pid)
print("# RSS with the clients idle %d MiB (bound %d MiB)" % (rss // 1024, allowance_kib // 1024))
check(rss <= allowance_kib, "RSS %d MiB with every request answered" % (rss // 1024))
for c, t, want, err in work:
    c.close()
EOF

grep -q "max-connections" "$BDF_LOG" || fail "the log does not say why clients were refused"
nbd_done

#!/usr/bin/python3
"""The CBT through 20 kill -9 under write load (--state-dir: the checkpoint
and the write-intent log). Each round: start the daemon, take a snapshot, check
that its dirty bitmap covers every write acknowledged since the last backup
and that the generation held, back it up (incremental after the first full),
keep the image's digest, destroy the snapshot; then three connections write
at random and the daemon is killed with -9 after a random number of
acknowledged writes, with writes in flight. At the end every backup of the
chain restores byte for byte to the image it was taken from."""

import hashlib
import json
import os
import random
import signal
import subprocess
import threading

import nbd  # Debian's python3-libnbd

from nbdraw import Daemon, check, expect, main

SIZE = 64 << 20
ROUNDS = 20
BLOCK = 4096
BACKUP = os.path.join(os.path.dirname(os.environ["BDFILTERD"]), "bdfilter-backup")


def bdf(d, *args):
    out = subprocess.run([os.environ["BDFILTER"], "--control", d.control, "--json"] + list(args),
                         capture_output=True, text=True)
    check(out.returncode == 0, "bdfilter %s: %s" % (" ".join(args), out.stderr.strip()))
    return json.loads(out.stdout) if out.stdout.strip() else {}


def start(tmp):
    for sock in ("nbd.sock", "control.sock"):  # left by a kill -9
        if os.path.exists(os.path.join(tmp, sock)):
            os.unlink(os.path.join(tmp, sock))
    d = Daemon(tmp, ["a=%s,filter=tracker" % os.path.join(tmp, "a.img")],
               ["--state-dir", os.path.join(tmp, "state")])
    # The control socket comes after the NBD one.
    for _ in range(200):
        if os.path.exists(d.control):
            break
        threading.Event().wait(0.05)
    return d


def uri(d, name):
    return "nbd+unix:///%s?socket=%s" % (name, d.sock)


def dirty_extents(d, context):
    """The dirty runs (offset, length) of CONTEXT on the image, merged."""
    h = nbd.NBD()
    h.add_meta_context(context)
    h.connect_uri(uri(d, "a-image"))
    check(h.can_meta_context(context), "the image offers no %s" % context)
    runs, pos = [], [0]

    def cb(metacontext, offset, entries, err):
        if metacontext != context:
            return
        p = offset
        for i in range(0, len(entries), 2):
            if entries[i + 1] & 1:
                if runs and runs[-1][0] + runs[-1][1] == p:
                    runs[-1] = (runs[-1][0], runs[-1][1] + entries[i])
                else:
                    runs.append((p, entries[i]))
            p += entries[i]
        pos[0] = p

    off = 0
    while off < SIZE:
        h.block_status(SIZE - off, off, cb)
        check(pos[0] > off, "block status made no progress at %d" % off)
        off = pos[0]
    h.shutdown()
    return runs


def covered(runs, offset, length):
    for (o, l) in runs:
        if o <= offset and offset + length <= o + l:
            return True
    return False


def digest(d, name):
    h = nbd.NBD()
    h.connect_uri(uri(d, name))
    s = hashlib.sha256()
    for off in range(0, SIZE, 1 << 20):
        s.update(h.pread(1 << 20, off))
    h.shutdown()
    return s.hexdigest()


def writers(d, rnd, stop_after):
    """Three connections write 4 KiB at random until the daemon dies; the
    main thread kills it after STOP_AFTER acknowledged writes. The offsets
    acknowledged are returned."""
    acked, lock, enough = [], threading.Lock(), threading.Event()
    seeds = [rnd.randrange(1 << 30) for _ in range(3)]

    def run(seed):
        r = random.Random(seed)
        try:
            h = nbd.NBD()
            h.connect_uri(uri(d, "a"))
            while True:
                off = r.randrange(SIZE // BLOCK) * BLOCK
                h.pwrite(r.randbytes(BLOCK), off)
                with lock:
                    acked.append(off)
                    if len(acked) >= stop_after:
                        enough.set()
        except nbd.Error:
            enough.set()  # the daemon is gone

    threads = [threading.Thread(target=run, args=(s,)) for s in seeds]
    for t in threads:
        t.start()
    enough.wait(60)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    Daemon.running.remove(d)
    for t in threads:
        t.join(30)
    with lock:
        return list(acked)


def test_crashes(tmp):
    with open(os.path.join(tmp, "a.img"), "wb") as f:
        f.truncate(SIZE)
    diff = os.path.join(tmp, "diff.img")
    with open(diff, "wb") as f:
        f.truncate(256 << 20)
    repo = os.path.join(tmp, "repo")
    rnd = random.Random(20)
    digests, pending, gen, since = [], [], None, None
    for rd in range(ROUNDS + 1):
        d = start(tmp)
        info = bdf(d, "cbtinfo", "-d", "a")
        if gen is not None:
            expect(info["generation_id"], gen, "round %d: the generation after kill -9" % rd)
        sid = bdf(d, "snapshot_create", "-d", "a")["id"]
        bdf(d, "snapshot_appendstorage", "-i", sid, "-f", diff)
        bdf(d, "snapshot_take", "-i", sid)
        info = bdf(d, "cbtinfo", "-d", "a")
        gen = info["generation_id"]
        if since is not None:
            runs = dirty_extents(d, "qemu:dirty-bitmap:%s/%d" % (gen, since))
            missed = [o for o in pending if not covered(runs, o, BLOCK)]
            check(not missed, "round %d: %d acknowledged writes not in the dirty bitmap, e.g. %s" %
                  (rd, len(missed), missed[:5]))
        kind = "full" if since is None else "incremental"
        out = subprocess.run([BACKUP, kind, "--from", uri(d, "a-image"), "--repo", repo, "--json", "--quiet"],
                             capture_output=True, text=True)
        check(out.returncode == 0, "round %d: %s backup: %s" % (rd, kind, out.stderr.strip()))
        digests.append(digest(d, "a-image"))
        since = info["changes_number"]
        bdf(d, "snapshot_destroy", "-i", sid)
        if rd == ROUNDS:
            d.stop()
            break
        pending = writers(d, rnd, rnd.randrange(20, 400))
        check(pending, "round %d: no write was acknowledged" % rd)
    # Every backup of the chain, restored.
    for n, want in enumerate(digests):
        out_img = os.path.join(tmp, "restored.img")
        out = subprocess.run([BACKUP, "restore", "--repo", repo, "--at", str(n), "--to", out_img, "--quiet"],
                             capture_output=True, text=True)
        check(out.returncode == 0, "restore %d: %s" % (n, out.stderr.strip()))
        with open(out_img, "rb") as f:
            got = hashlib.sha256(f.read()).hexdigest()
        expect(got, want, "backup %d restored" % n)
        os.unlink(out_img)


if __name__ == "__main__":
    main([("crashes", test_crashes)])

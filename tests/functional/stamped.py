#!/usr/bin/python3
"""Snapshots under load, checked sector by sector.

Every 512-byte sector written carries a stamp: its LBA, the device, a sequence
number and a checksum. Several streams (each with its own NBD connections)
write random extents to both devices, alternating between them, while a
snapshot of the two devices is taken. Each stream owns its own sectors and
writes one request at a time, so its writes form a sequence; a point-in-time
image of both devices must then show, for every stream, exactly the state
after some prefix of its sequence, the same prefix on both devices (one
instant), bounded by the time the take ran. The origin must hold the replay of
every write, and the CBT after each take must mark every block written in
between (none missing) and nothing that no write touched."""

import os
import random
import struct
import subprocess
import threading
import time
import zlib

import nbd  # Debian's python3-libnbd

from nbdraw import Daemon, check, main

SECTOR = 512
STREAMS = 4
STRIPE = 16          # sectors a stream owns in a row
MAGIC = b"BDFSTAMP"
DEVICES = {"a": 32 << 20, "b": 16 << 20}
DEV_ID = {"a": 1, "b": 2}
CBT_BLOCK = 65536


def stamp(dev, lba, seq):
    head = MAGIC + struct.pack("<QQI", lba, seq, DEV_ID[dev])
    fill = struct.pack("<Q", (seq * 0x9E3779B97F4A7C15 ^ lba) & (2**64 - 1)) * 60
    body = head + fill
    return body + struct.pack("<I", zlib.crc32(body))


def parse(buf, dev, first_lba):
    """Sequence numbers of the sectors in BUF; asserts every stamp is whole."""
    out = []
    for i in range(len(buf) // SECTOR):
        s = buf[i * SECTOR:(i + 1) * SECTOR]
        check(s[:8] == MAGIC, "%s sector %d: no stamp" % (dev, first_lba + i))
        lba, seq, devid = struct.unpack("<QQI", s[8:28])
        check(zlib.crc32(s[:508]) == struct.unpack("<I", s[508:])[0],
              "%s sector %d: bad checksum (torn sector)" % (dev, first_lba + i))
        check(lba == first_lba + i and devid == DEV_ID[dev],
              "%s sector %d holds the stamp of %s sector %d" % (dev, first_lba + i, devid, lba))
        check(s == stamp(dev, lba, seq), "%s sector %d: stamp body differs" % (dev, first_lba + i))
        out.append(seq)
    return out


def owner(lba):
    return (lba // STRIPE) % STREAMS


def untouched_block(lba):
    """Every third CBT block is never written, so that the CBT can be caught
    marking what nobody wrote."""
    return (lba * SECTOR // CBT_BLOCK) % 3 == 2


def read_all(uri, dev, size):
    h = nbd.NBD()
    h.connect_uri(uri)
    seqs = []
    for off in range(0, size, 4 << 20):
        seqs += parse(h.pread(4 << 20, off), dev, off // SECTOR)
    h.shutdown()
    return seqs


class Stream(threading.Thread):
    def __init__(self, k, uris, stop, seed):
        super().__init__()
        self.k = k
        self.uris = uris
        self.stop = stop
        self.rnd = random.Random(seed * 100 + k)
        self.journal = []  # (seq, dev, lba, count, t_start, t_end)
        self.error = None

    def run(self):
        try:
            handles = {}
            for dev, uri in self.uris.items():
                handles[dev] = nbd.NBD()
                handles[dev].connect_uri(uri)
            n = 0
            while not self.stop.is_set():
                dev = "a" if n % 2 == 0 else "b"
                stripes = DEVICES[dev] // SECTOR // STRIPE
                stripe = self.rnd.randrange(self.k, stripes, STREAMS)  # stripes this stream owns
                if untouched_block(stripe * STRIPE):
                    continue
                first = self.rnd.randrange(STRIPE)
                count = self.rnd.randrange(1, STRIPE - first + 1)
                lba = stripe * STRIPE + first
                seq = n * STREAMS + self.k + 1
                data = b"".join(stamp(dev, lba + i, seq) for i in range(count))
                t0 = time.monotonic()
                handles[dev].pwrite(data, lba * SECTOR)
                self.journal.append((seq, dev, lba, count, t0, time.monotonic()))
                n += 1
            for h in handles.values():
                h.shutdown()
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e


def cli(d, *args):
    r = subprocess.run([os.environ["BDFILTER"], "--control", d.control] + list(args),
                       capture_output=True, text=True)
    check(r.returncode == 0, "bdfilter %s: %s" % (" ".join(args), r.stderr.strip()))
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


def take(d, storage, region):
    sid = cli(d, "snapshot_create", "-d", "a", "-d", "b")["id"]
    cli(d, "snapshot_appendstorage", "-i", sid, "-f", storage, "-r", region)
    t0 = time.monotonic()
    cli(d, "snapshot_take", "-i", sid)
    return sid, t0, time.monotonic()


def cbt_changed(d, dev, tmp, above):
    path = os.path.join(tmp, dev + ".map")
    cli(d, "readcbtmap", "-d", dev, "-f", path)
    m = open(path, "rb").read()
    return {i for i, v in enumerate(m) if v > above}


def blocks(lba, count):
    return set(range(lba * SECTOR // CBT_BLOCK, ((lba + count) * SECTOR - 1) // CBT_BLOCK + 1))


def check_cbt(d, tmp, writes, t_prev, t_this, above, label):
    """Blocks marked after the take at T_THIS, since the one at T_PREV."""
    for dev in DEVICES:
        changed = cbt_changed(d, dev, tmp, above)
        must, may = set(), set()
        for seq, wdev, lba, count, t0, t1 in writes:
            if wdev != dev:
                continue
            if t0 > t_prev[1] and t1 < t_this[0]:
                must |= blocks(lba, count)
            if t1 > t_prev[0] and t0 < t_this[1]:
                may |= blocks(lba, count)
        missing = must - changed
        extra = changed - may
        check(not any((b * CBT_BLOCK // SECTOR) for b in may if untouched_block(b * CBT_BLOCK // SECTOR)),
              "the load wrote a block it must not")
        check(not missing, "%s %s: CBT misses blocks %s" % (label, dev, sorted(missing)[:10]))
        check(not extra, "%s %s: CBT marks blocks nothing wrote %s" % (label, dev, sorted(extra)[:10]))
        print("# %s %s: %d blocks changed, %d had to be, %d could be" % (label, dev, len(changed), len(must), len(may)))


def t_snapshot_under_load(tmp):
    for dev, size in DEVICES.items():
        with open(os.path.join(tmp, dev + ".img"), "wb") as f:
            f.truncate(size)
    storage = os.path.join(tmp, "diff.img")
    with open(storage, "wb") as f:
        f.truncate(512 << 20)
    d = Daemon(tmp, ["%s=%s" % (dev, os.path.join(tmp, dev + ".img")) for dev in DEVICES])
    uri = {dev: "nbd+unix:///%s?socket=%s" % (dev, d.sock) for dev in DEVICES}
    image_uri = {dev: "nbd+unix:///%s-image?socket=%s" % (dev, d.sock) for dev in DEVICES}
    for dev in DEVICES:
        cli(d, "attach", "-d", dev)
        h = nbd.NBD()
        h.connect_uri(uri[dev])
        for off in range(0, DEVICES[dev], 1 << 20):
            h.pwrite(b"".join(stamp(dev, off // SECTOR + i, 0) for i in range((1 << 20) // SECTOR)), off)
        h.shutdown()

    s0, *t0 = take(d, storage, "0:262144")          # the CBT baseline
    cli(d, "snapshot_destroy", "-i", s0)
    stop = threading.Event()
    streams = [Stream(k, uri, stop, seed=1) for k in range(STREAMS)]
    for s in streams:
        s.start()
    time.sleep(1.5)
    s1, *t1 = take(d, storage, "262144:262144")      # under load
    time.sleep(1.5)
    stop.set()
    for s in streams:
        s.join()
        check(s.error is None, "stream %d: %r" % (s.k, s.error))
    writes = [w for s in streams for w in s.journal]
    print("# %d writes from %d streams, %d before the take" %
          (len(writes), STREAMS, sum(1 for w in writes if w[5] < t1[0])))
    check(sum(1 for w in writes if w[5] < t1[0]) > 100, "too few writes before the take")
    check(sum(1 for w in writes if w[4] > t1[1]) > 100, "too few writes after the take")

    # the images: per stream, one prefix of its writes, on both devices
    img = {dev: read_all(image_uri[dev], dev, DEVICES[dev]) for dev in DEVICES}
    for s in streams:
        pos = {w[0]: i for i, w in enumerate(s.journal)}
        visible = [pos[seq] for dev in DEVICES for lba, seq in enumerate(img[dev])
                   if owner(lba) == s.k and seq != 0]
        p = max(visible) if visible else -1
        expect = {dev: {} for dev in DEVICES}
        for seq, dev, lba, count, _, _ in s.journal[:p + 1]:
            for i in range(count):
                expect[dev][lba + i] = seq
        for dev in DEVICES:
            for lba, seq in enumerate(img[dev]):
                if owner(lba) == s.k:
                    check(seq == expect[dev].get(lba, 0),
                          "stream %d: image %s sector %d has seq %d, the prefix up to write %d says %d"
                          % (s.k, dev, lba, seq, p, expect[dev].get(lba, 0)))
        if p >= 0:
            check(s.journal[p][4] < t1[1], "stream %d: the image shows a write started after the take" % s.k)
        if p + 1 < len(s.journal):
            check(s.journal[p + 1][5] >= t1[0], "stream %d: a write done before the take is missing" % s.k)
    info = {dev: cli(d, "snapshot_info", "-d", dev) for dev in DEVICES}
    for dev in DEVICES:
        check(info[dev]["error_code"] == "0", "image %s corrupted: %r" % (dev, info[dev]))
    print("# images consistent; chunks copied: %s" % {dev: info[dev]["chunks_copied"] for dev in DEVICES})

    # the origin: every write, in each stream's order
    final = {dev: {} for dev in DEVICES}
    for s in streams:
        for seq, dev, lba, count, _, _ in s.journal:
            for i in range(count):
                final[dev][lba + i] = seq
    for dev in DEVICES:
        got = read_all(uri[dev], dev, DEVICES[dev])
        for lba, seq in enumerate(got):
            check(seq == final[dev].get(lba, 0), "origin %s sector %d: seq %d, want %d"
                  % (dev, lba, seq, final[dev].get(lba, 0)))

    # the CBT against the ground truth of the journal
    check_cbt(d, tmp, writes, t0, t1, 1, "take 1")
    cli(d, "snapshot_destroy", "-i", s1)
    s2, *t2 = take(d, storage, "0:262144")
    check_cbt(d, tmp, writes, t1, t2, 2, "take 2")
    cli(d, "snapshot_destroy", "-i", s2)
    check(d.proc.poll() is None, "bdfilterd died")


if __name__ == "__main__":
    main([(name[2:], fn) for name, fn in list(globals().items()) if name.startswith("t_")])

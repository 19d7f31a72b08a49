#!/usr/bin/python3
"""make soak: bdfilterd under mixed load for SOAK_MINUTES (default 10).

Usage: soak.py [BUILD_DIR]   (root; Debian's python3 with python3-libnbd)

Environment:
  SOAK_MINUTES  how long the load runs (default 10; fractions work: 0.5)
  SOAK_DIR      where the scratch directory is made (default /var/tmp);
                the script makes its own bdf-soak.XXXXXX in it and removes it
  SOAK_SEED     the random seed (default: from the clock; printed)
  SOAK_KEEP=1   keep the scratch directory (the daemon log, the state dir)
  SOAK_VERBOSE=1  log each snapshot's, restore's and verify's times

One bdfilterd (--state-dir, --fuse-dir, a control socket, a unix NBD socket)
serves two 256 MiB devices, a and b, both with the tracker attached. For
SOAK_MINUTES, at once:

- three NBD clients (processes, Debian's python3 nbd module, reconnecting now
  and then; the first over TLS: the daemon runs with --tls on and X.509
  credentials made by certtool) read, write (some with FUA), trim, write zeroes and flush on both
  devices, and one more client process does the same through a loop device
  (losetup --direct-io=on, O_DIRECT, BLKDISCARD, BLKZEROOUT) on device a's
  FUSE file. The devices are cut into extents of 4 KiB to 1 MiB,
  each owned by one client, so every client knows exactly what its blocks
  hold: a model per 4 KiB block of (client, seq) or zero. Every block written
  is stamped with its device, client, seq and offset, so a wrong block says
  whose it is. Every read is checked against the model (shared memory).
- snapshots of a, b or both are taken and destroyed every few seconds, with
  their difference storage in the scratch directory (a self-growing unlinked
  file, an appended file, a named self-growing file, ranges appended before
  and after the take). Writers hold a shared lock around each write and its
  model update; the take holds it exclusively and copies the model, so the
  image must equal that copy exactly. The images are read over NBD while the
  clients go on writing (copy-before-write under load) and checked: the blocks
  overwritten since the take and random windows, or all of it now and then.
  After each take the CBT must say the same generation and one number more.
- every 10-20 s, bdfilter-backup full or incremental (every fourth backup of a
  repository full; a new repository after eight) of one image into the
  scratch directory; after the snapshot is destroyed the backup is restored
  and compared with the model at its take (now and then an older one too),
  and the repository verified.
- the passthrough filter attached to and detached from a device every few
  seconds, under the load; the tracker must stay.
- the daemon's RSS (VmRSS) and open fds sampled every second.

At the end the clients stop, both devices are read and checked over NBD, the
loop device is detached, the daemon is stopped with SIGTERM (it must exit 0)
and the backing files are checked against the model. One summary line:

  soak: 10.0 min, ops=N (read=N write=N trim=N zero=N), snapshots=N,
  backups=N, restores=N, verifies=N, filter_cycles=N, errors=0, mismatches=0,
  rss peak=NMiB final=NMiB, fds first=N last=N

The exit status is 1 on any error (a failed request or command, an image
with error_code set, the daemon dying or not exiting 0), any mismatch, or
growth between the first and the last quarter of the run beyond these bounds:

  RSS: the median of the last quarter's samples may exceed the median of the
       first quarter's by at most max(32 MiB, 25% of the first median);
  fds: no sample of the last quarter may exceed the first quarter's maximum
       by more than 8.

Everything (the clients, the loop device, the daemon, the FUSE mount, the
scratch directory) is undone on exit, also on failure, Ctrl-C and SIGTERM.
"""

import array
import fcntl
import json
import mmap
import multiprocessing
import os
import random
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

try:
    import nbd  # Debian's python3-libnbd
except ImportError:
    sys.exit("soak: the nbd module is missing: run with /usr/bin/python3 (python3-libnbd)")

MIB = 1 << 20
BLOCK = 4096
DEV_SIZE = 256 * MIB
NBLOCKS = DEV_SIZE // BLOCK
DEVICES = ("a", "b")
DEV_ID = {"a": 1, "b": 2}
FUSE_DEV = "a"
NBD_CLIENTS = 3
FUSE_CLIENT = NBD_CLIENTS          # the loop-device client's number
EXTENT_BLOCKS = (1, 2, 4, 16, 32, 64, 128, 256)  # 4 KiB .. 1 MiB
STORAGE_LIMIT = "4G"
BACKUP_EVERY = (10.0, 20.0)        # seconds between backups
FULL_EVERY = 4                     # every 4th backup of a repository is full
REPO_ROTATE = 8                    # a new repository after this many backups
RSS_SLACK_MIB = 32
RSS_SLACK_RATIO = 0.25
FD_SLACK = 8
MAX_MISMATCH_REPORTS = 20
MAX_MISMATCHES = 200               # stop the run after this many
VERBOSE = os.environ.get("SOAK_VERBOSE", "") not in ("", "0")

BLKDISCARD = 0x1277
BLKZEROOUT = 0x127F

OPS = ("read", "write", "trim", "zero")
MAGIC = b"BDFSOAK1"
HDR = struct.Struct("<8sBBHIQQ")   # magic, device, client, 0, 0, seq, offset: 32 bytes
FILL = struct.Struct("<Q")
ZERO_BLOCK = bytes(BLOCK)
SEQ_BITS = 40
M64 = (1 << 64) - 1


_fill_cache = [None, None]


def stamp(dev_id, client, seq, off):
    """The 4 KiB block that write SEQ of CLIENT puts at OFF of a device: a
    header naming all four, then a fill that depends on all but OFF (the
    blocks of one write share it, and it is made once for them)."""
    key = (dev_id, client, seq)
    if _fill_cache[0] != key:
        _fill_cache[0] = key
        _fill_cache[1] = FILL.pack(((seq * 0x9E3779B97F4A7C15) ^ (client << 56) ^ (dev_id << 48)) & M64) * \
            ((BLOCK - HDR.size) // 8)
    return HDR.pack(MAGIC, dev_id, client, 0, 0, seq, off) + _fill_cache[1]


def model_value(client, seq):
    return (client << SEQ_BITS) | seq


def expected_block(dev, v, blk):
    if v == 0:
        return ZERO_BLOCK
    return stamp(DEV_ID[dev], v >> SEQ_BITS, v & ((1 << SEQ_BITS) - 1), blk * BLOCK)


def expected(dev, model, first, n):
    return b"".join(expected_block(dev, model[first + i], first + i) for i in range(n))


def describe(dev, v, blk):
    if v == 0:
        return "zeros"
    return "client %d seq %d" % (v >> SEQ_BITS, v & ((1 << SEQ_BITS) - 1))


def decode(buf):
    """What a 4 KiB block that was read holds, in words."""
    if buf == ZERO_BLOCK:
        return "zeros"
    if buf[:8] != MAGIC:
        nz = sum(1 for b in buf if b)
        return "no stamp (%d non-zero bytes, first bytes %s)" % (nz, buf[:16].hex())
    _, dev_id, client, _, _, seq, off = HDR.unpack(buf[:HDR.size])
    name = {v: k for k, v in DEV_ID.items()}.get(dev_id, "?%d" % dev_id)
    whole = buf == stamp(dev_id, client, seq, off)
    return "stamp of device %s client %d seq %d offset %#x%s" % (
        name, client, seq, off, "" if whole else " (torn: body differs)")


def make_layout(rnd):
    """Per device, the owner of each extent: [(first_block, nblocks, owner)]."""
    layout = {}
    for dev in DEVICES:
        owners = NBD_CLIENTS + 1 if dev == FUSE_DEV else NBD_CLIENTS
        ext, blk, k = [], 0, 0
        while blk < NBLOCKS:
            n = min(rnd.choice(EXTENT_BLOCKS), NBLOCKS - blk)
            ext.append((blk, n, k % owners))
            blk += n
            k += 1
        layout[dev] = ext
    return layout


class Failed(Exception):
    pass


MP = multiprocessing.get_context("fork")


class TakeLock:
    """Across the client processes: writers share it around a write and its
    model update; a take holds it alone (and a waiting take goes first), so no
    write is in flight at a take and the model is the image."""

    def __init__(self):
        self.cond = MP.Condition()
        self.state = MP.RawArray("q", 3)  # writers, taking, waiting

    def shared(self):
        lock, st = self, self.state

        class Ctx:
            def __enter__(self):
                with lock.cond:
                    while st[1] or st[2]:
                        lock.cond.wait()
                    st[0] += 1

            def __exit__(self, *exc):
                with lock.cond:
                    st[0] -= 1
                    if st[0] == 0:
                        lock.cond.notify_all()
        return Ctx()

    def exclusive(self):
        lock, st = self, self.state

        class Ctx:
            def __enter__(self):
                with lock.cond:
                    st[2] += 1
                    while st[1] or st[0]:
                        lock.cond.wait()
                    st[2] -= 1
                    st[1] = 1

            def __exit__(self, *exc):
                with lock.cond:
                    st[1] = 0
                    lock.cond.notify_all()
        return Ctx()


class Soak:
    def __init__(self, build, minutes, parent, seed, keep):
        self.build = build
        self.bdfilterd = os.path.join(build, "bdfilterd")
        self.bdfilter = os.path.join(build, "bdfilter")
        self.backup_bin = os.path.join(build, "bdfilter-backup")
        self.minutes = minutes
        self.parent = parent
        self.seed = seed
        self.keep = keep
        self.rnd = random.Random(seed)
        self.stop = MP.Event()
        self.lock = TakeLock()
        self.stats_lock = threading.Lock()
        # The client processes' counters: per client, its ops (OPS order),
        # mismatches and errors.
        self.client_stats = MP.RawArray("q", (NBD_CLIENTS + 1) * (len(OPS) + 2))
        self.client = None         # the client number, in a client process
        self.procs = []
        self.counts = {"snapshots": 0, "backups": 0, "restores": 0, "verifies": 0,
                       "filter_cycles": 0, "image_checks": 0}
        self.errors = []
        self.mismatches = 0        # found by the main process
        self.reported = 0          # mismatches described, in this process
        self.samples = []          # (t, rss KiB, fds, threads)
        self.dir = None
        self.proc = None
        self.loop = None
        self.threads = []
        self.t_start = None
        self.t_end = None
        # The model, shared with the client processes: per device, per 4 KiB
        # block, model_value(client, seq), or 0 for zeros.
        self.model_mm = {dev: mmap.mmap(-1, 8 * NBLOCKS) for dev in DEVICES}
        self.model = {dev: memoryview(self.model_mm[dev]).cast("Q") for dev in DEVICES}
        self.layout = make_layout(self.rnd)
        self.cleaned = False

    # ---- bookkeeping ----

    def log(self, msg):
        t = time.monotonic() - self.t_start if self.t_start else 0.0
        print("soak: [%7.1fs] %s" % (t, msg), flush=True)

    def stat_index(self, k, what):
        return k * (len(OPS) + 2) + (OPS.index(what) if what in OPS else len(OPS) + ("mismatches", "errors").index(what))

    def error(self, msg):
        if self.client is not None:
            self.client_stats[self.stat_index(self.client, "errors")] += 1
        else:
            with self.stats_lock:
                self.errors.append(msg)
        self.log("ERROR: " + msg)
        self.stop.set()

    def total(self, what):
        return sum(self.client_stats[self.stat_index(k, what)] for k in range(NBD_CLIENTS + 1))

    def all_mismatches(self):
        return self.mismatches + self.total("mismatches")

    def all_errors(self):
        return len(self.errors) + self.total("errors")

    def mismatch(self, where, dev, model, first, data):
        """DATA was read for blocks FIRST.. of DEV; the model says otherwise
        somewhere. Count and describe each wrong block."""
        bad = []
        for i in range(len(data) // BLOCK):
            blk = first + i
            want = expected_block(dev, model[blk], blk)
            got = data[i * BLOCK:(i + 1) * BLOCK]
            if got != want:
                bad.append((blk, model[blk], got))
        with self.stats_lock:
            n0 = self.reported
            self.reported += len(bad)
            if self.client is not None:
                self.client_stats[self.stat_index(self.client, "mismatches")] += len(bad)
            else:
                self.mismatches += len(bad)
        shown = 0
        for blk, v, got in bad:
            if n0 + shown >= MAX_MISMATCH_REPORTS or shown == 3:
                break
            self.log("MISMATCH: %s: device %s block %d (offset %#x): expected %s, found %s" %
                     (where, dev, blk, blk * BLOCK, describe(dev, v, blk), decode(got)))
            shown += 1
        if len(bad) > shown and n0 < MAX_MISMATCH_REPORTS:
            self.log("MISMATCH: %s: %d more wrong blocks in this read of %d, up to offset %#x" %
                     (where, len(bad) - shown, len(data) // BLOCK, bad[-1][0] * BLOCK))
        if self.all_mismatches() >= MAX_MISMATCHES:
            self.error("%d mismatches: stopping" % self.all_mismatches())
        return len(bad)

    def count(self, op, n=1):
        if self.client is not None:
            self.client_stats[self.stat_index(self.client, op)] += n
            return
        with self.stats_lock:
            self.counts[op] += n

    def check_data(self, where, dev, model, first, data):
        if data != expected(dev, model, first, len(data) // BLOCK):
            self.mismatch(where, dev, model, first, data)
            return False
        return True

    # ---- the daemon and the CLI ----

    def uri(self, export, tls=False):
        if tls:
            return "nbds+unix:///%s?socket=%s&tls-certificates=%s" % (export, self.sock, self.pki)
        return "nbd+unix:///%s?socket=%s" % (export, self.sock)

    def cli(self, *args):
        r = subprocess.run([self.bdfilter, "--control", self.control, "--json"] + list(args),
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise Failed("bdfilter %s: exit %d: %s" % (" ".join(args), r.returncode, r.stderr.strip()))
        return json.loads(r.stdout) if r.stdout.strip() else {}

    def run_backup(self, *args):
        r = subprocess.run([self.backup_bin] + list(args) + ["--json"], capture_output=True, text=True,
                           timeout=600)
        if r.returncode != 0:
            raise Failed("bdfilter-backup %s: exit %d: %s %s" % (" ".join(args), r.returncode,
                                                                   r.stderr.strip(), r.stdout.strip()))
        return json.loads(r.stdout) if r.stdout.strip() else {}

    def fuse_mounted(self):
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == self.fuse_dir and " fuse.bdfilter " in line for line in f)

    def start_daemon(self):
        args = [self.bdfilterd, "--foreground", "--nbd-listen", "unix:" + self.sock,
                "--control", self.control, "--state-dir", os.path.join(self.dir, "state"),
                "--fuse-dir", self.fuse_dir, "--tls", "on", "--tls-creds", self.pki]
        for dev in DEVICES:
            args += ["--device", "%s=%s,filter=tracker" % (dev, self.img[dev])]
        self.daemon_log = open(os.path.join(self.dir, "bdfilterd.log"), "w")

        def child():
            os.setsid()  # Ctrl-C reaches the soak, which stops the daemon in order
            try:  # and a soak killed with -9 takes the daemon with it
                import ctypes
                ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
            except Exception:  # noqa: BLE001 - best effort
                pass

        self.proc = subprocess.Popen(args, stdout=self.daemon_log, stderr=subprocess.STDOUT,
                                     preexec_fn=child)
        for _ in range(200):
            if os.path.exists(self.sock) and os.path.exists(self.control) and self.fuse_mounted():
                return
            if self.proc.poll() is not None:
                raise Failed("bdfilterd exited at start with %d" % self.proc.returncode)
            time.sleep(0.05)
        raise Failed("bdfilterd did not come up (sockets, FUSE mount)")

    def daemon_alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=40):
        try:
            with open(os.path.join(self.dir, "bdfilterd.log")) as f:
                lines = f.readlines()
        except OSError:
            return
        print("soak: --- the daemon's log, last %d of %d lines:" % (min(n, len(lines)), len(lines)))
        for line in lines[-n:]:
            print("  " + line.rstrip())

    # ---- setup and teardown ----

    def setup(self):
        os.makedirs(self.parent, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="bdf-soak.", dir=self.parent)
        self.sock = os.path.join(self.dir, "nbd.sock")
        self.control = os.path.join(self.dir, "control.sock")
        self.fuse_dir = os.path.join(self.dir, "fuse")
        self.img = {dev: os.path.join(self.dir, dev + ".img") for dev in DEVICES}
        for dev in DEVICES:
            with open(self.img[dev], "wb") as f:
                f.truncate(DEV_SIZE)
        # A trim is a punched hole: the model says it reads back as zeros.
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        with open(self.img["a"], "r+b") as f:
            if libc.fallocate(f.fileno(), 0x02 | 0x01, 0, BLOCK) != 0:  # PUNCH_HOLE | KEEP_SIZE
                raise Failed("%s cannot punch holes (fallocate: %s): a trim would not read back as "
                             "zeros; choose another SOAK_DIR" % (self.parent, os.strerror(ctypes.get_errno())))
        self.pki = os.path.join(self.dir, "pki")
        lib = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "functional", "tls-lib.sh")
        subprocess.run(["bash", "-c", '. "$0"; make_x509 "$1"', lib, self.pki], check=True)
        os.mkdir(os.path.join(self.dir, "diffdir"))
        with open(os.path.join(self.dir, "diff.img"), "wb") as f:
            f.truncate(4 << 30)
        self.start_daemon()
        r = subprocess.run(["losetup", "-f", "--show", "--direct-io=on", os.path.join(self.fuse_dir, FUSE_DEV)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise Failed("losetup on %s/%s: %s" % (self.fuse_dir, FUSE_DEV, r.stderr.strip()))
        self.loop = r.stdout.strip()
        self.log("scratch %s, seed %d, daemon pid %d, loop device %s" %
                 (self.dir, self.seed, self.proc.pid, self.loop))

    def cleanup(self):
        if self.cleaned:
            return
        self.cleaned = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.stop.set()
        for name in self.stop_processes(30):
            self.log("client %s did not stop: killed" % name)
        for t in self.threads:
            t.join(30)
            if t.is_alive():
                self.log("thread %s did not stop" % t.name)
        if self.loop:
            subprocess.run(["losetup", "-d", self.loop], capture_output=True)
            self.loop = None
        if self.daemon_alive():
            self.proc.terminate()
            try:
                self.proc.wait(40)  # a busy FUSE mount is given 10 s
            except subprocess.TimeoutExpired:
                self.log("bdfilterd did not stop after SIGTERM: killed")
                self.proc.kill()
                self.proc.wait()
        if self.dir and self.fuse_mounted():
            subprocess.run(["umount", "-l", self.fuse_dir], capture_output=True)
        if self.dir and (self.all_errors() or self.all_mismatches()):
            self.log_tail()
        if self.dir and not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        elif self.dir:
            self.log("kept %s" % self.dir)

    # ---- the threads ----

    def thread(self, name, fn, *args):
        def run():
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - every failure is reported
                if not self.stop.is_set() or not isinstance(e, (nbd.Error, OSError)):
                    self.error("%s: %s\n%s" % (name, e, traceback.format_exc()))
        t = threading.Thread(target=run, name=name, daemon=True)
        self.threads.append(t)
        t.start()

    def process(self, name, k, fn, *args):
        """A client in its own process (its own interpreter lock): the model,
        the take lock, the stop event and the counters are shared."""
        def run():
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process stops it
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            try:
                import ctypes
                ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
            except Exception:  # noqa: BLE001 - best effort
                pass
            os.nice(5)  # the daemon and the checks first: the load is not the point
            self.client = k
            self.reported = 0
            self.threads = []
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - every failure is reported
                if not self.stop.is_set() or not isinstance(e, (nbd.Error, OSError)):
                    self.error("%s: %s\n%s" % (name, e, traceback.format_exc()))
        p = MP.Process(target=run, name=name, daemon=True)
        p.start()
        self.procs.append(p)

    def stop_processes(self, timeout):
        self.stop.set()
        end = time.monotonic() + timeout
        for p in self.procs:
            p.join(max(0.1, end - time.monotonic()))
        stuck = [p.name for p in self.procs if p.is_alive()]
        for p in self.procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        self.procs = []
        return stuck

    def pick(self, rnd, client, dev):
        first, n, _ = rnd.choice(self.my_extents[client][dev])
        start = first + rnd.randrange(n)
        count = rnd.randrange(1, first + n - start + 1)
        if rnd.random() < 0.3:         # the whole extent
            start, count = first, n
        return start, count

    def new_data(self, dev, client, seq, start, count):
        return b"".join(stamp(DEV_ID[dev], client, seq, (start + i) * BLOCK) for i in range(count))

    def nbd_client(self, k, seed):
        rnd = random.Random(seed)
        seq = 0
        handles = {}
        left = 0
        while not self.stop.is_set():
            if left <= 0:  # connections come and go
                for h in handles.values():
                    h.shutdown()
                handles = {}
                for dev in DEVICES:
                    h = nbd.NBD()
                    h.set_handle_name("soak-%d-%s" % (k, dev))
                    h.set_uri_allow_local_file(True)  # tls-certificates=
                    h.connect_uri(self.uri(dev, tls=(k == 0)))
                    handles[dev] = h
                left = rnd.randrange(200, 3000)
            left -= 1
            dev = rnd.choice(DEVICES)
            h, model = handles[dev], self.model[dev]
            start, count = self.pick(rnd, k, dev)
            off, length = start * BLOCK, count * BLOCK
            op = rnd.choices(("read", "write", "trim", "zero", "flush"), (40, 40, 8, 10, 2))[0]
            if op == "read":
                self.check_data("client %d read" % k, dev, model, start, h.pread(length, off))
            elif op == "write":
                seq += 1
                data = self.new_data(dev, k, seq, start, count)
                flags = nbd.CMD_FLAG_FUA if rnd.random() < 0.1 else 0
                with self.lock.shared():
                    h.pwrite(data, off, flags)
                    model[start:start + count] = array.array("Q", [model_value(k, seq)]) * count
                if rnd.random() < 0.2:
                    self.check_data("client %d read after write" % k, dev, model, start, h.pread(length, off))
            elif op in ("trim", "zero"):
                with self.lock.shared():
                    if op == "trim":
                        h.trim(length, off)
                    else:
                        h.zero(length, off, nbd.CMD_FLAG_NO_HOLE if rnd.random() < 0.5 else 0)
                    model[start:start + count] = array.array("Q", bytes(8 * count))
                if rnd.random() < 0.3:
                    self.check_data("client %d read after %s" % (k, op), dev, model, start, h.pread(length, off))
            else:
                h.flush()
                continue
            self.count(op)
        for h in handles.values():
            h.shutdown()

    def fuse_client(self, seed):
        """The loop device on device a's FUSE file: O_DIRECT reads and writes,
        BLKDISCARD and BLKZEROOUT."""
        k, dev = FUSE_CLIENT, FUSE_DEV
        rnd = random.Random(seed)
        model = self.model[dev]
        seq = 0
        buf = mmap.mmap(-1, 256 * BLOCK)  # page-aligned, for O_DIRECT
        fd = os.open(self.loop, os.O_RDWR | os.O_DIRECT)
        try:
            while not self.stop.is_set():
                start, count = self.pick(rnd, k, dev)
                off, length = start * BLOCK, count * BLOCK
                mv = memoryview(buf)[:length]
                op = rnd.choices(("read", "write", "trim", "zero"), (40, 40, 10, 10))[0]
                if op == "read":
                    n = os.preadv(fd, [mv], off)
                    if n != length:
                        raise Failed("loop read at %#x: %d of %d bytes" % (off, n, length))
                    self.check_data("loop-device read", dev, model, start, bytes(mv))
                elif op == "write":
                    seq += 1
                    mv[:] = self.new_data(dev, k, seq, start, count)
                    with self.lock.shared():
                        n = os.pwritev(fd, [mv], off)
                        if n != length:
                            raise Failed("loop write at %#x: %d of %d bytes" % (off, n, length))
                        model[start:start + count] = array.array("Q", [model_value(k, seq)]) * count
                else:
                    with self.lock.shared():
                        fcntl.ioctl(fd, BLKDISCARD if op == "trim" else BLKZEROOUT, struct.pack("QQ", off, length))
                        model[start:start + count] = array.array("Q", bytes(8 * count))
                    if rnd.random() < 0.3:
                        os.preadv(fd, [mv], off)
                        self.check_data("loop-device read after %s" % op, dev, model, start, bytes(mv))
                mv.release()
                self.count(op)
        finally:
            os.close(fd)

    def monitor(self):
        status = "/proc/%d/status" % self.proc.pid
        fddir = "/proc/%d/fd" % self.proc.pid
        while not self.stop.is_set():
            if not self.daemon_alive():
                self.error("bdfilterd died (exit status %r)" % self.proc.poll())
                return
            try:
                rss = threads = 0
                with open(status) as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            rss = int(line.split()[1])
                        elif line.startswith("Threads:"):
                            threads = int(line.split()[1])
                fds = len(os.listdir(fddir))
            except OSError:
                self.stop.wait(0.1)
                continue
            with self.stats_lock:
                self.samples.append((time.monotonic() - self.t_start, rss, fds, threads))
            self.stop.wait(1.0)

    def filters(self, seed):
        rnd = random.Random(seed)
        while not self.stop.wait(rnd.uniform(2.0, 6.0)):
            dev = rnd.choice(DEVICES)
            self.cli("attach", "-d", dev, "-n", "passthrough")
            f = self.filter_names(dev)
            if f != ["passthrough", "tracker"]:
                raise Failed("%s: filters after attaching passthrough: %s" % (dev, f))
            self.stop.wait(rnd.uniform(0.5, 3.0))
            self.cli("detach", "-d", dev, "-n", "passthrough")
            f = self.filter_names(dev)
            if f != ["tracker"]:
                raise Failed("%s: filters after detaching passthrough: %s" % (dev, f))
            self.count("filter_cycles")

    def filter_names(self, dev):
        for d in self.cli("device_list")["devices"]:
            if d["name"] == dev:
                return d["filters"]
        raise Failed("device %s is not listed" % dev)

    # ---- snapshots and backups ----

    def create_snapshot(self, rnd, devs):
        """Create a snapshot of DEVS with difference storage in the scratch
        directory, one way or another; returns its id and what to append
        after the take."""
        dargs = [a for d in devs for a in ("-d", d)]
        mode = rnd.choice(("dir", "file", "named", "ranges"))
        later = None
        if mode == "dir":
            sid = self.cli("snapshot_create", *dargs, "-f", os.path.join(self.dir, "diffdir"),
                           "-l", STORAGE_LIMIT)["id"]
        elif mode == "named":
            sid = self.cli("snapshot_create", *dargs, "-f", os.path.join(self.dir, "diff-grow.img"),
                           "-l", STORAGE_LIMIT)["id"]
        else:
            sid = self.cli("snapshot_create", *dargs)["id"]
            diff = os.path.join(self.dir, "diff.img")
            if mode == "file":
                self.cli("snapshot_appendstorage", "-i", sid, "-f", diff)
            else:  # half before the take, half after (in sectors)
                half = (4 << 30) // 512 // 2
                self.cli("snapshot_appendstorage", "-i", sid, "-f", diff, "-r", "0:%d" % half)
                later = ("-f", diff, "-r", "%d:%d" % (half, half))
        return sid, mode, later

    def check_image(self, dev, at_take, full, rnd, label):
        h = nbd.NBD()
        h.connect_uri(self.uri(dev + "-image"))
        try:
            if h.get_size() != DEV_SIZE:
                raise Failed("%s: image size %d" % (label, h.get_size()))
            ranges = []
            if full:
                ranges = [(b, 256) for b in range(0, NBLOCKS, 256)]
            else:
                now = self.model[dev]
                changed = [i for i in range(NBLOCKS) if now[i] != at_take[i]]
                rnd.shuffle(changed)
                for b in sorted(changed[:4096]):  # in runs of up to 1 MiB
                    if ranges and ranges[-1][0] + ranges[-1][1] == b and ranges[-1][1] < 256:
                        ranges[-1] = (ranges[-1][0], ranges[-1][1] + 1)
                    else:
                        ranges.append((b, 1))
                for _ in range(8):
                    ranges.append((rnd.randrange(0, NBLOCKS - 256 + 1), 256))
            for first, n in ranges:
                if not self.check_data(label, dev, at_take, first, h.pread(n * BLOCK, first * BLOCK)):
                    break
        finally:
            h.shutdown()
        self.count("image_checks")

    def check_restore(self, dev, path, at_take, label):
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size != DEV_SIZE:
                raise Failed("%s: restored %d bytes, not %d" % (label, size, DEV_SIZE))
            for first in range(0, NBLOCKS, 256):
                if not self.check_data(label, dev, at_take, first, f.read(256 * BLOCK)):
                    return

    def snapshots(self, seed):
        rnd = random.Random(seed)
        cn = {}
        for dev in DEVICES:
            info = self.cli("cbtinfo", "-d", dev)
            cn[dev] = (info["generation_id"], info["changes_number"])
        repos = {dev: {"n": 0, "gen": 0, "models": []} for dev in DEVICES}
        next_backup = time.monotonic() + rnd.uniform(*BACKUP_EVERY) / 2
        takes = 0
        while not self.stop.is_set():
            devs = rnd.choice((("a",), ("b",), ("a", "b"), ("a", "b")))
            t0 = time.monotonic()
            sid, mode, later = self.create_snapshot(rnd, devs)
            t1 = time.monotonic()
            with self.lock.exclusive():
                t2 = time.monotonic()
                self.cli("snapshot_take", "-i", sid)
                at_take = {dev: self.model_copy(dev) for dev in devs}
            t3 = time.monotonic()
            takes += 1
            self.count("snapshots")
            label = "snapshot %d (%s, storage %s)" % (takes, "+".join(devs), mode)
            for dev in devs:  # the same generation, one number more (or the 255th take's new one)
                info = self.cli("cbtinfo", "-d", dev)
                gen, num = info["generation_id"], info["changes_number"]
                pgen, pnum = cn[dev]
                if not ((gen == pgen and num == pnum + 1) or (pnum == 254 and gen != pgen and num == 1)):
                    raise Failed("%s: %s's CBT went from %s/%d to %s/%d" % (label, dev, pgen, pnum, gen, num))
                if gen != pgen:
                    self.log("%s: %s's CBT starts generation %s at the 255th take" % (label, dev, gen))
                    repos[dev]["n"] = REPO_ROTATE  # the chain cannot go on: a new repository
                cn[dev] = (gen, num)
            if later:
                self.cli("snapshot_appendstorage", "-i", sid, *later)
            self.stop.wait(rnd.uniform(0.2, 1.5))  # the clients write meanwhile: copy-before-write
            full_check = rnd.random() < 0.15
            t4 = time.monotonic()
            for dev in devs:
                self.check_image(dev, at_take[dev], full_check, rnd, "%s image %s-image" % (label, dev))
            if VERBOSE:
                self.log("%s: create %.2f s, lock %.2f s, take %.2f s, image checks%s %.2f s" %
                         (label, t1 - t0, t2 - t1, t3 - t2, " (full)" if full_check else "", time.monotonic() - t4))
            backup = None
            if time.monotonic() >= next_backup and not self.stop.is_set():
                dev = rnd.choice(devs)
                backup = (dev, self.do_backup(rnd, dev, repos[dev], at_take[dev], label))
                next_backup = time.monotonic() + rnd.uniform(*BACKUP_EVERY)
            for dev in devs:
                info = self.cli("snapshot_info", "-d", dev)
                if info.get("error_code") != 0:
                    raise Failed("%s: snapshot_info -d %s: %s" % (label, dev, info))
            self.cli("snapshot_destroy", "-i", sid)
            left = self.cli("snapshot_collect").get("id", [])
            if left:
                raise Failed("%s: snapshots left after destroy: %s" % (label, left))
            if backup:
                self.restore_and_verify(rnd, backup[0], repos[backup[0]], backup[1])
            self.stop.wait(rnd.uniform(0.2, 1.5))

    def model_copy(self, dev):
        a = array.array("Q")
        a.frombytes(self.model_mm[dev][:])
        return a

    def repo_path(self, dev, repo):
        return os.path.join(self.dir, "repo-%s.%d" % (dev, repo["gen"]))

    def do_backup(self, rnd, dev, repo, at_take, label):
        if repo["n"] >= REPO_ROTATE:
            shutil.rmtree(self.repo_path(dev, repo))
            repo["gen"] += 1
            repo["n"] = 0
            repo["models"] = []
        n = repo["n"]
        kind = "full" if n % FULL_EVERY == 0 else "incremental"
        t0 = time.monotonic()
        out = self.run_backup(kind, "--from", self.uri(dev + "-image"), "--repo", self.repo_path(dev, repo),
                              "--connections", str(rnd.randint(1, 4)), "--quiet")
        if out.get("backup") != n or out.get("kind") != kind:
            raise Failed("%s: %s backup of %s: %s" % (label, kind, dev, out))
        repo["n"] += 1
        repo["models"].append(at_take)
        self.count("backups")
        self.log("%s: %s backup %d of %s: %d blocks, %d bytes read, %.1f s" %
                 (label, kind, n, dev, out.get("blocks", -1), out.get("bytes_read", -1), time.monotonic() - t0))
        return n

    def restore_and_verify(self, rnd, dev, repo, n):
        path = self.repo_path(dev, repo)
        points = [n]
        if n > 0 and rnd.random() < 0.3:
            points.append(rnd.randrange(n))
        for at in points:
            out_img = os.path.join(self.dir, "restored.img")
            t0 = time.monotonic()
            self.run_backup("restore", "--repo", path, "--at", str(at), "--to", out_img, "--quiet")
            t1 = time.monotonic()
            try:
                self.check_restore(dev, out_img, repo["models"][at], "restore of %s backup %d" % (dev, at))
            finally:
                os.unlink(out_img)
            self.count("restores")
            if VERBOSE:
                self.log("restore of %s backup %d: %.1f s, checked in %.1f s" %
                         (dev, at, t1 - t0, time.monotonic() - t1))
        t0 = time.monotonic()
        v = self.run_backup("verify", "--repo", path)
        if not v.get("ok") or v.get("backups") != repo["n"]:
            raise Failed("verify %s: %s" % (path, v))
        self.count("verifies")
        if VERBOSE:
            self.log("verify of %s (%d backups): %.1f s" % (path, repo["n"], time.monotonic() - t0))

    # ---- the run ----

    def final_check(self):
        for dev in DEVICES:
            h = nbd.NBD()
            h.connect_uri(self.uri(dev))
            for first in range(0, NBLOCKS, 256):
                if not self.check_data("final read of %s" % dev, dev, self.model[dev], first,
                                       h.pread(256 * BLOCK, first * BLOCK)):
                    break
            h.shutdown()

    def run(self):
        self.setup()
        self.my_extents = {k: {dev: [e for e in self.layout[dev] if e[2] == k] for dev in DEVICES}
                           for k in range(NBD_CLIENTS + 1)}
        self.t_start = time.monotonic()
        deadline = self.t_start + self.minutes * 60
        # The clients are forked before this process has threads.
        for k in range(NBD_CLIENTS):
            self.process("nbd-client-%d" % k, k, self.nbd_client, k, self.rnd.randrange(1 << 30))
        self.process("loop-client", FUSE_CLIENT, self.fuse_client, self.rnd.randrange(1 << 30))
        self.thread("monitor", self.monitor)
        self.thread("snapshots", self.snapshots, self.rnd.randrange(1 << 30))
        self.thread("filters", self.filters, self.rnd.randrange(1 << 30))
        last_report = self.t_start
        while not self.stop.is_set() and time.monotonic() < deadline:
            self.stop.wait(min(1.0, max(0.0, deadline - time.monotonic())))
            for p in self.procs:
                if p.exitcode is not None and not self.stop.is_set():
                    self.error("client %s exited (status %d)" % (p.name, p.exitcode))
            if time.monotonic() - last_report >= 60:
                last_report = time.monotonic()
                self.log("progress: %s" % self.progress())
        self.t_end = time.monotonic()
        self.stop.set()
        for name in self.stop_processes(120):
            self.error("client %s did not stop within 120 s" % name)
        for t in self.threads:
            t.join(120)
            if t.is_alive():
                self.error("thread %s did not stop within 120 s" % t.name)
        self.threads = []
        self.log("load stopped")
        if not self.all_errors() and self.daemon_alive():
            self.final_check()
            self.log("devices checked over NBD")
            left = self.cli("snapshot_collect").get("id", [])
            if left:
                self.error("snapshots left at the end: %s" % left)
        subprocess.run(["losetup", "-d", self.loop], capture_output=True)
        self.loop = None
        if self.daemon_alive():
            self.proc.terminate()
            try:
                rc = self.proc.wait(40)
            except subprocess.TimeoutExpired:
                rc = None
            if rc != 0:
                self.error("bdfilterd %s after SIGTERM" % ("did not stop" if rc is None else "exited with %d" % rc))
        if not self.all_errors():
            self.log("bdfilterd stopped")
            for dev in DEVICES:
                self.check_restore(dev, self.img[dev], self.model[dev], "backing file of %s after stop" % dev)
            self.log("backing files checked")

    def progress(self):
        with self.stats_lock:
            ops = sum(self.total(op) for op in OPS)
            rss = self.samples[-1][1] // 1024 if self.samples else 0
            fds = self.samples[-1][2] if self.samples else 0
            return ("ops=%d snapshots=%d backups=%d restores=%d filter_cycles=%d mismatches=%d rss=%dMiB fds=%d" %
                    (ops, self.counts["snapshots"], self.counts["backups"], self.counts["restores"],
                     self.counts["filter_cycles"], self.all_mismatches(), rss, fds))

    def growth(self):
        """The bounds of the header comment; returns the failures."""
        dur = (self.t_end or time.monotonic()) - self.t_start
        first = [s for s in self.samples if s[0] <= dur / 4]
        last = [s for s in self.samples if s[0] >= dur * 3 / 4]
        if len(first) < 2 or len(last) < 2:
            self.log("too few samples to judge growth (%d, %d)" % (len(first), len(last)))
            return []
        out = []
        m1 = statistics.median(s[1] for s in first)
        m4 = statistics.median(s[1] for s in last)
        allowed = max(RSS_SLACK_MIB * 1024, RSS_SLACK_RATIO * m1)
        self.log("RSS median first quarter %.1f MiB, last quarter %.1f MiB (allowed +%.1f MiB)" %
                 (m1 / 1024, m4 / 1024, allowed / 1024))
        if m4 - m1 > allowed:
            out.append("RSS grew: median %.1f MiB in the first quarter, %.1f MiB in the last (allowed +%.1f MiB)"
                       % (m1 / 1024, m4 / 1024, allowed / 1024))
        f1 = max(s[2] for s in first)
        f4 = max(s[2] for s in last)
        self.log("fds max first quarter %d, last quarter %d (allowed +%d)" % (f1, f4, FD_SLACK))
        if f4 > f1 + FD_SLACK:
            out.append("fds grew: at most %d in the first quarter, %d in the last (allowed +%d)" % (f1, f4, FD_SLACK))
        return out

    def summary(self):
        dur = ((self.t_end or time.monotonic()) - self.t_start) / 60 if self.t_start else 0.0
        rss_peak = max((s[1] for s in self.samples), default=0) / 1024
        rss_final = self.samples[-1][1] / 1024 if self.samples else 0
        fds_first = self.samples[0][2] if self.samples else 0
        fds_last = self.samples[-1][2] if self.samples else 0
        o, c = {op: self.total(op) for op in OPS}, self.counts
        return ("soak: %.1f min, ops=%d (read=%d write=%d trim=%d zero=%d), snapshots=%d, backups=%d, "
                "restores=%d, verifies=%d, filter_cycles=%d, errors=%d, mismatches=%d, "
                "rss peak=%.0fMiB final=%.0fMiB, fds first=%d last=%d" %
                (dur, sum(o.values()), o["read"], o["write"], o["trim"], o["zero"], c["snapshots"],
                 c["backups"], c["restores"], c["verifies"], c["filter_cycles"], self.all_errors(),
                 self.all_mismatches(), rss_peak, rss_final, fds_first, fds_last))


def main():
    build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
    try:
        minutes = float(os.environ.get("SOAK_MINUTES") or 10)
    except ValueError:
        sys.exit("soak: SOAK_MINUTES must be a number of minutes")
    if minutes <= 0:
        sys.exit("soak: SOAK_MINUTES must be positive")
    parent = os.environ.get("SOAK_DIR") or "/var/tmp"
    seed = int(os.environ.get("SOAK_SEED") or time.time_ns() % 1000000007)
    keep = os.environ.get("SOAK_KEEP", "") not in ("", "0")
    if os.geteuid() != 0:
        sys.exit("soak: needs root (the FUSE export, losetup)")
    if not os.path.exists("/dev/fuse"):
        sys.exit("soak: /dev/fuse is not available")
    for b in ("bdfilterd", "bdfilter", "bdfilter-backup"):
        if not os.access(os.path.join(build, b), os.X_OK):
            sys.exit("soak: %s/%s is not built" % (build, b))
    os.environ["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin:" + os.environ.get("PATH", "")

    def on_signal(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    s = Soak(build, minutes, parent, seed, keep)
    growth = []
    interrupted = False
    try:
        s.run()
        growth = s.growth()
    except KeyboardInterrupt:
        interrupted = True
        s.log("interrupted")
    except Exception as e:  # noqa: BLE001
        s.error("%s\n%s" % (e, traceback.format_exc()))
    finally:
        s.stop.set()
        s.cleanup()
    for g in growth:
        s.log("GROWTH: " + g)
    print(s.summary(), flush=True)
    if interrupted:
        sys.exit(130)
    sys.exit(1 if s.all_errors() or s.all_mismatches() or growth else 0)


if __name__ == "__main__":
    main()

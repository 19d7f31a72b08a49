#!/usr/bin/python3
"""The CBT's 255 wrap under a backup schedule: 600 snapshot takes of a tracked
device, a few writes before each, and a backup at every 7th take (incremental
while the generation holds, a full when it changed). Every backup is then
restored and compared byte for byte with what the device held at its take.

Before the fix, the first take of a new generation reported changes_number
255, the full backup recorded it, and every later incremental was refused."""

import json
import os
import random
import socket
import subprocess

import nbd  # Debian's python3-libnbd

from nbdraw import Daemon, check, main

SIZE = 2 << 20  # 32 CBT blocks of 64 KiB
TAKES = 600
EVERY = 7
WRAP = 255  # the take that starts the second generation: a backup take
BACKUP = os.path.join(os.path.dirname(os.environ["BDFILTERD"]), "bdfilter-backup")


class Control:
    """The daemon's control socket, spoken directly: 3000 commands through
    the CLI would spend most of the test starting processes."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(30)
        self.s.connect(path)
        self.buf = b""

    def __call__(self, command, **args):
        self.s.sendall(json.dumps({"command": command, "args": args}).encode() + b"\n")
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            check(chunk, "control connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        resp = json.loads(line)
        check(resp["ok"], "%s %r: %r" % (command, args, resp))
        return resp["result"]


def backup(kind, uri, repo):
    r = subprocess.run([BACKUP, kind, "--from", uri, "--repo", repo, "--json"],
                       capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


def t_600_takes_backup_every_7th(tmp):
    rng = random.Random(600)
    img = os.path.join(tmp, "d.img")
    diff = os.path.join(tmp, "diff.img")
    repo = os.path.join(tmp, "repo")
    with open(img, "wb") as f:
        f.write(rng.randbytes(SIZE))
    with open(diff, "wb") as f:
        f.truncate(64 << 20)
    model = bytearray(open(img, "rb").read())
    d = Daemon(tmp, ["d=%s,filter=tracker" % img])
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///d?socket=" + d.sock)
    image_uri = "nbd+unix:///d-image?socket=" + d.sock

    ctl = Control(d.control)
    backups = []  # (number, kind, what the device held at its take)
    generations = []
    for take in range(1, TAKES + 1):
        for _ in range(rng.randint(0, 3)):
            off = rng.randrange(0, SIZE - 8192) & ~511
            data = rng.randbytes(rng.choice([512, 4096, 8192]))
            h.pwrite(data, off)
            model[off:off + len(data)] = data
        sid = ctl("snapshot_create", device=["d"])["id"]
        ctl("snapshot_appendstorage", id=sid, file=diff)
        ctl("snapshot_take", id=sid)
        info = ctl("cbtinfo", device="d")
        if not generations or generations[-1] != info["generation_id"]:
            generations.append(info["generation_id"])
        if take % EVERY == WRAP % EVERY:
            kind = "incremental" if backups else "full"
            rc, out, err = backup(kind, image_uri, repo)
            if rc != 0 and kind == "incremental":
                check("generation changed" in err,
                      "take %d (changes_number %s): incremental refused: %s"
                      % (take, info["changes_number"], err.strip()))
                kind = "full"
                rc, out, err = backup(kind, image_uri, repo)
            check(rc == 0, "take %d: %s backup failed: %s" % (take, kind, err.strip()))
            backups.append((json.loads(out)["backup"], kind, bytes(model)))
        ctl("snapshot_destroy", id=sid)
    h.shutdown()

    fulls = sum(1 for b in backups if b[1] == "full")
    print("# %d takes, %d generations, %d backups: %d full, %d incremental"
          % (TAKES, len(generations), len(backups), fulls, len(backups) - fulls))
    check(len(generations) == 3, "600 takes span %d generations, not 3" % len(generations))
    # a full at the start and after each wrap, and nothing but incrementals between
    check(fulls == len(generations),
          "%d full backups for %d generations: incrementals were refused" % (fulls, len(generations)))

    for num, kind, want in backups:
        out = os.path.join(tmp, "r.img")
        r = subprocess.run([BACKUP, "restore", "--repo", repo, "--at", str(num), "--to", out, "--quiet"],
                           capture_output=True, text=True)
        check(r.returncode == 0, "restore --at %d: %s" % (num, r.stderr.strip()))
        check(open(out, "rb").read() == want,
              "backup %d (%s) does not restore what the device held at its take" % (num, kind))
        os.unlink(out)
    d.stop()


if __name__ == "__main__":
    main([(name[2:], fn) for name, fn in list(globals().items()) if name.startswith("t_")])

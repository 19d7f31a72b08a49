#!/usr/bin/python3
"""STARTTLS as the NBD spec says, byte by byte (nbdraw.py, Python's ssl):
with --tls require every option but STARTTLS and ABORT gets
NBD_REP_ERR_TLS_REQD and EXPORT_NAME closes; STARTTLS with data is INVALID; a
second STARTTLS under TLS is INVALID; what was negotiated in the clear is
forgotten after STARTTLS; plaintext sent behind STARTTLS before its reply is
refused (the STARTTLS injection); garbage instead of a TLS handshake, and a
client that stalls inside one, cost that connection only. Each case ends with
the daemon alive and serving a TLS client."""

import os
import socket
import ssl
import subprocess
import time

from nbdraw import *  # noqa: F401,F403

HERE = os.path.dirname(os.path.abspath(__file__))


def make_pki(tmp):
    pki = os.path.join(tmp, "pki")
    subprocess.run(["bash", "-c", '. "$0"; make_x509 "$1"', os.path.join(HERE, "tls-lib.sh"), pki],
                   check=True)
    return pki


def disk(tmp, mib=4):
    path = os.path.join(tmp, "disk.img")
    with open(path, "wb") as f:
        f.write(os.urandom(mib << 20))
    return path


def tls_client(d, pki):
    """A client under TLS, greeted and ready for options."""
    c = d.client()
    c.greeting()
    expect([r.type for r in c.starttls(os.path.join(pki, "ca-cert.pem"))], [REP_ACK], "STARTTLS")
    return c


def alive(d, pki, path):
    check(d.proc.poll() is None, "bdfilterd died (status %r)" % d.proc.poll())
    c = tls_client(d, pki)
    c.structured_reply()
    c.go("disk")
    err, data = c.read(4096, 8192)
    check(err == 0 and data == file_bytes(path, 4096, 8192), "a TLS client read wrong data")
    c.disconnect()
    c.close()


def start(tmp, mode="require"):
    pki = make_pki(tmp)
    path = disk(tmp)
    d = Daemon(tmp, ["disk=" + path], ["--tls", mode, "--tls-creds", pki, "--handshake-timeout", "2"])
    return d, pki, path


def t_require_refuses_options(tmp):
    d, pki, path = start(tmp)
    with d.client() as c:
        c.greeting()
        for opt, data in ((OPT_LIST, b""), (OPT_STRUCTURED_REPLY, b""), (OPT_EXTENDED_HEADERS, b""),
                          (OPT_INFO, Client.info_data("disk")), (OPT_GO, Client.info_data("disk")),
                          (OPT_LIST_META_CONTEXT, Client.meta_data("disk", [b"base:"])),
                          (OPT_SET_META_CONTEXT, Client.meta_data("disk", [b"base:allocation"])),
                          (99, b"unknown")):
            r = c.option(opt, data)
            expect([x.type for x in r], [REP_ERR_TLS_REQD], "option %d before STARTTLS" % opt)
        # STARTTLS with data is malformed, TLS or not
        expect([x.type for x in c.option(OPT_STARTTLS, b"x")], [REP_ERR_INVALID], "STARTTLS with data")
        expect([x.type for x in c.option(OPT_ABORT)], [REP_ACK], "ABORT before STARTTLS")
        c.expect_closed("after ABORT")
    with d.client() as c:
        c.greeting()
        c.send_option(OPT_EXPORT_NAME, b"disk")
        c.expect_closed("EXPORT_NAME without TLS")
    alive(d, pki, path)


def t_under_tls(tmp):
    d, pki, path = start(tmp)
    c = tls_client(d, pki)
    expect([x.type for x in c.option(OPT_STARTTLS)], [REP_ERR_INVALID], "a second STARTTLS")
    names = [n for n, _ in c.list_exports()]
    check("disk" in names, "LIST under TLS: %r" % (names,))
    c.structured_reply()
    c.go("disk")
    err, data = c.read(0, 1 << 20)
    check(err == 0 and data == file_bytes(path, 0, 1 << 20), "READ under TLS")
    payload = os.urandom(256 << 10)
    expect(c.write(1 << 20, payload), 0, "WRITE under TLS")
    err, data = c.read(1 << 20, 256 << 10)
    check(err == 0 and data == payload, "READ after WRITE under TLS")
    c.disconnect()
    c.close()
    alive(d, pki, path)


def t_forgotten_after_starttls(tmp):
    d, pki, path = start(tmp, mode="on")
    c = d.client()
    c.greeting()
    c.structured_reply()
    c.set_meta("disk", [b"base:allocation"])
    expect([x.type for x in c.starttls(os.path.join(pki, "ca-cert.pem"))], [REP_ACK], "STARTTLS")
    # Structured replies were negotiated in the clear: not any more.
    r = c.option(OPT_SET_META_CONTEXT, Client.meta_data("disk", [b"base:allocation"]))
    expect([x.type for x in r], [REP_ERR_INVALID], "SET_META_CONTEXT before STRUCTURED_REPLY under TLS")
    expect([x.type for x in c.option(OPT_STRUCTURED_REPLY)], [REP_ACK], "STRUCTURED_REPLY again under TLS")
    c.go("disk")
    # No context is selected now: BLOCK_STATUS is refused, reads work.
    err, data = c.read(0, 4096)
    check(err == 0 and data == file_bytes(path, 0, 4096), "READ")
    c.disconnect()
    c.close()
    alive(d, pki, path)


def t_injection(tmp):
    d, pki, path = start(tmp)
    with d.client() as c:
        c.greeting()
        # STARTTLS and, in the same packet, a plaintext option the server
        # must not take as said under TLS.
        opt = struct.pack(">QII", IHAVEOPT, OPT_STARTTLS, 0)
        more = struct.pack(">QII", IHAVEOPT, OPT_STRUCTURED_REPLY, 0)
        c.send(opt + more)
        c.wait_closed(10)  # may or may not see the ACK first; it must close
    check("data after NBD_OPT_STARTTLS" in open(os.path.join(tmp, "bdfilterd.log")).read(),
          "the log does not say why the injection was refused")
    alive(d, pki, path)


def t_garbage_handshake(tmp):
    d, pki, path = start(tmp)
    with d.client() as c:
        c.greeting()
        expect([x.type for x in c.option(OPT_STARTTLS)], [REP_ACK], "STARTTLS")
        c.send(b"\x16\x03\x01\x00\x05hello" + os.urandom(4096), may_fail=True)
        c.wait_closed(10)
    with d.client() as c:
        c.greeting()
        expect([x.type for x in c.option(OPT_STARTTLS)], [REP_ACK], "STARTTLS")
        c.send(b"GET / HTTP/1.0\r\n\r\n", may_fail=True)
        c.wait_closed(10)
    check("TLS handshake failed" in open(os.path.join(tmp, "bdfilterd.log")).read(),
          "the log does not say the handshake failed")
    alive(d, pki, path)


def t_stalled_handshake(tmp):
    d, pki, path = start(tmp)
    stalled = []
    for partial in (b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"):
        c = d.client()
        c.greeting()
        expect([x.type for x in c.option(OPT_STARTTLS)], [REP_ACK], "STARTTLS")
        c.send(partial)
        stalled.append(c)
    # Others are served while those two stall.
    alive(d, pki, path)
    t0 = time.monotonic()
    for c in stalled:
        # --handshake-timeout 2: closed by the server, well within 30 s.
        c.wait_closed(30)
        c.close()
    check(time.monotonic() - t0 < 30, "stalled TLS handshakes were not cut")
    check("TLS handshake timed out" in open(os.path.join(tmp, "bdfilterd.log")).read(),
          "the log does not say the handshake timed out")
    alive(d, pki, path)


def t_off_refuses_starttls(tmp):
    path = disk(tmp)
    d = Daemon(tmp, ["disk=" + path])
    with d.client() as c:
        c.greeting()
        expect([x.type for x in c.option(OPT_STARTTLS)], [REP_ERR_POLICY], "STARTTLS with TLS off")
        c.structured_reply()
        c.go("disk")
        check(c.read(0, 512) == (0, file_bytes(path, 0, 512)), "READ in the clear")
        c.disconnect()


if __name__ == "__main__":
    main([
        ("require refuses options", t_require_refuses_options),
        ("under TLS", t_under_tls),
        ("forgotten after STARTTLS", t_forgotten_after_starttls),
        ("plaintext injected behind STARTTLS", t_injection),
        ("garbage instead of a TLS handshake", t_garbage_handshake),
        ("stalled TLS handshake", t_stalled_handshake),
        ("TLS off refuses STARTTLS", t_off_refuses_starttls),
    ])

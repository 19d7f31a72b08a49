#!/usr/bin/python3
"""s3proxy.py: an HTTP front for s3rver in the S3 store's tests.

s3rver 3.7.1 checks only the access key id of an AWS Signature V4 request
("Signature version 4 calculation is unimplemented" in its authentication.js):
a wrong secret passes. This proxy checks what S3 checks, written from AWS's
SigV4 specification independently of curl: the signature over the canonical
request (path, sorted query, signed headers, payload hash), the credential
scope's region and service, the clock skew, that every x-amz-* header is
signed, the payload against x-amz-content-sha256 (XAmzContentSHA256Mismatch)
and Content-MD5 (BadDigest), and a session token when --token is given. Then
it forwards the request to s3rver (--upstream) and relays the answer.

It also plays the broken servers of the tests:
  --fail-first N      the first N requests get --fail-status (503) SlowDown
  --garbage           every answer is bytes that are not HTTP
  --not-s3            every answer is HTTP 200 with an HTML page
  --stall             requests are read and never answered
  --stall-put FILE    a PUT's body is read in part, FILE created, then nothing
Every request is logged to --log as "METHOD PATH STATUS".
It listens on 127.0.0.1, on a free port that it writes to --port-file.
Standard library only.
"""
import argparse
import base64
import datetime
import hashlib
import hmac
import http.client
import http.server
import os
import re
import socketserver
import sys
import threading
import time
import urllib.parse

ARGS = None
LOG_LOCK = threading.Lock()
COUNT_LOCK = threading.Lock()
COUNT = [0]

AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([^/,]+)/(\d{8})/([^/,]+)/([^/,]+)/aws4_request, ?"
    r"SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$")


def log(line):
    if ARGS.log:
        with LOG_LOCK, open(ARGS.log, "a") as f:
            f.write(line + "\n")


def enc(s):
    return urllib.parse.quote(s, safe="-_.~")


def s3_error(code, message):
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code><Message>%s</Message>'
            '<RequestId>s3proxy</RequestId></Error>' % (code, message.replace("&", "&amp;").replace("<", "&lt;"))).encode()


class Reject(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def sign_key(secret, date, region, service):
    k = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


def verify(handler, body):
    h = handler.headers
    auth = h.get("Authorization")
    if not auth:
        raise Reject(403, "AccessDenied", "Anonymous access is forbidden")
    m = AUTH_RE.match(auth)
    if not m:
        raise Reject(400, "AuthorizationHeaderMalformed", "The authorization header is malformed")
    access, date, region, service, signed, signature = m.groups()
    if access != ARGS.access_key:
        raise Reject(403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.")
    if region != ARGS.region or service != "s3":
        raise Reject(400, "AuthorizationHeaderMalformed",
                     "The authorization header is malformed; the region '%s' is wrong; expecting '%s'" % (region, ARGS.region))
    amzdate = h.get("x-amz-date", "")
    try:
        t = datetime.datetime.strptime(amzdate, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        raise Reject(403, "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
    if not amzdate.startswith(date):
        raise Reject(403, "SignatureDoesNotMatch", "The credential's date is not the request's")
    if abs(time.time() - t.timestamp()) > 900:
        raise Reject(403, "RequestTimeTooSkewed", "The difference between the request time and the current time is too large.")
    names = signed.split(";")
    if names != sorted(names) or "host" not in names:
        raise Reject(403, "SignatureDoesNotMatch", "SignedHeaders are not sorted or lack host")
    present = {k.lower() for k in h.keys()}
    for must in ("x-amz-date", "x-amz-content-sha256"):
        if must not in present:
            raise Reject(400, "InvalidRequest", "Missing required header for this request: " + must)
    unsigned = sorted(n for n in present if n.startswith("x-amz-") and n not in names)
    if unsigned:
        raise Reject(403, "AccessDenied", "There were headers present in the request which were not signed: " + ",".join(unsigned))
    canon_headers = ""
    for n in names:
        vals = h.get_all(n)
        if vals is None:
            raise Reject(403, "SignatureDoesNotMatch", "A signed header is absent: " + n)
        canon_headers += "%s:%s\n" % (n, ",".join(" ".join(v.strip().split()) for v in vals))
    path, _, query = handler.path.partition("?")
    canon_uri = urllib.parse.quote(urllib.parse.unquote(path), safe="/-_.~")
    params = []
    for part in query.split("&") if query else []:
        k, _, v = part.partition("=")
        params.append((enc(urllib.parse.unquote(k)), enc(urllib.parse.unquote(v))))
    canon_query = "&".join("%s=%s" % kv for kv in sorted(params))
    payload_hash = h.get("x-amz-content-sha256")
    creq = "\n".join([handler.command, canon_uri, canon_query, canon_headers, signed, payload_hash])
    sts = "\n".join(["AWS4-HMAC-SHA256", amzdate, "%s/%s/s3/aws4_request" % (date, region),
                     hashlib.sha256(creq.encode()).hexdigest()])
    want = hmac.new(sign_key(ARGS.secret_key, date, region, "s3"), sts.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, signature):
        raise Reject(403, "SignatureDoesNotMatch",
                     "The request signature we calculated does not match the signature you provided. "
                     "Check your key and signing method.")
    if payload_hash != "UNSIGNED-PAYLOAD" and payload_hash != hashlib.sha256(body).hexdigest():
        raise Reject(400, "XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match what was computed.")
    md5 = h.get("Content-MD5")
    if md5 is not None and md5 != base64.b64encode(hashlib.md5(body).digest()).decode():
        raise Reject(400, "BadDigest", "The Content-MD5 you specified did not match what we received.")
    if ARGS.token is not None:
        if h.get("x-amz-security-token") != ARGS.token:
            raise Reject(403, "InvalidToken", "The provided token is malformed or otherwise invalid.")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def handle(self):
        if ARGS.garbage:
            self.request.recv(65536)
            log("? ? garbage")
            self.request.sendall(b"\x00\x17 this is not HTTP, nor S3, at all \xff\r\n\r\n")
            return
        super().handle()

    def reply(self, status, body, headers=(), close=False):
        log("%s %s %d" % (self.command, self.path, status))
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def serve(self):
        if ARGS.stall:
            log("%s %s stalled" % (self.command, self.path))
            time.sleep(3600)
            return
        if ARGS.stall_put and self.command == "PUT":
            self.rfile.read(min(65536, int(self.headers.get("Content-Length") or 0)))
            log("%s %s stalled" % (self.command, self.path))
            open(ARGS.stall_put, "w").close()
            time.sleep(3600)
            return
        body = self.body()
        if ARGS.not_s3:
            self.reply(200, b"<html><body><h1>Welcome to nginx!</h1></body></html>\n",
                       [("Content-Type", "text/html")])
            return
        with COUNT_LOCK:
            COUNT[0] += 1
            n = COUNT[0]
        if n <= ARGS.fail_first:
            self.reply(ARGS.fail_status, s3_error("SlowDown", "Please reduce your request rate."),
                       [("Content-Type", "application/xml")])
            return
        try:
            verify(self, body)
        except Reject as r:
            self.reply(r.status, s3_error(r.code, r.message), [("Content-Type", "application/xml")])
            return
        up = http.client.HTTPConnection(ARGS.upstream, timeout=120)
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("connection", "keep-alive", "expect", "transfer-encoding", "content-length")}
        headers["Content-Length"] = str(len(body))
        try:
            up.request(self.command, self.path, body=body, headers=headers)
            r = up.getresponse()
            data = r.read()
        except OSError as e:
            self.reply(502, ("s3rver: %s\n" % e).encode(), [("Content-Type", "text/plain")])
            return
        finally:
            up.close()
        keep = [(k, v) for k, v in r.getheaders()
                if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length", "date", "server")]
        self.reply(r.status, data, keep)

    do_GET = do_PUT = do_DELETE = do_HEAD = do_POST = serve


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--upstream", default="")
    p.add_argument("--port-file", required=True)
    p.add_argument("--log")
    p.add_argument("--access-key", default="S3RVER")
    p.add_argument("--secret-key", default="S3RVER")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--token")
    p.add_argument("--fail-first", type=int, default=0)
    p.add_argument("--fail-status", type=int, default=503)
    p.add_argument("--garbage", action="store_true")
    p.add_argument("--not-s3", action="store_true")
    p.add_argument("--stall", action="store_true")
    p.add_argument("--stall-put")
    ARGS = p.parse_args()
    srv = Server(("127.0.0.1", 0), Handler)
    tmp = ARGS.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.rename(tmp, ARGS.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())

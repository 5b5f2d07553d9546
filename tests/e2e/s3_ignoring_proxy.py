#!/usr/bin/env python3
"""An S3 endpoint that ignores put-if-absent: a reverse proxy to a real S3 server (moto) that
drops If-None-Match / If-Match headers, as some S3-compatible servers effectively do.

  s3_ignoring_proxy.py LISTEN_PORT UPSTREAM_URL
  s3_ignoring_proxy.py LISTEN_PORT UPSTREAM_URL --count FILE

With --count it keeps every header (a faithful proxy) and appends "METHOD PATH?QUERY" per
request to FILE: what a test counts the store's requests with.
"""
import http.client
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DROPPED = {"if-none-match", "if-match", "host", "content-length", "transfer-encoding", "connection"}


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _forward(self):
        up = urllib.parse.urlparse(self.server.upstream)
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        dropped = DROPPED - {"if-none-match", "if-match"} if self.server.count else DROPPED
        headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
        if self.server.count:
            with self.server.lock:
                with open(self.server.count, "a") as f:
                    f.write(f"{self.command} {self.path}\n")
        # Keep the original Host so signatures computed by the client still verify.
        headers["Host"] = self.headers.get("host", up.netloc)
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Proxy)
    server.upstream = sys.argv[2]
    server.count = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--count" else None
    import threading
    server.lock = threading.Lock()
    server.serve_forever()

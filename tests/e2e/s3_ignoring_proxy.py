#!/usr/bin/env python3
"""An S3 endpoint that ignores put-if-absent: a reverse proxy to a real S3 server (moto) that
drops If-None-Match / If-Match headers, as some S3-compatible servers effectively do.

  s3_ignoring_proxy.py LISTEN_PORT UPSTREAM_URL
  s3_ignoring_proxy.py LISTEN_PORT UPSTREAM_URL [--count FILE] [--lose-commits N]

With any option it keeps every header (a faithful proxy). --count appends "METHOD PATH?QUERY"
per request to FILE: what a test counts the store's requests with. --lose-commits N forwards
the first N conditional PUTs of Delta commits (`_delta_log/<version>.json`) and then answers
each as if it had failed: the odd ones with a 500 (which the client retries, to find the key
taken), the even ones by closing the connection without an answer. The commit is written;
the writer does not hear so.
"""
import re
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
        dropped = DROPPED - {"if-none-match", "if-match"} if self.server.faithful else DROPPED
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
        if self._lose(resp.status):
            return
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    def _lose(self, status):
        """True when this answer is to be lost (--lose-commits): the request was forwarded."""
        if not (self.command == "PUT" and status == 200 and "if-none-match" in
                {k.lower() for k in self.headers.keys()} and COMMIT.search(self.path)):
            return False
        with self.server.lock:
            if self.server.lose <= 0:
                return False
            self.server.lose -= 1
            self.server.lost += 1
            lost = self.server.lost
        if lost % 2 == 1:
            body = b"<Error><Code>InternalError</Code><Message>lost by the test proxy</Message></Error>"
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.close_connection = True
            self.connection.shutdown(2)
        return True

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward


COMMIT = re.compile(r"/_delta_log/\d{20}\.json$")

if __name__ == "__main__":
    import argparse
    import threading
    args = argparse.ArgumentParser()
    args.add_argument("port", type=int)
    args.add_argument("upstream")
    args.add_argument("--count")
    args.add_argument("--lose-commits", type=int, default=0)
    opts = args.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", opts.port), Proxy)
    server.upstream = opts.upstream
    server.count = opts.count
    server.lose, server.lost = opts.lose_commits, 0
    server.faithful = bool(opts.count or opts.lose_commits)
    server.lock = threading.Lock()
    server.serve_forever()

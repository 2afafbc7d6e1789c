"""The shop's web server: serves the release's public/, /checkout, /health and
/metrics (Prometheus's text format: requests by status, and their time, labelled
with the release) on SHOP_PORT.

Installed into the release's virtualenv (<release>/venv), it runs as the console
script venv/bin/shop-web. SIGHUP makes it re-exec that script through the path it
was started by, so a server started as <root>/current/venv/bin/shop-web picks up the
release `current` now points to, keeping its pid (what `restart = { signal = "HUP",
pidfile = ... }` expects).
"""
import http.server
import os
import random
import signal
import sys
import threading
import time

# The release directory this code runs from: the one above the virtualenv.
RELEASE = os.path.dirname(os.path.realpath(sys.prefix))


# The share of checkouts that fail with a 500 (a release with a bug sets it).
CHECKOUT_FAILURES = 0.0

# Requests served, by status, and the seconds they took: since this process started.
COUNTS = {}
SECONDS = [0.0]
LOCK = threading.Lock()


def release():
    """The release this code was unpacked as: the name of its directory."""
    return os.path.basename(RELEASE)


def counted(status, seconds):
    with LOCK:
        COUNTS[status] = COUNTS.get(status, 0) + 1
        SECONDS[0] += seconds


def metrics():
    """Prometheus's text exposition format."""
    with LOCK:
        counts = dict(COUNTS)
        seconds = SECONDS[0]
    label = f'release="{release()}"'
    lines = ["# TYPE shop_requests_total counter"]
    for status in sorted(set(counts) | {200, 500}):
        lines.append(f'shop_requests_total{{{label},status="{status}"}} {counts.get(status, 0)}')
    lines.append("# TYPE shop_request_seconds_total counter")
    lines.append(f"shop_request_seconds_total{{{label}}} {seconds}")
    return ("\n".join(lines) + "\n").encode()


class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=os.path.join(RELEASE, "public"), **kwargs)

    def send_response(self, code, message=None):
        self.status = code
        super().send_response(code, message)

    def reply(self, status, body, content_type="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            self.reply(200, f"ok {release()}\n".encode())
            return
        if self.path == "/metrics":
            self.reply(200, metrics(), "text/plain; version=0.0.4")
            return
        started = time.monotonic()
        if self.path == "/checkout":
            status = 500 if random.random() < CHECKOUT_FAILURES else 200
            self.reply(status, b"checked out\n" if status == 200 else b"error\n")
        else:
            super().do_GET()
            status = getattr(self, "status", 200)
        counted(status, time.monotonic() - started)

    def log_message(self, format, *args):
        sys.stderr.write(f"{release()}: {format % args}\n")


def reexec(_signum, _frame):
    # The script, not sys.executable: the release `current` points to now brings
    # its own interpreter and packages.
    script = os.path.abspath(sys.argv[0])
    os.execv(script, [script] + sys.argv[1:])


def serve(port):
    signal.signal(signal.SIGHUP, reexec)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.serve_forever()


def main():
    serve(int(os.environ.get("SHOP_PORT", "8080")))

"""The example shop: a tiny HTTP app that reports its release on /health.

SIGHUP makes it re-exec itself through the path it was started by, so a server
started as <root>/current/bin/shop-web picks up the release `current` now points to,
keeping its pid (what `restart = { signal = "HUP", pidfile = ... }` expects).
"""
import http.server
import os
import signal
import sys

# The release directory this code runs from (through `current`, resolved).
ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


def release():
    """The release this code was unpacked as: the name of its directory."""
    return os.path.basename(ROOT)


class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=os.path.join(ROOT, "public"), **kwargs)

    def do_GET(self):
        if self.path == "/health":
            body = f"ok {release()}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, format, *args):
        sys.stderr.write(f"{release()}: {format % args}\n")


def reexec(_signum, _frame):
    os.execv(sys.executable, [sys.executable, os.path.abspath(sys.argv[0])] + sys.argv[1:])


def serve(port):
    signal.signal(signal.SIGHUP, reexec)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.serve_forever()

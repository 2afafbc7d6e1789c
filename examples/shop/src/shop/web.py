"""The shop's web server: serves the release's public/ and /health on SHOP_PORT.

Installed into the release's virtualenv (<release>/venv), it runs as the console
script venv/bin/shop-web. SIGHUP makes it re-exec that script through the path it
was started by, so a server started as <root>/current/venv/bin/shop-web picks up the
release `current` now points to, keeping its pid (what `restart = { signal = "HUP",
pidfile = ... }` expects).
"""
import http.server
import os
import signal
import sys

# The release directory this code runs from: the one above the virtualenv.
RELEASE = os.path.dirname(os.path.realpath(sys.prefix))


def release():
    """The release this code was unpacked as: the name of its directory."""
    return os.path.basename(RELEASE)


class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=os.path.join(RELEASE, "public"), **kwargs)

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

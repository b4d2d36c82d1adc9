"""A web of faults on loopback, for the crawler's tests: each path serves one
way a real site breaks. `hits` counts requests per path, and per path with its query when it
has one (a fresh query starts a fault that fails once over again)."""

from __future__ import annotations

import gzip
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.pages import CANAL_STORY, article_html

ARTICLE = article_html("Canal drained", CANAL_STORY, site_name="Canal Courier")
CAFE_STORY = [
    "Le café de la gare rouvre ses portes après l'été, a déclaré la mairie mardi matin.",
    "Les nouveaux gérants ont repeint la façade et gardé le vieux comptoir en zinc.",
    "Le menu du déjeuner change chaque semaine et les crêpes restent au prix d'avant.",
    "Les habitués du marché du samedi pourront y déposer leurs paniers jusqu'à midi.",
]
MAX_BYTES = 200_000  # the size cap the fault tests fetch with
SLOW_S = 3  # longer than the tests' timeout
HANG_S = 30  # longer than any test waits: a server that never answers


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:  # a client that gives up is expected here
        pass


class FaultServer:
    def __init__(self, crawl_delay: float | None = None) -> None:
        self.hits: Counter[str] = Counter()
        self.crawl_delay = crawl_delay
        self.asked: list[tuple[float, str]] = []  # (time.monotonic(), path) of every request
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server name
                path = self.path.split("?")[0]
                server.hits[path] += 1
                server.asked.append((time.monotonic(), self.path))
                server.hits[self.path] += 1 if self.path != path else 0
                server.serve(self, path, server.hits[self.path])

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @staticmethod
    def _send(handler, status: int, body: bytes, content_type: str = "text/html; charset=utf-8", **headers) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            handler.send_header(name.replace("_", "-"), value)
        handler.end_headers()
        handler.wfile.write(body)

    def serve(self, h, path: str, hit: int) -> None:  # noqa: C901, PLR0912 - one branch per fault
        send = self._send
        if path == "/robots.txt":
            delay = f"Crawl-delay: {self.crawl_delay:g}\n" if self.crawl_delay else ""
            send(h, 200, f"User-agent: *\nDisallow: /private/\n{delay}".encode(), "text/plain")
        elif path.startswith("/hang"):
            time.sleep(HANG_S)
        elif path in ("/article", "/private/page"):
            send(h, 200, ARTICLE.encode())
        elif path == "/slow":
            time.sleep(SLOW_S)
            send(h, 200, ARTICLE.encode())
        elif path == "/reset":
            # close with RST: SO_LINGER on, zero timeout
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()
            h.close_connection = True
        elif path in ("/not-found", "/gone"):
            send(h, 404 if path == "/not-found" else 410, b"<html><body>no such page</body></html>")
        elif path == "/busy-once":
            if hit == 1:
                send(h, 429, b"slow down", "text/plain", Retry_After="1")
            else:
                send(h, 200, ARTICLE.encode())
        elif path == "/unavailable-once":
            if hit == 1:
                send(h, 503, b"try again", "text/plain")
            else:
                send(h, 200, ARTICLE.encode())
        elif path == "/unavailable":
            send(h, 503, b"down for maintenance", "text/plain", Retry_After="0")
        elif path == "/loop":
            send(h, 302, b"", Location="/loop")
        elif path.startswith("/hop/"):
            left = int(path.rsplit("/", 1)[1])
            if left:
                send(h, 302, b"", Location=f"/hop/{left - 1}")
            else:
                send(h, 200, ARTICLE.encode())
        elif path == "/report.pdf":
            send(h, 200, b"%PDF-1.4\n% not a web page\n", "application/pdf")
        elif path == "/photo.png":
            send(h, 200, b"\x89PNG\r\n\x1a\n" + bytes(64), "image/png")
        elif path == "/data.json":
            send(h, 200, b'{"story": "canal"}', "application/json")
        elif path == "/huge":
            send(h, 200, b"<html><body><p>" + b"word " * (MAX_BYTES // 2) + b"</p></body></html>")
        elif path == "/bomb":
            payload = gzip.compress(b"<html><body>" + b"a" * (MAX_BYTES * 20) + b"</body></html>")
            send(h, 200, payload, Content_Encoding="gzip")
        elif path == "/latin1-said-utf8":
            body = article_html("Café reopens", CAFE_STORY).replace('<meta charset="utf-8">', "")
            send(h, 200, body.encode("latin-1"), "text/html; charset=utf-8")
        elif path == "/no-charset":
            body = article_html("Café reopens", CAFE_STORY).replace('<meta charset="utf-8">', "")
            send(h, 200, body.encode("utf-8"), "text/html")
        elif path == "/empty":
            send(h, 200, b"")
        elif path == "/script-only":
            send(
                h, 200, b"<html><head><script>document.write('loading')</script></head><body><script>app()</script></body></html>"
            )
        elif path == "/menu-only":
            send(h, 200, b"<html><body><nav><a href='/a'>Home</a> <a href='/b'>News</a></nav></body></html>")
        else:
            send(h, 404, b"")

"""A fault injector in front of the local cloud's APIs, on 127.0.0.1 only.

One small reverse proxy per upstream service (keystone, nova, neutron, glance, placement,
cinder), each on a port of its own; a client reaches the cloud through it with a
clouds.yaml profile whose ``auth_url`` and ``<service>_endpoint_override`` name the proxy
ports (:func:`FaultProxy.clouds_profile`).  Tests tell it to fail the next N requests that
match a method and a path pattern::

    proxy.inject("compute", "POST", r"/servers$", status=503, count=1)
    proxy.inject("network", "PUT", r"/floatingips/", action="reset")
    proxy.inject("placement", "GET", r"/resource_providers", action="delay", seconds=3)

Actions: ``status`` (answer with that status and a JSON error, the request never reaches
the cloud), ``delay`` (forward after a pause), ``reset`` (close the connection without an
answer), ``hang`` (hold the connection ``seconds``, then close it) and ``lost`` (the
request reaches the cloud and is carried out, then the answer is dropped and the
connection closed: the client cannot know whether it happened).  Every request is
logged (:attr:`FaultProxy.log`), so a test can assert what a flow asked for.

Why not mitmproxy: its scripting API would do, but it is a large dependency (and its own
CA, HTTP/2, asyncio loop) for plain HTTP on loopback; the standard library's
``http.server`` and ``http.client`` are enough here and start in milliseconds.
"""

import http.client
import http.server
import json
import re
import socket
import socketserver
import threading
import time
import urllib.parse

HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
}


class Rule:
    def __init__(self, method, pattern, action, count, status, seconds):
        self.method = method.upper() if method else None
        self.pattern = re.compile(pattern)
        self.action, self.count, self.status, self.seconds = action, count, status, seconds
        self.hits = 0

    def matches(self, method, path):
        return (
            self.count != 0
            and (self.method is None or self.method == method)
            and self.pattern.search(path) is not None
        )


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FaultProxy:
    """Proxies for ``upstreams`` ({service: "http://127.0.0.1:port[/prefix]"})."""

    def __init__(self, upstreams):
        self.upstreams = dict(upstreams)
        self.ports, self.rules, self.log = {}, {}, []
        self._servers = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ control

    def inject(self, service, method, pattern, action="status", status=503, count=1, seconds=0):
        """Fail the next ``count`` (-1: every) requests of ``service`` matching ``method``
        and the regular expression ``pattern`` (searched in the path and query)."""
        if service not in self.upstreams:
            raise ValueError("no proxy for %s (have: %s)" % (service, ", ".join(self.upstreams)))
        if action not in ("status", "delay", "reset", "hang", "lost"):
            raise ValueError("unknown action %s" % action)
        rule = Rule(method, pattern, action, count, status, seconds)
        with self._lock:
            self.rules.setdefault(service, []).append(rule)
        return rule

    def clear(self):
        """No more faults, and a fresh request log."""
        with self._lock:
            self.rules.clear()
            del self.log[:]

    def requests(self, service=None, method=None, pattern=None):
        """The logged requests (service, method, path, status or action), filtered."""
        rx = re.compile(pattern) if pattern else None
        return [
            r
            for r in list(self.log)
            if (service is None or r[0] == service)
            and (method is None or r[1] == method)
            and (rx is None or rx.search(r[2]))
        ]

    def _take(self, service, method, path):
        with self._lock:
            for rule in self.rules.get(service, []):
                if rule.matches(method, path):
                    if rule.count > 0:
                        rule.count -= 1
                    rule.hits += 1
                    return rule
        return None

    # ------------------------------------------------------------------ life

    def start(self):
        for service, upstream in self.upstreams.items():
            server = _Server(("127.0.0.1", 0), self._handler(service, upstream))
            self.ports[service] = server.server_address[1]
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self._servers.append(server)
        return self

    def stop(self):
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def url(self, service):
        up = urllib.parse.urlsplit(self.upstreams[service])
        return "http://127.0.0.1:%d%s" % (self.ports[service], up.path.rstrip("/"))

    def clouds_profile(self, base):
        """A clouds.yaml entry like ``base`` whose every API goes through the proxies."""
        out = json.loads(json.dumps(base))
        out.setdefault("auth", {})["auth_url"] = self.url("identity")
        for service in self.upstreams:
            if service != "identity":
                out["%s_endpoint_override" % service.replace("-", "_")] = self.url(service)
        return out

    def _handler(self, service, upstream):
        proxy = self
        up = urllib.parse.urlsplit(upstream)
        up_netloc = up.netloc.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _drop(self):
                """Close the connection without an answer."""
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def _relay(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                method = self.command
                rule = proxy._take(service, method, self.path)  # pylint: disable=protected-access
                if rule is not None:
                    proxy.log.append((service, method, self.path, rule.action))
                    if rule.action == "status":
                        data = json.dumps(
                            {"error": {"code": rule.status, "message": "injected fault"}}
                        ).encode()
                        self.send_response(rule.status)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return
                    if rule.action in ("reset", "hang"):
                        if rule.action == "hang":
                            time.sleep(rule.seconds)
                        self._drop()
                        return
                    time.sleep(rule.seconds)  # delay, then forward
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                headers["Host"] = up.netloc
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=300)
                try:
                    conn.request(method, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                # discovery documents and the catalog name the real port: point them here
                data = data.replace(up_netloc, b"127.0.0.1:%d" % proxy.ports[service])
                if rule is None:
                    proxy.log.append((service, method, self.path, resp.status))
                elif rule.action == "lost":  # carried out upstream; the answer never arrives
                    self._drop()
                    return
                if method == "HEAD":
                    data = b""
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _relay

        return Handler

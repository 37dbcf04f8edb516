"""Reference servers: what one gevent process can do on this machine, without the proxy's code.

`hello`: gevent's WSGIServer answering every POST with a fixed ~320-byte JSON reply (no upstream).
`relay`: the same server forwarding the request body to BACKEND_URL + the same path through a
urllib3 pool and returning the upstream's reply (the least a gevent + urllib3 proxy must do).
Both set TCP_NODELAY on the listening socket (accepted sockets inherit it on Linux). Their
figures sit beside the proxy's in the table to tell a slow machine from a slow proxy.

Run: PORT=8090 BACKEND_URL=http://127.0.0.1:8081 python bench/reference_app.py relay
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

import urllib3  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402
from mock_upstream import openai_completion  # noqa: E402

HELLO = openai_completion("mock")


def hello_app(environ, start_response):
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(HELLO)))])
    return [HELLO]


def relay_app(backend_url):
    pool = urllib3.connection_from_url(backend_url, maxsize=256)
    headers = {"Content-Type": "application/json"}

    def app(environ, start_response):
        body = environ["wsgi.input"].read()
        resp = pool.urlopen("POST", environ["PATH_INFO"], body=body, headers=headers,
                            retries=False, preload_content=True)
        data = resp.data
        start_response(f"{resp.status} OK", [("Content-Type", "application/json"),
                                              ("Content-Length", str(len(data)))])
        return [data]
    return app


def with_health(app):
    def wrapped(environ, start_response):
        if environ["PATH_INFO"] == "/health":
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
            return [b"OK"]
        return app(environ, start_response)
    return wrapped


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "hello"
    app = with_health(hello_app if mode == "hello" else relay_app(os.environ["BACKEND_URL"]))
    listener = WSGIServer.get_listener((os.environ.get("HOST", "127.0.0.1"),
                                        int(os.environ["PORT"])), backlog=1024,
                                       family=socket.AF_INET)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    WSGIServer(listener, app, log=None).serve_forever()


if __name__ == "__main__":
    main()

"""Request heads whose body framing is ambiguous (#10 item 13): each must get 400 and a closed connection,
and the request smuggled behind it must not be answered. Shared by the tests of both servers."""

SMUGGLED = b"GET /api/version HTTP/1.1\r\nHost: x\r\nX-Request-ID: smuggled\r\n\r\n"
AMBIGUOUS_FRAMING = {
    "two different Content-Length lines": b"Content-Length: 5\r\nContent-Length: 60\r\n",
    "a Content-Length list of two values": b"Content-Length: 5, 60\r\n",
    "Content-Length with Transfer-Encoding": b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    "Transfer-Encoding with Content-Length": b"Transfer-Encoding: chunked\r\nContent-Length: 60\r\n",
    "chunked twice in one line": b"Transfer-Encoding: chunked, chunked\r\n",
    "chunked twice in two lines": b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    "a coding after chunked": b"Transfer-Encoding: chunked, identity\r\n",
    "a folded Content-Length": b"Content-Length: 5\r\n 60\r\n",
    "a Content-Length folded onto its own line": b"Content-Length:\r\n 60\r\n",
    "space between the name and the colon": b"Content-Length : 60\r\n",
    "a tab between the name and the colon": b"Transfer-Encoding\t: chunked\r\n",
    "a signed Content-Length": b"Content-Length: +60\r\n",
    "a Content-Length with an underscore": b"Content-Length: 6_0\r\n",
    "a hexadecimal Content-Length": b"Content-Length: 0x3c\r\n",
    "a negative Content-Length": b"Content-Length: -1\r\n",
    "a Content-Length with a space inside": b"Content-Length: 6 0\r\n",
    "a header line without a colon": b"Content-Length 60\r\n",
    "a header line with a bare CR": b"X-A: 1\rContent-Length: 60\r\n",
}

"""Hypothesis strategies for valid HTTP/1.1 messages as wire bytes, varied where the
grammar allows variation (case of names, whitespace around values, chunk boundaries
and extensions, trailers, reason phrases, pipelining) and inside what both our parser
and h11 accept (see the divergences in ``test_http_differential``)."""

from __future__ import annotations

from hypothesis import strategies as st

TCHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
VCHARS = "".join(chr(c) for c in range(0x21, 0x7F))
OBS_TEXT = "".join(chr(c) for c in range(0x80, 0x100))

tokens = st.text(alphabet=TCHARS, min_size=1, max_size=10)
# Field names that are none of the fields a parser interprets.
plain_names = tokens.map(lambda t: "X-" + t)
values = st.text(alphabet=VCHARS + OBS_TEXT + " \t", max_size=24)
ows = st.sampled_from(["", " ", "  ", "\t", " \t"])


def _case(draw: st.DrawFn, name: str) -> str:
    return draw(st.sampled_from([name, name.lower(), name.upper()]))


def _fields(draw: st.DrawFn, fields: list[tuple[str, str]]) -> bytes:
    lines = [f"{n}:{draw(ows)}{v}{draw(ows)}\r\n" for n, v in fields]
    return "".join(lines).encode("latin-1")


def _chunked_body(draw: st.DrawFn, body: bytes) -> bytes:
    out = []
    rest = body
    while rest:
        size = draw(st.integers(1, len(rest)))
        ext = draw(st.sampled_from(["", ";a", ";a=b", ';name="quoted ; value"', ";x=1;y"]))
        digits = f"{size:x}"
        digits = draw(st.sampled_from([digits, digits.upper(), "0" + digits]))
        out.append(f"{digits}{ext}\r\n".encode() + rest[:size] + b"\r\n")
        rest = rest[size:]
    trailers = draw(st.lists(st.tuples(plain_names, values), max_size=3))
    out.append(b"0\r\n" + _fields(draw, trailers) + b"\r\n")
    return b"".join(out)


@st.composite
def request_bytes(draw: st.DrawFn, last: bool = True) -> bytes:
    """One valid request; it may close the connection only if ``last``."""
    version = draw(st.sampled_from(["1.1", "1.1", "1.0"])) if last else "1.1"
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]) | tokens)
    if method.upper() == "CONNECT":
        method = "GET"
    target = draw(
        st.sampled_from(["/", "*", "http://example.com/a?b=c", "/%C3%A9t%C3%A9?q=1#f"])
        | st.text(alphabet=VCHARS, min_size=1, max_size=20).map(lambda t: "/" + t)
    )
    fields = draw(st.lists(st.tuples(plain_names, values), max_size=5))
    if version == "1.1" or draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))), (_case(draw, "Host"), "example.com"))
    body = draw(st.binary(max_size=40))
    framing = draw(
        st.sampled_from(["length", "chunked", "none"] if version == "1.1" else ["length", "none"])
    )
    if framing == "none":
        body = b""
    elif framing == "length":
        fields.append((_case(draw, "Content-Length"), str(len(body))))
        if draw(st.booleans()):
            fields.append(("Content-Length", str(len(body))))  # an identical duplicate
    else:
        fields.append((_case(draw, "Transfer-Encoding"), _case(draw, "chunked")))
    if last and version == "1.1" and draw(st.booleans()):
        fields.append(("Connection", _case(draw, "close")))
    head = f"{method} {target} HTTP/{version}\r\n".encode("latin-1")
    data = body if framing != "chunked" else _chunked_body(draw, body)
    return head + _fields(draw, fields) + b"\r\n" + data


@st.composite
def pipelined_requests(draw: st.DrawFn) -> bytes:
    count = draw(st.integers(1, 4))
    return b"".join(draw(request_bytes(last=i == count - 1)) for i in range(count))


@st.composite
def response_bytes(draw: st.DrawFn, method: str, last: bool = True) -> bytes:
    """Interim responses (maybe), then one valid final response to ``method``; the
    final one may close the connection (or run until EOF) only if ``last``."""
    out = []
    for _ in range(draw(st.integers(0, 2))):
        status = draw(st.sampled_from([100, 102, 103]))
        fields = draw(st.lists(st.tuples(plain_names, values), max_size=2))
        out.append(f"HTTP/1.1 {status} Info\r\n".encode() + _fields(draw, fields) + b"\r\n")
    version = draw(st.sampled_from(["1.1", "1.1", "1.0"])) if last else "1.1"
    status = draw(st.integers(200, 599))
    reason = draw(st.text(alphabet=VCHARS + OBS_TEXT + " \t", max_size=20))
    status_line = f"HTTP/{version} {status}"
    if reason or draw(st.booleans()):
        status_line += " " + reason
    fields = draw(st.lists(st.tuples(plain_names, values), max_size=5))
    body = draw(st.binary(max_size=40))
    choices = ["length", "chunked"] if version == "1.1" else ["length"]
    if last:
        choices.append("eof")
    framing = draw(st.sampled_from(choices))
    if framing == "length":
        fields.append((_case(draw, "Content-Length"), str(len(body))))
    elif framing == "chunked":
        fields.append(("Transfer-Encoding", "chunked"))
    if last and version == "1.1" and draw(st.booleans()):
        fields.append(("Connection", "close"))
    no_body = method == "HEAD" or status in (204, 304)
    if no_body:
        data = b""
    elif framing == "chunked":
        data = _chunked_body(draw, body)
    else:
        data = body
    head = f"{status_line}\r\n".encode("latin-1") + _fields(draw, fields) + b"\r\n"
    out.append(head + data)
    return b"".join(out)


@st.composite
def response_exchanges(draw: st.DrawFn) -> tuple[list[str], bytes]:
    """``(methods, bytes)``: the methods of the requests sent, and the responses."""
    methods = draw(st.lists(st.sampled_from(["GET", "HEAD", "POST"]), min_size=1, max_size=3))
    data = b"".join(
        draw(response_bytes(m, last=i == len(methods) - 1)) for i, m in enumerate(methods)
    )
    return methods, data


def mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """``data`` with each edit applied (positions wrap around the length)."""
    for where, delete, insert in edits:
        where %= len(data) + 1
        data = data[:where] + insert + data[where + delete :]
    return data


# Bytes that matter to HTTP framing, inserted by the mutations more often than chance.
interesting_bytes = st.sampled_from(
    [
        b"\r",
        b"\n",
        b"\r\n",
        b" ",
        b"\t",
        b":",
        b",",
        b";",
        b"0",
        b"\x00",
        b"\x7f",
        b"\xff",
        b"chunked",
        b"Content-Length: 1\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Host: b\r\n",
    ]
)
#: Mutations: (where, how many bytes to delete, what to insert), applied in turn.
edits = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 3), interesting_bytes | st.binary(max_size=3)),
    min_size=1,
    max_size=4,
)

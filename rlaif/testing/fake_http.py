"""The fake server's HTTP/1.1 layer: parse a request, encode a response (see fake_openai's docstring
for why the server speaks HTTP by hand: faults must reach the socket exactly as a flaky server sends them)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from http import HTTPStatus

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass
class Response:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"
    trickle_s: float = 0.0  # seconds between body bytes (Fault.trickle)
    chunked: bool = False  # transfer-encoding: chunked instead of content-length (Fault.huge)


class Drop:
    def __init__(self, reset: bool):
        self.reset = reset


class BadRequest(Exception):
    pass


def encode(resp: Response, keep_alive: bool, request_id: str) -> bytes:
    try:
        reason = HTTPStatus(resp.status).phrase
    except ValueError:
        reason = "Unknown"
    length = "transfer-encoding: chunked" if resp.chunked else f"content-length: {len(resp.body)}"
    lines = [f"HTTP/1.1 {resp.status} {reason}",
             f"content-type: {resp.content_type}",
             length,
             f"connection: {'keep-alive' if keep_alive else 'close'}",
             f"x-request-id: {request_id}"]
    lines += [f"{k}: {v}" for k, v in resp.headers]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if resp.trickle_s:
        return head
    if resp.chunked:
        step = 1 << 16
        parts = [b"%x\r\n%s\r\n" % (len(resp.body[i:i + step]), resp.body[i:i + step])
                 for i in range(0, len(resp.body), step)]
        return head + b"".join(parts) + b"0\r\n\r\n"
    return head + resp.body


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadRequest("bad chunk size") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return bytes(out)
        if len(out) + size > MAX_BODY_BYTES:
            raise BadRequest("body too large")
        out += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise BadRequest("bad chunk terminator")


async def read_request(head: bytes, reader: asyncio.StreamReader):
    """(method, path, keep_alive, headers, body) of one request whose head (up to the blank line) was read."""
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(f"bad request line {lines[0]!r}")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest(f"bad header line {line!r}")
        headers[name.strip().lower()] = value.strip()
    conn = headers.get("connection", "").lower()
    keep_alive = ("close" not in conn) if version == "HTTP/1.1" else ("keep-alive" in conn)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await read_chunked(reader)
    elif "content-length" in headers:
        try:
            n = int(headers["content-length"])
        except ValueError:
            raise BadRequest("bad content-length") from None
        if n < 0 or n > MAX_BODY_BYTES:
            raise BadRequest("bad content-length")
        body = await reader.readexactly(n) if n else b""
    else:
        body = b""
    return method.upper(), target.split("?", 1)[0], keep_alive, headers, body

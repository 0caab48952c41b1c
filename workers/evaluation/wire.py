"""The wire between the parent and a sandboxed child, imported by both sides.

A message is one SOCK_SEQPACKET datagram: a 4-byte length, a JSON header (an object with a
"type"), then an optional binary tail; file descriptors travel beside it (SCM_RIGHTS).
`receive()` is how the parent reads a child: it enforces the size and descriptor limits and
rejects truncated datagrams, so nothing a child writes can make the parent read without bound.

The output checksum: the bytes of a contiguous output are cut into chunks of `chunk_bytes`
(a multiple of CHUNK_ALIGN); a chunk's checksum is the sum, wrapping modulo 2**64, of its
little-endian int64 words (the last chunk padded with zero bytes to a whole word): one pass
over the bytes with no conversion, as cheap as a checksum that covers every byte can be. A
child sends the checksums of every output when it says a batch is computed; the parent
later recomputes them from the bytes it is handed, so those bytes must be the ones that
existed before the parent's clock stopped.
"""
from __future__ import annotations

import array
import json
import socket
import struct
from dataclasses import dataclass, field

LENGTH = struct.Struct("<I")
MAX_MESSAGE = 192 << 10  # fits the default socket buffer on every Linux
MAX_HEADER = 128 << 10
MAX_FDS = 4
CHUNK_ALIGN = 16
MIN_CHUNK = 64 << 10


class ProtocolError(Exception):
    """The peer broke the protocol: malformed, oversized or truncated messages."""


class PeerClosed(ProtocolError):
    """The peer's end of the socket is gone (it exited or died)."""


@dataclass
class Message:
    header: dict
    blob: bytes = b""
    fds: list[int] = field(default_factory=list)

    @property
    def type(self) -> str:
        return self.header["type"]


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """(parent end, child end); both close on exec unless passed on explicitly."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send(sock: socket.socket, header: dict, blob: bytes = b"", fds: tuple[int, ...] = ()) -> None:
    head = json.dumps(header, allow_nan=False, separators=(",", ":")).encode()
    data = LENGTH.pack(len(head)) + head + blob
    if len(head) > MAX_HEADER or len(data) > MAX_MESSAGE:
        raise ValueError(f"message of {len(data)} bytes exceeds the channel's limit")
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.send(data)


def receive(sock: socket.socket) -> Message:
    """One message, or ProtocolError / PeerClosed. Received descriptors are closed on error."""
    try:
        data, fds, flags, _ = socket.recv_fds(sock, MAX_MESSAGE + 1, MAX_FDS,
                                              getattr(socket, "MSG_CMSG_CLOEXEC", 0))
    except ConnectionError:
        raise PeerClosed("the peer closed the channel") from None
    try:
        if not data and not fds:
            raise PeerClosed("the peer closed the channel")
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(data) > MAX_MESSAGE:
            raise ProtocolError("oversized message or too many descriptors")
        return Message(_header(data), data[LENGTH.size + LENGTH.unpack_from(data)[0]:], list(fds))
    except ProtocolError:
        close_all(fds)
        raise


def _header(data: bytes) -> dict:
    if len(data) < LENGTH.size:
        raise ProtocolError("message shorter than its length field")
    (length,) = LENGTH.unpack_from(data)
    if length > MAX_HEADER or LENGTH.size + length > len(data):
        raise ProtocolError("header length out of range")
    try:
        header = json.loads(data[LENGTH.size:LENGTH.size + length])
    except (ValueError, RecursionError):
        raise ProtocolError("undecodable header") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError("a header must be an object with a string 'type'")
    return header


def close_all(fds) -> None:
    import os
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def chunk_count(nbytes: int, chunk_bytes: int) -> int:
    return max(1, -(-nbytes // chunk_bytes))


def checksum(data) -> int:
    """The checksum of one chunk (bytes-like), as defined above; the parent's side."""
    import numpy as np
    view = memoryview(data).cast("B")
    words = len(view) // 8
    with np.errstate(over="ignore"):
        total = int(np.frombuffer(view[:words * 8], dtype="<i8").sum(dtype=np.uint64)) if words else 0
    tail = bytes(view[words * 8:])
    if tail:
        total += int(np.frombuffer(tail.ljust(8, b"\0"), dtype="<i8")[0])
    total %= 1 << 64
    return total - (1 << 64) if total >= 1 << 63 else total

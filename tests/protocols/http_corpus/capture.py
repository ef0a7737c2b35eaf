"""Capture the bytes real HTTP peers put on the wire, for the differential tests.

:func:`capture_requests` listens on a loopback port, lets a client (curl, Python's
``http.client``) talk to it, answers every request with h11 (so that keep-alive
clients send their next request on the same connection) and returns every byte the
client sent. :func:`fetch_raw` sends one raw request to a real server and returns its
whole answer, read until the server closes.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import h11

_ANSWER = h11.Response(status_code=200, headers=[("Content-Length", "2")])


def _serve_one(listener: socket.socket, received: list[bytes]) -> None:
    """Accept one connection and answer its requests until the client closes."""
    listener.settimeout(30)
    try:
        conn_sock, _ = listener.accept()
    except OSError:
        return
    with conn_sock:
        conn_sock.settimeout(30)
        conn = h11.Connection(h11.SERVER)
        head_request = False
        while True:
            try:
                data = conn_sock.recv(65536)
            except OSError:
                return
            received.append(data)
            conn.receive_data(data)
            if not data:
                return
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    break
                if isinstance(event, h11.ConnectionClosed):
                    return
                if isinstance(event, h11.Request):
                    if event.method == b"CONNECT":
                        # Refuse tunnels: what we wanted is the CONNECT request itself.
                        conn_sock.sendall(
                            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n"
                            b"Connection: close\r\n\r\n"
                        )
                        return
                    head_request = event.method == b"HEAD"
                    if conn.they_are_waiting_for_100_continue:
                        conn_sock.sendall(
                            conn.send(h11.InformationalResponse(status_code=100, headers=[]))
                        )
                if isinstance(event, h11.EndOfMessage) and conn.our_state is h11.SEND_RESPONSE:
                    answer = conn.send(_ANSWER)
                    if not head_request:
                        answer += conn.send(h11.Data(data=b"ok"))
                    conn_sock.sendall(answer + conn.send(h11.EndOfMessage()))
                    if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                        conn.start_next_cycle()


def _serve_recording_errors(
    listener: socket.socket, received: list[bytes], errors: list[BaseException]
) -> None:
    try:
        _serve_one(listener, received)
    except BaseException as exc:  # handed to the test's thread
        errors.append(exc)


def capture_requests(client: Callable[[int], object]) -> bytes:
    """The bytes ``client(port)`` sends to a server on ``port`` (one connection)."""
    received: list[bytes] = []
    errors: list[BaseException] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        thread = threading.Thread(
            target=_serve_recording_errors, args=(listener, received, errors), daemon=True
        )
        thread.start()
        try:
            client(port)
        finally:
            # Unblock accept() if the client never connected.
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                pass
            thread.join(35)
    assert not thread.is_alive()
    if errors:
        raise errors[0]
    return b"".join(received)


def fetch_raw(port: int, request: bytes) -> bytes:
    """Send ``request`` to ``127.0.0.1:port``, half-close, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        parts = []
        while True:
            data = sock.recv(65536)
            if not data:
                return b"".join(parts)
            parts.append(data)

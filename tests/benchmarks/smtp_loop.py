"""The bare ``smtplib`` send loop that the email throughput figures are set against.

One connection, the rendered messages flattened with ``transports.WIRE_POLICY`` (as the
delivery path flattens them) and handed over one after the other with ``sendmail``:
what an SMTP client that keeps no books does. ``delivery.email_send_throughput`` runs it
in the test process; ``delivery.email_send_throughput_2proc`` runs it as

    python -m tests.benchmarks.smtp_loop PORT MESSAGES.pickle WARMUP

in a process of its own, so that the loop does not share a GIL with the in-process
sink, as the worker processes do not. It sends the first WARMUP messages of the pickled
list on a connection of their own, untimed, then the rest on one connection, and prints
``{"seconds": …, "cpu_seconds": …, "emails": …}``, where seconds times the send loop only
(not the import, the unpickling, the connect or the QUIT) and cpu_seconds is this
process's CPU time over it.
"""
from __future__ import annotations

import json
import pickle
import smtplib
import sys
import time
from email.utils import parseaddr
from pathlib import Path


def send_loop(port: int, messages: list, host: str = "127.0.0.1") -> float:
    """Send ``messages`` over one connection; returns the seconds the loop took."""
    from tasks.delivery.transports import WIRE_POLICY

    client = smtplib.SMTP(host, port, timeout=20)
    client.ehlo()
    try:
        started = time.perf_counter()
        for message in messages:
            client.sendmail(parseaddr(message["From"])[1], [parseaddr(message["To"])[1]],
                            message.as_bytes(policy=WIRE_POLICY))
        return time.perf_counter() - started
    finally:
        client.quit()


def main(argv: list[str]) -> None:
    port, path, warmup = int(argv[0]), Path(argv[1]), int(argv[2])
    messages = pickle.loads(path.read_bytes())
    warm, timed = messages[:warmup], messages[warmup:]
    if warm:
        send_loop(port, warm)
    cpu = time.process_time()
    seconds = send_loop(port, timed)
    cpu = time.process_time() - cpu  # includes the connect and QUIT around the loop: a few ms
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "emails": len(timed)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

#!/usr/bin/python3
"""APPEND latency as a mail client sees it: N APPENDs of a 1 KiB message
through Python's imaplib, which writes the message literal and the CRLF
that ends the command in two calls with Nagle's algorithm on (as
imaptest does): a server that delays its ACK of the literal makes every
APPEND wait for its delayed-ACK timer.  One line on stdout:
"n=N p50_ms=... p95_ms=... max_ms=...".  Loopback addresses only; every
wait is bounded (socket timeout)."""

import argparse
import imaplib
import statistics
import sys
import time

MESSAGE = (b"From: bench@client.test\r\nTo: u@bench.test\r\nSubject: append latency\r\n"
           b"Date: Mon, 07 Dec 2026 12:00:00 +0000\r\n\r\n" + (b"x" * 76 + b"\r\n") * 12)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("-n", type=int, default=200, help="APPENDs timed (default 200)")
    ap.add_argument("--warmup", type=int, default=5, help="APPENDs not timed first")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per socket wait")
    a = ap.parse_args()
    if not a.host.startswith("127.") and a.host != "::1":
        sys.exit("imap-append: loopback addresses only")
    c = imaplib.IMAP4(a.host, a.port, timeout=a.timeout)
    typ, data = c.login(a.user, a.password)
    if typ != "OK":
        sys.exit(f"imap-append: LOGIN: {typ} {data}")
    times = []
    for i in range(a.warmup + a.n):
        t0 = time.monotonic()
        typ, data = c.append("INBOX", None, None, MESSAGE)
        took = time.monotonic() - t0
        if typ != "OK":
            sys.exit(f"imap-append: APPEND: {typ} {data}")
        if i >= a.warmup:
            times.append(took * 1000)
    c.logout()
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * len(times))) - 1)]
    print(f"n={len(times)} p50_ms={statistics.median(times):.2f} p95_ms={p95:.2f} "
          f"max_ms={times[-1]:.2f}")


if __name__ == "__main__":
    main()

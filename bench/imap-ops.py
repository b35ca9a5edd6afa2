#!/usr/bin/python3
"""The IMAP operations of the benchmark on one big folder, as a webmail
or a phone asks them, timed from the client (Python's imaplib):

  ops:   SELECT, FETCH 1:* (FLAGS), SEARCH TEXT "needle", SORT (DATE),
         SORT (SUBJECT), THREAD REFERENCES — each twice on one session,
         "cold" (the first time after the server started) and "warm";
         SELECT again on a new session (warm); then 100 flag changes on
         one session and a QRESYNC SELECT (RFC 7162 §3.2.5) on another:
         its time and the number of FETCH responses it sent (what a phone
         downloads to resynchronise; 100 is the least possible).
  hold:  K sessions that each SELECT the folder and stay; prints "held"
         and keeps them --hold-secs (or until the caller stops it), so
         that the caller can measure the server's memory.

One line on stdout of name=value pairs (milliseconds; NA when the server
refused the command, e.g. SORT where it is not offered).  Loopback
addresses only; every wait is bounded (socket timeout)."""

import argparse
import imaplib
import sys
import time

imaplib._MAXLINE = 200_000_000     # a THREAD or SORT answer for 100,000 messages is one long line

OPS = [("fetch_flags", ("FETCH", "1:*", "(FLAGS)")),
       ("search_text", ("SEARCH", "TEXT", "needle")),
       ("sort_date", ("SORT", "(DATE)", "UTF-8", "ALL")),
       ("sort_subject", ("SORT", "(SUBJECT)", "UTF-8", "ALL")),
       ("thread_refs", ("THREAD", "REFERENCES", "UTF-8", "ALL"))]


def connect(a):
    c = imaplib.IMAP4(a.host, a.port, timeout=a.timeout)
    typ, data = c.login(a.user, a.password)
    if typ != "OK":
        sys.exit(f"imap-ops: LOGIN: {typ} {data}")
    return c


def timed(c, *cmd):
    t0 = time.monotonic()
    try:
        typ, _ = c._simple_command(*cmd)
    except imaplib.IMAP4.error:
        return "NA"
    took = (time.monotonic() - t0) * 1000
    return f"{took:.1f}" if typ == "OK" else "NA"


def timed_select(c, folder):
    t0 = time.monotonic()
    typ, data = c.select(folder)
    if typ != "OK":
        sys.exit(f"imap-ops: SELECT {folder}: {typ} {data}")
    return f"{(time.monotonic() - t0) * 1000:.1f}", int(data[0])


def ops(a):
    out = {}
    c = connect(a)
    out["select_cold_ms"], n = timed_select(c, a.folder)
    out["messages"] = str(n)
    for rnd in ("cold", "warm"):
        for name, cmd in OPS:
            out[f"{name}_{rnd}_ms"] = timed(c, *cmd)
    c.logout()
    c = connect(a)
    out["select_warm_ms"], _ = timed_select(c, a.folder)
    c.logout()
    out.update(qresync(a))
    print(" ".join(f"{k}={v}" for k, v in out.items()))


def select_state(c, folder):
    """SELECT (CONDSTORE) sent raw; imaplib keeps the response codes of
    untagged OKs ([UIDVALIDITY n], [HIGHESTMODSEQ n]) under their names."""
    typ, _ = c._simple_command("SELECT", folder, "(CONDSTORE)")
    uv = c.untagged_responses.get("UIDVALIDITY", [None])[-1]
    hm = c.untagged_responses.get("HIGHESTMODSEQ", [None])[-1]
    if typ != "OK" or uv is None or hm is None:
        return None
    return int(uv), int(hm)


def qresync(a):
    res = {"qresync_ms": "NA", "qresync_fetches": "NA"}
    c = connect(a)
    c.state = "SELECTED"       # SELECT below is sent raw, for its CONDSTORE argument
    state = select_state(c, a.folder)
    if not state:
        c.logout()
        return res
    uidvalidity, highest = state
    typ, data = c.uid("SEARCH", "ALL")
    uids = data[-1].split() if typ == "OK" else []
    step = max(1, len(uids) // 100)
    chosen = [u.decode() for u in uids[::step][:100]]
    # set \Flagged, or take it away where an earlier round set it: every
    # round changes the 100 messages
    sign = "+"
    if chosen:
        typ, data = c.uid("FETCH", chosen[0], "(FLAGS)")
        if typ == "OK" and any(b"\\Flagged" in d for d in data if isinstance(d, bytes)):
            sign = "-"
    for u in chosen:
        c.uid("STORE", u, sign + "FLAGS.SILENT", r"(\Flagged)")
    c.logout()
    c = connect(a)
    try:
        typ, _ = c._simple_command("ENABLE", "QRESYNC")
    except imaplib.IMAP4.error:
        typ = "NO"
    if typ == "OK":
        c.untagged_responses.clear()
        t0 = time.monotonic()
        typ, _ = c._simple_command("SELECT", a.folder, f"(QRESYNC ({uidvalidity} {highest}))")
        took = (time.monotonic() - t0) * 1000
        if typ == "OK":
            res["qresync_ms"] = f"{took:.1f}"
            res["qresync_fetches"] = str(len(c.untagged_responses.get("FETCH", [])))
    c.state = "SELECTED"
    c.logout()
    return res


def hold(a):
    sessions = []
    for _ in range(a.hold):
        c = connect(a)
        timed_select(c, a.folder)
        c.noop()
        sessions.append(c)
    print("held", flush=True)
    time.sleep(a.hold_secs)        # or until the caller stops this process
    for c in sessions:
        c.logout()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--folder", default="big")
    ap.add_argument("--hold", type=int, default=0, help="hold K selected sessions instead")
    ap.add_argument("--hold-secs", type=float, default=60.0)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per socket wait")
    a = ap.parse_args()
    if not a.host.startswith("127.") and a.host != "::1":
        sys.exit("imap-ops: loopback addresses only")
    hold(a) if a.hold else ops(a)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Write a Maildir++ folder of N messages for the IMAP rows of the
benchmark: ROOT/.NAME/{cur,new,tmp}, every message already seen (in cur/
with the S flag), the same bytes for every server given the same seed.

The messages look like a mailing list archive: 400 senders, threads of
one to twelve messages (Message-ID, In-Reply-To and References set, the
replies' subjects with "Re: "), dates spread over a year, bodies of 0.5 to
3 KiB of words from a fixed vocabulary; one message in a hundred has the
word "needle" in its body (what SEARCH TEXT looks for).

    bench/imap-bigfolder.py ROOT NAME N [--seed S]
"""

import argparse
import os
import random
import time

WORDS = ("mail server queue folder message client thread subject header body "
         "delivery policy relay domain address network packet socket buffer "
         "journal index cache memory disk latency throughput session login "
         "reply forward archive search sort filter report schedule meeting "
         "budget review release build test issue change patch branch merge").split()


def message(rng, i, thread, when):
    first, subject, parents = thread
    sender = f"user{rng.randrange(400)}@list{rng.randrange(5)}.example"
    mid = f"<{i}.bench@imap.example>"
    head = [f"From: Sender {sender.split('@')[0]} <{sender}>",
            f"To: bench list <list@bench.test>",
            f"Subject: {'Re: ' if parents else ''}{subject}",
            time.strftime("Date: %a, %d %b %Y %H:%M:%S +0000", time.gmtime(when)),
            f"Message-ID: {mid}"]
    if parents:
        head.append(f"In-Reply-To: {parents[-1]}")
        head.append("References: " + " ".join(parents[-8:]))
    words = [rng.choice(WORDS) for _ in range(rng.randrange(80, 480))]
    if rng.randrange(100) == 0:
        words[rng.randrange(len(words))] = "needle"
    lines, line = [], []
    for w in words:
        line.append(w)
        if len(line) == 12:
            lines.append(" ".join(line))
            line = []
    lines.append(" ".join(line))
    parents.append(mid)
    return ("\r\n".join(head) + "\r\n\r\n" + "\r\n".join(lines) + "\r\n").encode()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root")
    ap.add_argument("name")
    ap.add_argument("n", type=int)
    ap.add_argument("--seed", type=int, default=2026)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    folder = os.path.join(a.root, "." + a.name)
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    start = 1764547200      # 2025-12-01, then about five minutes apart
    open_threads = []
    for i in range(1, a.n + 1):
        if not open_threads or rng.randrange(4) == 0:
            open_threads.append([i, f"topic {rng.randrange(100000)} {rng.choice(WORDS)}", []])
            if len(open_threads) > 50:
                open_threads.pop(0)
        t = rng.choice(open_threads)
        when = start + i * 300 + rng.randrange(300)
        data = message(rng, i, t, when)
        if len(t[2]) >= 12:
            open_threads.remove(t)
        name = f"{when}.M{i}P1.bench,S={len(data)}:2,S"
        path = os.path.join(folder, "cur", name)
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, (when, when))
    print(f"{a.n} messages in {folder}")


if __name__ == "__main__":
    main()

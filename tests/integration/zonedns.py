"""A tiny DNS server on a loopback UDP port that answers from a Python
dictionary, for zone data dnsmasq cannot express (the RFC 7208 test
suite's CNAMEs, multi-string TXT, per-type timeouts, SPF-to-TXT copies).

zone: {name: [(type, value), ...]} with types A, AAAA, MX (pref, host),
PTR, TXT (a tuple of strings), CNAME, and the value "TIMEOUT" for a type
that must fail.  A name that is absent is NXDOMAIN.  "Timeouts" are
answered SERVFAIL at once: RFC 7208 §2.6.6 makes both a temperror, and the
test stays fast.
"""

import socket
import threading

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

from helpers import free_port


class ZoneDNS:
    def __init__(self, zone, delay=0.0):
        self.zone = {k.lower().rstrip("."): v for k, v in zone.items()}
        self.port = free_port("127.0.0.1", udp=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.settimeout(0.2)
        self.delay = delay               # seconds before each answer (a slow server)
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def stop(self):
        self.running = False
        self.thread.join(5)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def _serve(self):
        while self.running:
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                reply = self.answer(dns.message.from_wire(data))
            except Exception:  # a query we cannot read gets no answer
                continue
            if self.delay:
                threading.Timer(self.delay, self._send, (reply, peer)).start()
            else:
                self._send(reply, peer)

    def _send(self, reply, peer):
        try:
            self.sock.sendto(reply.to_wire(max_size=65535), peer)
        except OSError:  # stopped meanwhile
            pass

    def _rrset(self, owner, rtype, value):
        name = dns.name.from_text(owner)
        if rtype == "TXT":
            parts = value if isinstance(value, (list, tuple)) else (value,)
            rd = dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT,
                                         [p.encode("utf-8") for p in parts])
        elif rtype == "MX":
            rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.MX,
                                     f"{value[0]} {value[1]}.")
        elif rtype in ("PTR", "CNAME"):
            rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype),
                                     value.rstrip(".") + ".")
        else:
            rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), value)
        rrset = dns.rrset.RRset(name, dns.rdataclass.IN, rd.rdtype)
        rrset.add(rd, ttl=60)
        return rrset

    def _add(self, reply, owner, qtype, depth=0):
        """Records of owner for qtype into reply; False: must fail."""
        records = self.zone.get(owner)
        if records is None:
            return False if owner.startswith("error.") else None
        # pyspf's test driver (testspf.py): a bare TIMEOUT fails the query
        # unless records of the type asked for come before it
        for rec in records:
            if rec == "TIMEOUT":
                return False
            if rec[0] == qtype:
                break
        records = [r for r in records if r != "TIMEOUT"]
        for rtype, value in records:
            if rtype == qtype and value == "TIMEOUT":
                return False
        for rtype, value in records:
            if rtype == qtype:
                reply.answer.append(self._rrset(owner, rtype, value))
            elif rtype == "CNAME" and qtype != "CNAME" and depth == 0:
                reply.answer.append(self._rrset(owner, rtype, value))
                if self._add(reply, value.lower().rstrip("."), qtype, 1) is False:
                    return False
        return True

    def answer(self, query):
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.AA
        q = query.question[0]
        owner = q.name.to_text().lower().rstrip(".")
        found = self._add(reply, owner, dns.rdatatype.to_text(q.rdtype))
        if found is None:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        elif found is False:
            reply.answer = []
            reply.set_rcode(dns.rcode.SERVFAIL)
        return reply

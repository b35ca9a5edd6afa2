"""IMAP extensions as a client sees them, raw commands on one daemon:
LITERAL+ (RFC 7888), MULTIAPPEND (RFC 3502), CATENATE (RFC 4469), BINARY (RFC 3516: FETCH
BINARY, BINARY.SIZE, APPEND of a literal8), LIST-EXTENDED and LIST-STATUS
(RFC 5258, RFC 5819).
"""

import base64
import re

import pytest

from imaputil import connect, login_select, make_cert, start_imap, client_ctx


@pytest.fixture(scope="module")
def cert(posthorn_bin, tmp_path_factory):
    return make_cert(posthorn_bin, tmp_path_factory.mktemp("imap-ext-cert"))


def lit(data):
    """A non-synchronizing literal (LITERAL+): no continuation awaited."""
    return b"{%d+}\r\n" % len(data) + data


def crlf(s):
    return s.replace("\n", "\r\n").encode()


MIME = crlf("""From: a@example.org
Subject: parts
Mime-Version: 1.0
Content-Type: multipart/mixed; boundary="b"

--b
Content-Type: application/octet-stream
Content-Transfer-Encoding: base64

AGhlbGxvAHdvcmxk
--b
Content-Type: text/plain
Content-Transfer-Encoding: quoted-printable

caf=C3=A9 soft=
 break  
--b
Content-Type: text/plain
Content-Transfer-Encoding: x-uuencode

begin 644 x
--b--
""")


def test_extensions_as_a_client_sees_them(posthorn, cert):
    p = start_imap(posthorn, cert)
    c = login_select(p, client_ctx(cert))
    caps = c.capabilities()
    for cap in ("LITERAL+", "BINARY", "MULTIAPPEND", "CATENATE", "LIST-EXTENDED", "LIST-STATUS"):
        assert cap in caps, caps
    assert "LITERAL-" not in caps, caps

    # LITERAL+ and MULTIAPPEND: two messages, no continuation, one APPENDUID
    one, two = crlf("Subject: one\n\nbody 1\n"), crlf("Subject: two\n\nbody 2\n")
    r = c.cmd(b"APPEND INBOX (\\Seen) " + lit(one) + b" " + lit(two))
    assert r.ok, r
    m = re.match(r"APPENDUID (\d+) (\d+):(\d+)$", r.code())
    assert m and int(m.group(3)) == int(m.group(2)) + 1, r
    # all or none: the second message is bad, so the first is not appended
    r = c.cmd(b"APPEND INBOX " + lit(one) + b' "not a date" ' + lit(two))
    assert r.status == "BAD", r
    # at most 1000 messages in one APPEND: more is NO [LIMIT], none appended
    r = c.cmd(b"APPEND INBOX " + b" ".join([lit(one)] * 1001))
    assert r.status == "NO" and r.code() == "LIMIT", r
    r = c.ok("STATUS INBOX (MESSAGES)")
    assert r.find(r"\(MESSAGES 2\)"), r

    # CATENATE: the header of message "one" by URL, then a new body
    validity, uid1 = m.group(1), m.group(2)
    url = f'"/INBOX;UIDVALIDITY={validity}/;UID={uid1}/;SECTION=HEADER"'.encode()
    r = c.cmd(b"APPEND INBOX CATENATE (URL " + url + b" TEXT " + lit(b"new body\r\n") + b")")
    assert r.ok, r
    r = c.ok(f"UID FETCH {r.code().split()[-1]} (BODY.PEEK[])")
    assert r.untagged[0].endswith(b"{26}\r\nSubject: one\r\n\r\nnew body\r\n)"), r
    r = c.cmd(b'APPEND INBOX CATENATE (URL "/INBOX/;UID=999" TEXT ' + lit(b"x\r\n") + b")")
    assert r.status == "NO" and r.code().startswith("BADURL"), r
    r = c.cmd(b"APPEND Nowhere CATENATE (TEXT " + lit(b"x\r\n") + b")")
    assert r.status == "NO" and r.code() == "TRYCREATE", r
    # a {n+} over the limit is refused, its octets skipped, never run
    r = c.cmd(b"SEARCH TEXT {70000+}\r\n" + b"a001 LOGOUT\r\n" * 5000 + b"x" * 5000)
    assert r.status == "BAD" and r.code() == "TOOBIG", r
    c.ok("NOOP")

    # BINARY: base64 and quoted-printable undone, sizes of the decoded octets
    r = c.ok(b"APPEND INBOX " + lit(MIME))
    uid = r.code().split()[-1]
    r = c.ok(f"UID FETCH {uid} (BINARY.SIZE[1] BINARY.PEEK[1] BINARY.PEEK[2] BINARY.PEEK[1]<1.5>)")
    [line] = r.untagged
    assert b"BINARY.SIZE[1] 12 " in line, line
    assert b"BINARY[1] ~{12}\r\n\x00hello\x00world" in line, line      # literal8: it holds NUL
    # "=" ends a soft line break; the white space that ends a line is not data
    assert b"BINARY[2] {16}\r\ncaf\xc3\xa9 soft break" in line, line
    assert b"BINARY[1]<1> ~{5}\r\nhello" in line, line
    r = c.cmd(f"UID FETCH {uid} (BINARY.PEEK[3])")
    assert r.status == "NO" and r.code() == "UNKNOWN-CTE", r
    r = c.ok(f"UID FETCH {uid} (FLAGS)")
    assert "\\Seen" not in r.lines()[0], r                            # .PEEK and .SIZE set none

    # APPEND of a literal8 with NUL: stored base64, given back by BINARY
    raw = crlf("Subject: bin\nContent-Type: application/octet-stream\n"
               "Content-Transfer-Encoding: binary\n\n") + b"\x00\x01\xff\r\n"
    r = c.cmd(b"APPEND INBOX ~{%d+}\r\n" % len(raw) + raw)
    assert r.ok, r
    uid = r.code().split()[-1]
    r = c.ok(f"UID FETCH {uid} (BODY.PEEK[1] BINARY.PEEK[1])")
    body = re.search(rb"BODY\[1\] \{\d+\}\r\n([^)]*?)\r?\n? BINARY", r.untagged[0])
    assert body and base64.b64decode(body.group(1)) == b"\x00\x01\xff\r\n", r
    assert b"BINARY[1] ~{5}\r\n\x00\x01\xff\r\n" in r.untagged[0], r
    # NUL in a plain literal stays refused
    r = c.cmd(b"APPEND INBOX " + lit(b"Subject: x\r\n\r\n\x00\r\n"))
    assert r.status == "NO", r

    # LIST-EXTENDED and LIST-STATUS
    for name in ("Ext", "Ext.a", "Ext.a.deep", "Ext.b"):
        c.ok(f"CREATE {name}")
    c.ok("SUBSCRIBE Ext.a.deep")
    c.ok("SUBSCRIBE Ext.b")
    c.ok("SUBSCRIBE Ext.gone")
    r = c.ok('LIST (SUBSCRIBED) "" "Ext.*"')
    assert sorted(r.lines()) == ['* LIST (\\NonExistent \\Subscribed) "." Ext.gone',
                                 '* LIST (\\Subscribed) "." Ext.a.deep',
                                 '* LIST (\\Subscribed) "." Ext.b'], r
    r = c.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" "Ext.%"')
    assert '* LIST () "." Ext.a ("CHILDINFO" ("SUBSCRIBED"))' in r.lines(), r
    r = c.ok('LIST "" (Ext.a Ext.b INBOX) RETURN (SUBSCRIBED STATUS (MESSAGES UIDNEXT))')
    names = [ln.split()[-1] for ln in r.find(r"^\* LIST ")]
    assert sorted(names) == ["Ext.a", "Ext.b", "INBOX"], r
    assert r.find(r'^\* LIST \(\\HasNoChildren \\Subscribed\) "\." Ext\.b$'), r
    assert r.find(r"^\* STATUS INBOX \(MESSAGES 5 UIDNEXT \d+\)$"), r
    assert r.find(r"^\* STATUS Ext\.b \(MESSAGES 0 UIDNEXT 1\)$"), r
    for bad in ('LIST (RECURSIVEMATCH) "" *', 'LIST (BOGUS) "" *', 'LIST "" * RETURN (BOGUS)'):
        assert c.cmd(bad).status == "BAD", bad
    c.logout()

"""Finding e-mail addresses, IP addresses and phone numbers in text, to replace them.

As datatrove's ``PIIFormatter`` (the FineWeb pipeline's last step): e-mail addresses by a
pattern of the address grammar's common subset; IPv4 and IPv6 addresses by pattern, each
candidate then parsed by ``ipaddress`` (a version string "1.2.3.456" or "std::vector" is not
an address) and, with ``public_only`` (datatrove's default), replaced only if it is globally
routable: 192.168.0.1, 127.0.0.1, 10.x and the documentation ranges identify no one. Phone
numbers (not in datatrove) are matched conservatively: North American numbers (555-123-4567,
(555) 123-4567, +1 555 123 4567) and "+" international numbers of 8 to 15 digits in groups,
never bare digit runs, dates (2024-01-15), times or ISBNs.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][\w.+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}(?![\w-])")
IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
# Candidates only: a time (10:20:30) matches too, and is dropped unparsed (an IPv6 address has
# eight groups or one "::"); the lookarounds keep the pattern fast in Python's engine.
IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{1,4}:|:){2,7}(?::|[0-9A-Fa-f]{1,4})(?![\w:])")
PHONE_NANP = re.compile(r"(?<![\w.+-])(?:\+1[ .-]?)?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}(?!\w|[.-]\d)")
PHONE_INTL = re.compile(r"(?<![\w.+-])\+\d{1,3}(?:[ .-]\(?\d{1,4}\)?){2,5}(?!\w|[.-]\d)")

KINDS = ("email", "ip", "phone")


def _ip_kept(text: str, public_only: bool) -> bool:
    """Whether ``text`` is left alone: not an address, or (``public_only``) not a public one."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return True
    return public_only and not address.is_global


def redact(text: str, placeholders: dict[str, str], public_only: bool = True) -> tuple[str, Counter]:
    """``text`` with every e-mail address, IP address and phone number of the kinds in
    ``placeholders`` replaced by its placeholder; how many of each kind. One pass a pattern,
    each skipped when the text lacks the character it needs."""
    counts: Counter = Counter()

    def sub(kind: str, keep=None):
        def replace(m: re.Match) -> str:
            if keep is not None and keep(m.group(0)):
                return m.group(0)
            counts[kind] += 1
            return placeholders[kind]
        return replace

    if "email" in placeholders and "@" in text:
        text = EMAIL.sub(sub("email"), text)
    if "ip" in placeholders:
        if "." in text:
            text = IPV4.sub(sub("ip", lambda s: _ip_kept(s, public_only)), text)
        if ":" in text:
            text = IPV6.sub(sub("ip", lambda s: ("::" not in s and s.count(":") != 7) or _ip_kept(s, public_only)), text)
    if "phone" in placeholders:
        if "+" in text:
            text = PHONE_INTL.sub(sub("phone", lambda s: not 8 <= sum(c.isdigit() for c in s) <= 15), text)
        text = PHONE_NANP.sub(sub("phone"), text)
    return text, counts

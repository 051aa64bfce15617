"""pii_redact: every planted address replaced by its placeholder, nothing else touched --
checked on real licence texts of this machine (/usr/share/common-licenses), which hold
dates, version numbers, section numbers and URLs that a careless pattern would take."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa

from curate.records import MESSAGES_TYPE
from curate.stage import StageContext
from curate.stages import PiiRedact

PLANTED = {
    "email": ["debian-devel@lists.debian.org", "joe.bloggs+lists@mail.example.co.uk", "r.stallman@gnu.org"],
    "ip": ["8.8.8.8", "151.101.1.69", "2a00:1450:4001:81c::200e"],
    "phone": ["555-123-4567", "(555) 123-4567", "+1 555 123 4567", "+44 20 7946 0958", "+49 (30) 1234 5678"],
}
LEFT_ALONE = ["192.168.0.1", "127.0.0.1", "::1", "2001:db8::1", "version 1.2.3.456", "std::vector<int>",
              "00:1A:2B:3C:4D:5E", "2024-01-15", "12:30:45", "ISBN 978-3-16-148410-0", "$1,234.56", "1234567890",
              "user at example dot com", "https://www.gnu.org/licenses/"]
PLACEHOLDER = {"email": "<EMAIL>", "ip": "<IP_ADDRESS>", "phone": "<PHONE_NUMBER>"}


def licences() -> list[str]:
    paths = sorted(Path("/usr/share/common-licenses").glob("*"))
    texts = [p.read_text(errors="replace") for p in paths if p.is_file()]
    assert len(texts) >= 5, "this machine's /usr/share/common-licenses is the real text these tests plant into"
    return texts


def planted(rng: random.Random) -> tuple[list[str], list[str], dict[str, int]]:
    """Each licence with addresses and look-alikes put between its paragraphs; the text
    with every address replaced as it must be; how many of each kind."""
    texts, expected, counts = [], [], {k: 0 for k in PLANTED}
    for text in licences():
        paragraphs = text.split("\n\n")
        given, wanted = list(paragraphs), list(paragraphs)
        for kind, values in PLANTED.items():
            for value in values:
                k = rng.randrange(len(given))
                given[k] += f" Contact: {value}."
                wanted[k] += f" Contact: {PLACEHOLDER[kind]}."
                counts[kind] += 1
        for value in LEFT_ALONE:
            k = rng.randrange(len(given))
            given[k] += f" See {value} here."
            wanted[k] += f" See {value} here."
        texts.append("\n\n".join(given))
        expected.append("\n\n".join(wanted))
    return texts, expected, counts


def test_every_planted_address_is_replaced_and_nothing_else():
    rng = random.Random(5)
    texts, expected, counts = planted(rng)
    clean = licences()
    table = pa.table({"id": [f"l{k}" for k in range(len(texts) * 2)], "text": texts + clean})
    out = PiiRedact()(table, StageContext(workers=2))
    assert len(out.rejected) == 0
    assert out.kept.column("text").to_pylist() == expected + clean  # the licences alone hold nothing to replace
    assert out.stats == {"rows_redacted": len(texts), "email_replaced": counts["email"], "ip_replaced": counts["ip"],
                         "phone_replaced": counts["phone"]}


def test_private_ips_are_replaced_when_asked_and_a_kind_can_be_left_alone():
    table = pa.table({"id": ["a"], "text": ["Router at 192.168.0.1, mail admin@example.org, call 555-123-4567."]})
    out = PiiRedact(public_ips_only=False, phone=None, email="[email]")(table)
    assert out.kept.column("text").to_pylist() == ["Router at <IP_ADDRESS>, mail [email], call 555-123-4567."]
    assert "phone_replaced" not in out.stats


def test_sft_rows_are_redacted_in_every_turn():
    conv = [{"role": "user", "content": "Mail me at ann@example.org please."},
            {"role": "assistant", "content": "I will write to ann@example.org and call +44 20 7946 0958."}]
    table = pa.table({"id": ["s"], "messages": pa.array([conv], MESSAGES_TYPE)})
    out = PiiRedact()(table)
    turns = out.kept.column("messages").to_pylist()[0]
    assert [t["content"] for t in turns] == ["Mail me at <EMAIL> please.", "I will write to <EMAIL> and call <PHONE_NUMBER>."]
    assert out.stats["email_replaced"] == 2 and out.stats["rows_redacted"] == 1

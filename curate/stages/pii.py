"""pii_redact: e-mail addresses, IP addresses and phone numbers replaced by placeholders.

The patterns and their guards are ``curate.algorithms.pii`` (datatrove's ``PIIFormatter``
for e-mail and IP addresses, public IPs only by default; conservative phone patterns).
Rejects nothing: each text is edited in place (``curate datasets diff`` shows the edits),
and ``stats`` count the replacements of each kind and the rows edited. SFT rows are
redacted in every turn, prompt and response alike.
"""

from __future__ import annotations

from collections import Counter
from functools import partial

import pyarrow as pa

from ..algorithms import pii
from ..errors import StageError
from ..records import default_text_field, shape_of
from ..stage import Stage, StageConfig, StageContext, StageOutput, split, with_columns

BATCH_ROWS = 1000


class PiiRedactConfig(StageConfig):
    field: str | None = None
    """What to redact: text or a string column; SFT rows: every turn (None: text, or the messages of SFT rows)."""
    email: str | None = "<EMAIL>"
    """The placeholder for e-mail addresses (null: leave them)."""
    ip: str | None = "<IP_ADDRESS>"
    """The placeholder for IPv4 and IPv6 addresses (null: leave them)."""
    phone: str | None = "<PHONE_NUMBER>"
    """The placeholder for phone numbers (null: leave them)."""
    public_ips_only: bool = True
    """Replace only globally routable IP addresses (datatrove's default): 192.168.0.1 or 127.0.0.1 identify no one."""


class PiiRedact(Stage):
    name = "pii_redact"
    version = "1"
    Config = PiiRedactConfig
    config: PiiRedactConfig
    row_wise = True

    def process(self, table: pa.Table, ctx: StageContext) -> StageOutput:
        c = self.config
        placeholders = {k: v for k, v in (("email", c.email), ("ip", c.ip), ("phone", c.phone)) if v is not None}
        fn = partial(_redact_texts, placeholders, c.public_ips_only)
        sft = c.field is None and shape_of(table) == "sft"
        if sft:
            conversations = table.column("messages").to_pylist()
            flat = [m["content"] for conv in conversations for m in conv]
            done = ctx.map_batches(fn, flat, BATCH_ROWS, self.name)
            out, k = [], 0
            edited_rows, counts = 0, Counter()
            for conv in conversations:
                turns = done[k : k + len(conv)]
                k += len(conv)
                edited_rows += any(n for _, n in turns)
                for _, n in turns:
                    counts.update(n)
                out.append([{**m, "content": text} for m, (text, _) in zip(conv, turns)])
            table = with_columns(table, {"messages": pa.array(out, table.schema.field("messages").type)})
        else:
            field = c.field or default_text_field(table)
            if field not in table.column_names or not pa.types.is_string(table.schema.field(field).type):
                raise StageError(f"pii_redact: '{field}' is not a text column (columns: {', '.join(table.column_names)})")
            done = ctx.map_batches(fn, [v or "" for v in table.column(field).to_pylist()], BATCH_ROWS, self.name)
            counts = Counter()
            for _, n in done:
                counts.update(n)
            edited_rows = sum(1 for _, n in done if n)
            table = with_columns(table, {field: pa.array([t for t, _ in done], pa.string())})
        stats = {"rows_redacted": edited_rows, **{f"{kind}_replaced": counts[kind] for kind in pii.KINDS if kind in placeholders}}
        return split(table, [True] * len(table), "pii").with_stats(stats)


def _redact_texts(placeholders: dict[str, str], public_only: bool, batch: list[str]) -> list[tuple[str, Counter]]:
    return [pii.redact(text, placeholders, public_only) for text in batch]

"""The two canonical row shapes and how to read text out of them.

* SFT rows carry ``messages``: a list of ``{role, content}`` turns (system / user /
  assistant), the chat format TRL, axolotl and LLaMA-Factory read.
* Pretraining rows carry ``text``.

Every row has a stable string ``id``. Optional columns: ``source``, ``answer`` (a
reference final answer), ``category`` and whatever scores stages add.

Stages that look at text name *what* text with a ``field``: ``text`` (pretraining),
``prompt`` (every turn before the last assistant turn), ``response`` (the last
assistant turn), ``conversation`` (all turns), or the name of any string column.
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa

from .errors import StageError

ROLES = ("system", "user", "assistant")
MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES_TYPE = pa.list_(MESSAGE_TYPE)

TextField = Literal["text", "prompt", "response", "conversation"]
TEXT_FIELDS: tuple[str, ...] = ("text", "prompt", "response", "conversation")

Shape = Literal["sft", "text"]


def shape_of(table: pa.Table) -> Shape:
    names = table.column_names
    if "messages" in names:
        return "sft"
    if "text" in names:
        return "text"
    raise StageError(
        "table has neither a 'messages' column (SFT) nor a 'text' column (pretraining); "
        f"columns are {names}"
    )


def prompt_of(messages: list[dict]) -> str:
    """Every turn before the last assistant turn, joined; the prompt a response answers."""
    last = _last_assistant(messages)
    return "\n\n".join(m["content"] for m in messages[:last] if m["role"] != "system")


def prompt_messages(messages: list[dict]) -> list[dict]:
    """The turns before the last assistant turn (system turns included): what a chat model
    is given when it writes the response."""
    return list(messages[: _last_assistant(messages)])


def response_of(messages: list[dict]) -> str:
    last = _last_assistant(messages)
    return messages[last]["content"] if last < len(messages) else ""


def with_response(messages: list[dict], text: str) -> list[dict]:
    """``messages`` with the last assistant turn's content replaced by ``text``."""
    last = _last_assistant(messages)
    if last == len(messages):
        raise ValueError("no assistant turn to replace")
    out = [dict(m) for m in messages]
    out[last]["content"] = text
    return out


def conversation_of(messages: list[dict]) -> str:
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


def _last_assistant(messages: list[dict]) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "assistant":
            return i
    return len(messages)


def texts(table: pa.Table, field: str) -> list[str]:
    """The text each row holds under ``field`` (see the module docstring)."""
    names = table.column_names
    if field in ("prompt", "response", "conversation"):
        if "messages" not in names:
            raise StageError(f"field '{field}' needs SFT rows with a 'messages' column; columns are {names}")
        fn = {"prompt": prompt_of, "response": response_of, "conversation": conversation_of}[field]
        return [fn(m) for m in table.column("messages").to_pylist()]
    if field in names:
        col = table.column(field)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise StageError(f"column '{field}' holds {col.type}, not text")
        return [v if v is not None else "" for v in col.to_pylist()]
    raise StageError(
        f"no text field '{field}': use one of {', '.join(TEXT_FIELDS)} or a string column of {names}"
    )


def text_columns(field: str, names: list[str] | None = None) -> list[str]:
    """The columns ``texts(table, field)`` reads (so a stage can read only those); given the
    input's column ``names``, a field it cannot hold fails here, as ``texts`` would."""
    columns = ["messages"] if field in ("prompt", "response", "conversation") else [field]
    if names is not None and not set(columns) <= set(names):
        texts(pa.table({n: pa.array([], pa.string()) for n in names}), field)  # raises the StageError
    return columns


def default_text_field(table: pa.Table) -> str:
    """``response`` for SFT rows (what the model learns to produce), ``text`` otherwise."""
    return "response" if shape_of(table) == "sft" else "text"

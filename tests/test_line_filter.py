"""line_filter: C4's line rules remove exactly the lines they name, count them, and reject
what is left empty or too short, with the rule."""

from __future__ import annotations

import pyarrow as pa
import pytest

from curate.errors import StageError
from curate.stages import LineFilter

KEPT = [
    "The Debian Free Software Guidelines were first published in 1997.",
    "They define which licences the project considers free enough to distribute.",
    "Each guideline states one condition a licence must meet to qualify.",
    "Derived works must be allowed, under the same terms as the original.",
    "A licence may not discriminate against any person or group of persons.",
    'The project "recommends" reading the full text before choosing a licence.',
]
REMOVED = {
    "no_terminal_punctuation": ["Home | About | Contact", "Read more...", "Table of contents"],
    "too_few_words": ["Yes.", "Go now!"],
    "javascript": ["Please enable JavaScript in your browser to view this page."],
    "policy": ["By using this site you agree to our Terms of Use and Privacy Policy.",
               "This website uses cookies to improve your experience."],
    "too_long_word": ["A line with a " + "x" * 1001 + " word in it."],
}


def page(extra: list[str] = ()) -> str:
    lines = [KEPT[0], REMOVED["no_terminal_punctuation"][0], KEPT[1], "", *REMOVED["too_few_words"], KEPT[2],
             REMOVED["javascript"][0], "   " + KEPT[3] + "   ", *REMOVED["policy"], REMOVED["no_terminal_punctuation"][1],
             KEPT[4], REMOVED["too_long_word"][0], REMOVED["no_terminal_punctuation"][2], KEPT[5], *extra]
    return "\n".join(lines)


def test_c4_rules_remove_exactly_the_lines_they_name_and_count_them():
    table = pa.table({"id": ["a"], "text": [page()]})
    out = LineFilter()(table)
    assert out.kept.column("text").to_pylist() == ["\n".join(KEPT)]
    stats = out.stats
    assert {k.removeprefix("lines_removed_"): v for k, v in stats.items() if k.startswith("lines_removed_")} == {
        rule: len(lines) for rule, lines in REMOVED.items()}
    assert stats["lines_in"] == len(KEPT) + sum(map(len, REMOVED.values())) == stats["lines_kept"] + sum(
        v for k, v in stats.items() if k.startswith("lines_removed_")) + stats["lines_in_rejected_rows"]


def test_citations_are_cut_and_page_rules_reject_the_page_with_its_text_unchanged():
    cited = "Debian was first announced in August 1993 by Ian Murdock.[1] It grew quickly.[citation needed]"
    out = LineFilter()(pa.table({"id": ["a"], "text": [page([cited])]}))
    assert out.kept.column("text").to_pylist()[0].endswith("Debian was first announced in August 1993 by Ian Murdock. "
                                                           "It grew quickly.")
    text = page(["Lorem ipsum dolor sit amet, consectetur adipiscing elit."])
    braces = page(["The configuration reads {\"key\": 1} from the file."])
    out = LineFilter()(pa.table({"id": ["l", "b"], "text": [text, braces]}))
    assert len(out.kept) == 0
    rejected = {r["id"]: r for r in out.rejected.to_pylist()}
    assert rejected["l"]["reason"] == "lorem_ipsum" and rejected["l"]["text"] == text  # the page as it came
    assert rejected["b"]["reason"] == "curly_bracket" and "C4 drops the page" in rejected["b"]["detail"]
    out = LineFilter(curly_bracket="line", lorem_ipsum="line")(pa.table({"id": ["l", "b"], "text": [text, braces]}))
    assert out.kept.column("text").to_pylist() == ["\n".join(KEPT)] * 2
    assert out.stats["lines_removed_lorem_ipsum"] == 1 and out.stats["lines_removed_curly_bracket"] == 1


def test_a_page_left_empty_or_too_short_is_rejected_with_the_rule():
    menu = "Home\nAbout us\nContact\nThis website uses cookies to improve your experience."
    short = "\n".join(KEPT[:2])
    out = LineFilter()(pa.table({"id": ["menu", "short", "blank"], "text": [menu, short, " \n\n "]}))
    rejected = {r["id"]: r for r in out.rejected.to_pylist()}
    assert rejected["menu"]["reason"] == "no_terminal_punctuation"
    assert rejected["menu"]["detail"] == "every line removed: no_terminal_punctuation 3, policy 1"
    assert rejected["short"]["reason"] == "too_few_sentences" and "2 sentences < 5" in rejected["short"]["detail"]
    assert rejected["blank"]["reason"] == "empty"
    assert out.stats["lines_in_rejected_rows"] == 2  # the short page's two lines, dropped with it
    assert len(LineFilter(min_sentences=2)(pa.table({"id": ["s"], "text": [short]})).kept) == 1


def test_an_sft_rows_response_is_cleaned_and_a_field_that_is_no_text_is_named():
    conversation = [{"role": "user", "content": "Home\nWhat are the guidelines?"}, {"role": "assistant", "content": page()}]
    table = pa.table({"id": ["a"], "messages": [conversation], "n": [1]})
    out = LineFilter()(table)
    messages = out.kept.column("messages").to_pylist()[0]
    assert messages[0]["content"] == "Home\nWhat are the guidelines?" and messages[1]["content"] == "\n".join(KEPT)
    with pytest.raises(StageError, match="line_filter edits a text column or an SFT row's response; 'n' is neither"):
        LineFilter(field="n")(table)


def test_bad_input_is_a_reject_with_a_reason_in_each_pretraining_stage(tmp_path):
    """Binary bytes, a 50 MB document and text left empty by cleaning: rejects with reasons
    (or, for pii_redact, which rejects nothing, edited and kept); the run goes on."""
    from curate.stages import LanguageId, PiiRedact

    binary = bytes(range(256)).decode("latin-1") * 4
    huge = ("The archive keeps every release of the distribution for years. " * 790_000).strip()  # 50 MB
    table = pa.table({"id": ["binary", "huge", "empty", "good"], "text": [binary, huge, "Home\nMenu\n", page()]})
    out = LineFilter()(table)
    assert out.kept.column("id").to_pylist() == ["huge", "good"]  # the huge one: one long line of sentences
    reasons = dict(zip(out.rejected.column("id").to_pylist(), out.rejected.column("reason").to_pylist()))
    assert reasons == {"binary": "no_terminal_punctuation", "empty": "no_terminal_punctuation"}
    out = LanguageId()(table)
    assert sorted(out.kept.column("id").to_pylist()) == ["good", "huge"]
    assert set(out.rejected.column("reason").to_pylist()) == {"language"}
    assert len(PiiRedact()(table).kept) == 4
    # quality_classifier scores every row, the 50 MB one by its first max_chars, the binary and the empty ones too
    import json

    from curate.stages import QualityClassifier

    positives = tmp_path / "positives.jsonl"
    positives.write_text("".join(json.dumps({"text": page()}) + "\n" for _ in range(3)))
    out = QualityClassifier(positives=str(positives), top_fraction=0.5)(table)
    assert len(out.kept) + len(out.rejected) == 4 and set(out.rejected.column("reason").to_pylist()) == {"low_quality"}
    assert "good" in out.kept.column("id").to_pylist()  # a copy of the positives scores highest

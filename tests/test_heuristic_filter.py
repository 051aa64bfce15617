"""heuristic_filter: each Gopher/C4 rule rejects what it should, with its own reason,
and the repetition statistics match values computed by hand."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from curate.algorithms.textstats import Document, duplicate_fractions, ngram_char_fractions
from curate.errors import RecipeError
from curate.records import MESSAGES_TYPE
from curate.stage import Reporter, StageContext
from curate.stages.heuristics import HeuristicFilter

# Plain prose written for this test: ~120 words, no repeated lines, no loops.
CLEAN = (
    "Every spring the town council opens the old orchard to visitors who want to walk "
    "between the apple trees and learn how the grafts were made. A retired teacher leads "
    "most of the tours, and she explains that the oldest trees were planted by a family "
    "of millers more than a century ago. Children usually ask why some branches carry two "
    "different kinds of fruit, which gives her a chance to describe budding, patience and "
    "careful record keeping. After the walk, people gather near the cider press, taste "
    "small cups of juice and write questions on cards that volunteers answer later in the "
    "local newsletter. The orchard is not large, yet it has become a quiet place where "
    "neighbours meet, compare gardens and plan the summer fair together."
)


def table(*texts: str) -> pa.Table:
    return pa.table({"id": [f"r{i}" for i in range(len(texts))], "text": list(texts)})


def sft(*pairs: tuple[str, str]) -> pa.Table:
    messages = [[{"role": "user", "content": p}, {"role": "assistant", "content": r}] for p, r in pairs]
    return pa.table({"id": [f"s{i}" for i in range(len(pairs))], "messages": pa.array(messages, MESSAGES_TYPE)})


def verdict(text: str, **config) -> tuple[str, str] | None:
    """(reason, detail) for one text, or None when it is kept."""
    kept, rejected, _ = HeuristicFilter(config)(table(text))
    if kept.num_rows:
        return None
    row = rejected.to_pylist()[0]
    return row["reason"], row["detail"]


def lines(*items: str) -> str:
    return "\n".join(items)


# Each case: (text, config overrides, expected reason, a number the detail must name).
# Repetition breaks several repetition rules at once (a repeated line repeats its
# n-grams); every other text breaks only its own rule.
TOO_SHORT = "The tired traveller and the curious merchant rested beside the river."
TINY = "a I am an as at be by do go he if in is it me my no of oh ok on or so to up us we ox ax".split()
SHORT_WORDS = " ".join(TINY + TINY[::-1])  # 60 words, no bigram twice
LONG_WORDS = (
    "The internationalisation and counterrevolutionary electroencephalogram incomprehensibility "
    "uncharacteristically disproportionately telecommunications misunderstandings responsibilities "
    "indistinguishable interdisciplinary overcompensation reconceptualising institutionalised "
    "transformational unconstitutional characterisation experimentations multiculturalism "
    "compartmentalised environmentalists hyperventilating oversimplification professionalisation "
    "recommendations straightforwardly thermodynamically unquestionably"
)
HASHTAGS = " ".join(f"#{w}" if i % 4 == 0 else w for i, w in enumerate(CLEAN.split()))
NUMBERS = "The totals of the survey and its tables were " + " ".join(str(1000 + 37 * i) for i in range(60))
NO_STOP_WORDS = (
    "Quick brown foxes jumped over lazy dogs near quiet rivers while farmers planted "
    "wheat, barley, oats, beans, carrots, onions, peppers, lettuce, cabbage, tomatoes. "
    "Engineers measured bridges; painters mixed colours; sailors mended ropes; bakers "
    "kneaded dough; miners carried lamps underground during winter months; doctors "
    "visited villages every Tuesday, writing careful notes about fevers, coughs, rashes "
    "plus sprained ankles. Musicians rehearsed symphonies late into evenings."
)
BULLETS = lines(
    "- Coil the ropes neatly and hang them near the mast.",
    "- Sails must be dried before anyone folds them away.",
    "• Anchors stay on deck unless the harbour master says otherwise.",
    "- Check every lamp for oil when evening comes.",
    "* Barrels of fresh water belong below, strapped against the hull.",
    "- Nets are mended on Sundays by whoever lost the card game.",
    "- Maps live in the captain's cabin, rolled inside a leather tube.",
)
ELLIPSES = lines(
    "The captain wrote that the storm had passed and that the crew was tired but safe...",
    "Nobody could tell whether the harbour lights would still be working by the evening...",
    "We waited on deck for a signal from the shore that never seemed to come at all...",
    "Then the radio crackled and a calm voice read out the new instructions for the night.",
    "Everyone cheered, packed the wet blankets away and started to prepare a warm supper.",
)
NO_TERMINAL = lines(
    "Shopping list for the weekend trip to the lake",
    "bread and cheese for the first evening",
    "two bottles of water for each of the walkers",
    "a map of the northern trail with the shelters marked",
    "matches, candles and a spare torch for the tent",
    "warm socks that have been washed and dried",
)
REPEATED_LINE = lines(*["the children walked to the river with their teachers and a basket of bread"] * 10)
LONG_LINE = ("Our neighbour repaired the fence, painted the gate and planted a long row of tulips along "
             "the path that leads to the old stone well behind the barn")
REPEATED_LONG_LINE = lines(
    LONG_LINE, "The weather was mild.", LONG_LINE, "Birds sang all day.", "We ate outside.",
    LONG_LINE, "The dog slept.", "Nobody complained.", "Tea was served.", "Then it rained.",
)
PARAGRAPH = "The museum opened a new hall for maps and the visitors came early to see it."
REPEATED_PARAGRAPH = "\n\n".join([PARAGRAPH] * 4 + [CLEAN])
LONG_PARAGRAPH = CLEAN[:400]
REPEATED_LONG_PARAGRAPH = "\n\n".join([LONG_PARAGRAPH, "Short note one.", LONG_PARAGRAPH, "Short note two.",
                                       "Short note three.", "Short note four.", "Short note five."])
TOP_BIGRAM = " ".join(f"the cat with {w}" for w in (
    "marbles", "feathers", "buttons", "ribbons", "pebbles", "candles", "pencils", "saucers", "lanterns",
    "blankets", "teacups", "whistles", "acorns", "mittens", "paddles"))
LOOP_SENTENCE = "a small wooden boat drifted slowly past the sleeping lighthouse keeper's cottage"
REPEATED_SENTENCE = f"{CLEAN} {LOOP_SENTENCE}, then {LOOP_SENTENCE} again, and the evening grew cold."
LINES_OFF = {"max_duplicate_line_fraction": None, "max_duplicate_line_char_fraction": None}

CASES = {
    "min_words": (TOO_SHORT, {}, "11"),
    "max_words": (CLEAN, {"max_words": 100}, "100"),
    "min_chars": (CLEAN, {"min_chars": 5000}, str(len(CLEAN))),
    "max_chars": (CLEAN, {"max_chars": 100}, str(len(CLEAN))),
    "min_mean_word_length": (SHORT_WORDS, {}, "1.933"),
    "max_mean_word_length": (LONG_WORDS, {"min_words": 20}, "16.27"),
    "max_symbol_word_ratio": (HASHTAGS, {}, "0.25"),
    "max_curly_bracket_ratio": (CLEAN + " {x}", {"max_curly_bracket_ratio": 0.0}, "0"),
    "reject_lorem_ipsum": (CLEAN + " Lorem Ipsum dolor sit amet.", {}, "lorem ipsum"),
    "min_alpha_word_fraction": (NUMBERS, {}, "0.8"),
    "min_stop_words": (NO_STOP_WORDS, {}, "0"),
    "max_bullet_lines_ratio": (BULLETS, {}, "1"),
    "max_ellipsis_lines_ratio": (ELLIPSES, {}, "0.6"),
    "min_lines_with_terminal_punctuation_fraction": (
        NO_TERMINAL, {"min_lines_with_terminal_punctuation_fraction": 0.5}, "0"),
    "max_duplicate_line_fraction": (REPEATED_LINE, {}, "0.9"),
    "max_duplicate_line_char_fraction": (REPEATED_LONG_LINE, {}, "0.2"),
    "max_duplicate_paragraph_fraction": (REPEATED_PARAGRAPH, LINES_OFF, "0.6"),
    "max_duplicate_paragraph_char_fraction": (REPEATED_LONG_PARAGRAPH, LINES_OFF, "0.2"),
    "max_top_ngram_char_fraction": (TOP_BIGRAM, {}, "2-gram"),
    "max_duplicate_ngram_char_fraction": (REPEATED_SENTENCE, {}, "5-gram"),
}


def test_clean_prose_passes_every_default_rule():
    assert 100 <= len(CLEAN.split()) <= 140
    assert verdict(CLEAN) is None


@pytest.mark.parametrize("rule", CASES)
def test_each_rule_rejects_its_crafted_text_with_its_own_reason(rule):
    text, config, named = CASES[rule]
    reason, detail = verdict(text, **config)
    assert reason == rule, detail
    assert named in detail


ALSO_REPETITIVE = {"max_duplicate_line_fraction", "max_duplicate_line_char_fraction",
                   "max_duplicate_paragraph_fraction", "max_duplicate_paragraph_char_fraction"}


@pytest.mark.parametrize("rule", CASES)
def test_turning_a_rule_off_stops_it_firing(rule):
    text, config, _ = CASES[rule]
    off = False if rule == "reject_lorem_ipsum" else None
    result = verdict(text, **{**config, rule: off})
    if rule in ALSO_REPETITIVE:
        assert result is not None and result[0] != rule
    else:
        assert result is None


def test_detail_names_value_and_threshold():
    assert verdict(TOO_SHORT) == ("min_words", "words 11 < 50")
    reason, detail = verdict(REPEATED_LINE)
    assert (reason, detail) == ("max_duplicate_line_fraction", "duplicate line fraction 0.9 > 0.3")


def test_a_repeated_five_gram_loop_is_a_duplicate_ngram_once_top_ngrams_are_off():
    loop = " ".join(["the engine said that it would be fine"] * 12)
    assert verdict(loop)[0] == "max_top_ngram_char_fraction"
    reason, detail = verdict(loop, max_top_ngram_char_fraction=None)
    assert reason == "max_duplicate_ngram_char_fraction"
    assert detail.startswith("duplicate 5-gram char fraction 1 > 0.15")


def test_empty_and_blank_texts_are_rejected_by_the_length_rule():
    kept, rejected, _ = HeuristicFilter()(table("", "   \n\n  ", CLEAN))
    assert kept.column("id").to_pylist() == ["r2"]
    assert rejected.column("reason").to_pylist() == ["min_words", "min_words"]
    assert rejected.column("detail").to_pylist() == ["words 0 < 50", "words 0 < 50"]


def test_empty_text_with_the_length_rule_off_does_not_crash():
    # Ratios are undefined without words and never fire; the stop-word count is 0.
    assert verdict("", min_words=None) == ("min_stop_words", "distinct stop words 0 < 2")
    assert verdict("", min_words=None, min_stop_words=None) is None


def test_empty_table_gives_empty_outputs_with_reason_columns():
    empty = pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())})
    kept, rejected, added = HeuristicFilter()(empty)
    assert (kept.num_rows, rejected.num_rows, added) == (0, 0, 0)
    assert rejected.schema.field("reason").type == pa.string()
    assert rejected.schema.field("detail").type == pa.string()


def test_rows_are_conserved_and_rejected_rows_carry_reason_and_detail():
    rows = table(CLEAN, TOO_SHORT, REPEATED_LINE, CLEAN.upper(), BULLETS)
    kept, rejected, _ = HeuristicFilter()(rows)
    assert kept.num_rows + rejected.num_rows == rows.num_rows
    assert sorted(kept.column("id").to_pylist() + rejected.column("id").to_pylist()) == rows.column("id").to_pylist()
    assert kept.column("id").to_pylist() == ["r0", "r3"]
    assert kept.column_names == rows.column_names
    by_id = {r["id"]: r for r in rejected.to_pylist()}
    assert by_id["r2"]["text"] == REPEATED_LINE
    assert all(r["reason"] and r["detail"] for r in by_id.values())
    assert [by_id[i]["reason"] for i in ("r1", "r2", "r4")] == [
        "min_words", "max_duplicate_line_fraction", "max_bullet_lines_ratio"]


def test_sft_rows_are_judged_on_the_response_unless_field_says_otherwise():
    rows = sft(("hi", CLEAN), (CLEAN, "ok"))
    kept, rejected, _ = HeuristicFilter()(rows)
    assert kept.column("id").to_pylist() == ["s0"]
    assert rejected.column("reason").to_pylist() == ["min_words"]
    kept, rejected, _ = HeuristicFilter(field="prompt")(rows)
    assert kept.column("id").to_pylist() == ["s1"]
    assert rejected.column("detail").to_pylist() == ["words 1 < 50"]


def test_progress_is_reported_in_batches_naming_the_row_count():
    calls = []

    class Recording(Reporter):
        def track(self, items, total=None, description=""):
            calls.append((total, description))
            yield from items

    HeuristicFilter()(table(CLEAN, TOO_SHORT), StageContext(reporter=Recording()))
    assert calls == [(1, "heuristic_filter (2 rows)")]


def test_unknown_config_key_is_a_recipe_error_naming_it():
    with pytest.raises(RecipeError, match="min_wrods"):
        HeuristicFilter(min_wrods=10)


@pytest.mark.parametrize("config, named", [
    ({"max_duplicate_ngram_char_fraction": {0: 0.1}}, "n-gram size 0"),
    ({"max_top_ngram_char_fraction": {2: 1.5}}, "between 0 and 1"),
    ({"max_duplicate_line_fraction": 2.0}, "max_duplicate_line_fraction"),
    ({"min_words": 10, "max_words": 5}, "min_words=10 is above max_words=5"),
])
def test_invalid_thresholds_are_recipe_errors(config, named):
    with pytest.raises(RecipeError, match=named):
        HeuristicFilter(config)


# Repetition statistics, against values worked out by hand.

def test_duplicate_fractions_count_repeats_not_first_copies():
    assert duplicate_fractions(["a", "b", "a"]) == (1 / 3, 1 / 3)
    # 4 lines, 2 repeats of "aa": 2/4 of lines; chars 2 + 2 of 2 + 1 + 2 + 2 = 7
    assert duplicate_fractions(["aa", "b", "aa", "aa"]) == (0.5, 4 / 7)
    assert duplicate_fractions(["x", "y"]) == (0.0, 0.0)
    assert duplicate_fractions([]) == (None, None)


def test_line_and_paragraph_statistics_ignore_blank_lines_and_surrounding_space():
    doc = Document("a\n\n  b\na  \n")
    assert doc.lines == ["a", "b", "a"]
    assert doc.duplicate_line_fraction() == pytest.approx(1 / 3)
    assert doc.duplicate_line_char_fraction() == pytest.approx(1 / 3)
    doc = Document("x y\n\nz\n \nx y")
    assert doc.paragraphs == ["x y", "z", "x y"]
    assert doc.duplicate_paragraph_fraction() == pytest.approx(1 / 3)
    assert doc.duplicate_paragraph_char_fraction() == pytest.approx(3 / 7)


def stats(text: str, sizes=range(1, 7)) -> dict[int, tuple[float, float]]:
    return {n: (top, dup) for n, top, dup in ngram_char_fractions(text.split(), sizes)}


def test_ngram_fractions_weigh_words_by_their_characters():
    # words aa b aa b c: 7 characters. "aa b" occurs at 0 and 2 and covers 2+1+2+1 = 6.
    s = stats("aa b aa b c")
    assert s[2] == (6 / 7, 6 / 7)
    assert s[3] == (0.0, 0.0)  # aa-b-aa, b-aa-b, aa-b-c: no 3-gram repeats
    # unigrams: "aa" is the most frequent first-seen word (2 x 2 chars); aa and b repeat (6)
    assert s[1] == (4 / 7, 6 / 7)


def test_overlapping_occurrences_are_not_counted_twice():
    # "x x" occurs 3 times in "x x x x" but covers only the 4 characters there are.
    s = stats("x x x x")
    assert s[2] == (1.0, 1.0)
    assert s[3] == (1.0, 1.0)
    assert s[4] == (0.0, 0.0)


def test_duplicate_ngram_fraction_follows_gopher_definition():
    # The 5-gram "one two three four five" occurs twice: 19 characters each, of 41.
    s = stats("one two three four five one two three four five six", range(2, 7))
    assert s[5][1] == pytest.approx(38 / 41)
    assert s[6][1] == 0.0
    assert s[2][0] == pytest.approx(12 / 41)  # top bigram "one two": 2 x 6 characters


def test_a_most_frequent_ngram_seen_once_is_no_repetition():
    assert stats("alpha beta gamma delta")[2] == (0.0, 0.0)


def test_document_word_statistics():
    assert Document("Hello, world!").mean_word_length() == 5.0
    assert Document("a -- bb").mean_word_length() == 1.0
    assert Document("abc 123 x1 ...").alpha_word_fraction() == 0.5
    assert Document("abc 123 x1 ... ≤ é").alpha_word_fraction() == 0.5  # non-ASCII path
    assert Document("The other theory, with THAT.").stop_word_count() == 3
    assert Document("other theory together").stop_word_count() == 0
    assert Document("## a ... b …").symbol_word_ratio() == 4 / 5
    assert Document("").mean_word_length() is None


def reference_fractions(words: list[str], n: int) -> tuple[float, float]:
    """Gopher's definitions, computed the slow, obvious way: mark covered words."""
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    counts = {g: grams.count(g) for g in grams}
    total = sum(map(len, words))

    def covered(starts):
        marked = {i + k for i in starts for k in range(n)}
        return sum(len(words[i]) for i in marked) / total

    most = max(counts.values(), default=0)
    top = next((g for g in grams if counts[g] == most), None)
    top_fraction = covered([i for i, g in enumerate(grams) if g == top]) if most > 1 else 0.0
    return top_fraction, covered([i for i, g in enumerate(grams) if counts[g] > 1])


def test_ngram_fractions_match_the_obvious_computation_on_random_texts():
    rng = random.Random(7)
    for _ in range(300):
        vocabulary = ["a", "bb", "ccc", "a,", "dddd"][: rng.randint(1, 5)]
        words = [rng.choice(vocabulary) for _ in range(rng.randint(1, 40))]
        got = {n: (top, dup) for n, top, dup in ngram_char_fractions(words, range(1, 9))}
        for n in range(1, 9):
            assert got[n] == pytest.approx(reference_fractions(words, n)), (words, n)


def test_longer_ngrams_are_not_counted_once_a_shorter_one_shows_the_rule_cannot_fire():
    doc = Document(CLEAN, {2, 10})
    assert doc.top_ngram_char_fraction(2) < 0.2
    # every repeat of a 10-gram is made of repeated 2-grams, so the 2-gram duplicate
    # fraction bounds the 10-gram one: with a threshold above it, nothing more is counted
    assert doc.duplicate_ngram_char_fraction(10, skip_at_most=0.99) is None
    assert set(doc._ngrams) == {2}
    assert doc.duplicate_ngram_char_fraction(10) == 0.0


# -- FineWeb's rule set -------------------------------------------------------------------------
SENTENCES = [s.strip() + "." for s in CLEAN.split(".") if s.strip()]


def test_the_fineweb_rule_set_adds_its_four_rules_at_finewebs_values():
    config = HeuristicFilter(rule_set="fineweb").config
    assert (config.min_lines_with_terminal_punctuation_fraction, config.max_short_line_fraction,
            config.max_line_duplicate_char_ratio, config.max_newline_word_ratio) == (0.12, 0.67, 0.01, 0.3)
    assert config.min_words == 50  # the Gopher rules stay on
    assert HeuristicFilter(rule_set="fineweb", max_newline_word_ratio=0.5).config.max_newline_word_ratio == 0.5
    assert HeuristicFilter().config.max_short_line_fraction is None  # gopher: off


def test_each_fineweb_rule_rejects_what_it_names():
    one_paragraph = " ".join(SENTENCES)
    assert verdict(one_paragraph, rule_set="fineweb") is None
    assert verdict("\n".join(SENTENCES), rule_set="fineweb") is None  # one sentence a line: 9 lines, 120 words
    no_punctuation = "\n".join(s.rstrip(".") for s in SENTENCES)
    assert verdict(no_punctuation, rule_set="fineweb")[0] == "min_lines_with_terminal_punctuation_fraction"
    menu = one_paragraph + "\n" + "\n".join(["Home.", "News.", "Contact us.", "About.", "Shop."] * 1)
    reason, detail = verdict(menu, rule_set="fineweb")
    assert reason == "max_short_line_fraction" and detail == "short line fraction 0.8333 >= 0.67"
    repeated = "\n".join(SENTENCES + SENTENCES[:1])  # one line of 9 repeated: ~8% of the characters
    no_ngrams = {"max_top_ngram_char_fraction": None, "max_duplicate_ngram_char_fraction": None}  # a repeat repeats its n-grams
    reason, detail = verdict(repeated, rule_set="fineweb", **no_ngrams)
    assert reason == "max_line_duplicate_char_ratio" and ">= 0.01" in detail
    assert verdict(repeated, rule_set="gopher", **no_ngrams) is None  # Gopher's line rules allow one repeat in ten
    words = one_paragraph.split()
    listing = "\n".join(" ".join(words[k : k + 3]) + "." for k in range(0, len(words), 3))  # 3 words a line
    reason, _ = verdict(listing, rule_set="fineweb", max_short_line_fraction=None)
    assert reason == "max_newline_word_ratio"

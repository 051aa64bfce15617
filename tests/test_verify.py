import importlib.resources
import json
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pytest

from curate.algorithms.answers import Extracted, check_answer, extract_answer, same_answer
from curate.errors import CurateWarning, RecipeError, StageError
from curate.records import MESSAGES_TYPE
from curate.sources import SOURCES
from curate.stage import StageContext
from curate.stages import REGISTRY
from curate.stages.verify import Verify

PLAIN_NUMBER = re.compile(r"\s*-?\d+(?:\.\d+|/\d+)?\s*")


def answer(response: str, kind="math") -> tuple[str, str] | None:
    found = extract_answer(response, kind)
    return (found.text, found.rule) if found else None


# -- extraction ---------------------------------------------------------------------------

def test_the_last_box_wins_and_its_nested_braces_are_matched():
    assert answer(r"First \boxed{2}, then on reflection the result is \boxed{\frac{1}{2}}.") == (r"\frac{1}{2}", "boxed")
    assert answer(r"So $x = \fbox{\sqrt{\frac{3}{4}}}$") == (r"\sqrt{\frac{3}{4}}", "boxed")


def test_a_box_is_preferred_over_a_later_number_and_an_unclosed_box_is_skipped():
    assert answer(r"The answer is \boxed{29}. We checked all 3 cases in 12 minutes.") == ("29", "boxed")
    assert answer(r"We get \boxed{7}. Finally \boxed{\frac{1}{") == ("7", "boxed")  # cut off inside the second box


def test_answer_markers_take_the_expression_after_the_last_one():
    assert answer("The answer is 5 at first.\nAfter checking, the final answer is 42 apples.") == ("42", "answer_marker")
    assert answer("Natalia sold 48 + 24 = 72 clips.\n#### 1,234") == ("1,234", "answer_marker")
    assert answer("Answer: $-\\frac{3}{4}$") == ("-\\frac{3}{4}", "answer_marker")
    assert answer("The answer is 2^{n} + 1, for every n.") == ("2^{n} + 1", "answer_marker")


def test_a_summary_sentence_gives_its_stated_value_not_its_last_number():
    summary = "There are 29 valid strings of length 6 that have adjacent digits differing by less than or equal to 1."
    assert answer(summary) == ("29", "conclusion")
    assert answer("The smallest value of x^2/y^2 for x, y, z > 0 is 2, which is achieved when x=y=z.") == ("2", "conclusion")
    assert answer("The value of a that works is \\( a = -4 \\).") == ("a = -4", "conclusion")
    assert answer("The number of diagonals is given by the expression n(n-3)/2.") == ("n(n-3)/2", "conclusion")


def test_the_last_number_is_the_fallback():
    assert answer("f(5) = 11 + 7 = 18\nf(6) = f(4) + f(5) = 11 + 18 = 29") == ("29", "last_number")
    assert answer("Total: 3x + 4 and then -12") == ("-12", "last_number")  # "3x" is not a number, "-12" is


def test_the_fallback_is_conservative_on_real_champ_conclusions():
    """The misreads of real CHAMP conclusions the last-number rule made, each now right."""
    # a word fragment is never an answer: "non-negative" gave "non", judged false
    body = "Each factor is a square, so its value is at least 0.\nTherefore, all factors are non-negative."
    assert answer(body) is None and check_answer(None, "4") is None  # unknown, not false
    # a modulus is not an answer: "2^70 + 3^70 ≡ 0 (mod 13)." took 13, judged false though 0 is right
    assert answer("Adding the two residues: 2^70 + 3^70 ≡ 12 + 1 ≡ 0 (mod 13).") == ("0", "last_number")
    assert check_answer("0", "0") is True
    # a number inside a set is not an answer: "{1, 2, ..., 99}" took 99
    found = extract_answer("Hence exactly one integer n works in {1, 2, \\ldots, 99}.")
    assert found is None or found.text != "99"
    # a negated conclusion states no value: "there is no smallest value" took an earlier 7 and judged it true
    nothing = extract_answer("We tried m = 1, n = 1, giving 7.\nTherefore, there is no smallest value of |12^m - 5^n|.")
    assert nothing == Extracted("No", "negation") and check_answer(nothing.text, "7") is False
    # range bounds and hyphenated words are not answers; "at least 50" is (a minimum is stated so)
    assert answer("The count is found by checking n from 1 to 99") is None
    assert answer("The 180-degree turn maps it onto itself, so it is symmetric") is None
    assert answer("You need at least 50 questions to determine the product") == ("50", "last_number")
    # a number further up than the last paragraph is a step, not the conclusion
    assert answer("So x = 12.\n\nThe final expression is shown above.") is None


def test_yes_no_answers_and_denials_are_compared_with_yes_no_references():
    assert answer("No, a polyhedron with an odd number of faces cannot exist.") == ("No", "yes_no")
    assert answer("We checked every case.\nYes, the sequence is periodic.") == ("Yes", "yes_no")
    assert answer("There are no integer solutions to the equation (x^2-1)(y^2-1)+1985=z^2.") == ("No", "negation")
    assert answer("The number 1000...0001, with 1961 zeros in the middle, is not a prime number.") == ("No", "negation")
    for reference in ("No", "No integer solutions", "It is not possible", "The sequence is not periodic"):
        assert check_answer("No", reference) is True, reference
        assert check_answer("Yes", reference) is False, reference
    assert check_answer("Yes", "Yes, and the sequence is 1/2^3, 1/2^6, 1/2^9, ...") is True
    assert check_answer("No", "0") is None       # "there are no such n" may be a count of 0
    assert check_answer("No", "2178") is False   # "there is no such number" against a value
    assert check_answer("Yes", "42") is None
    # a solver that could not decide says nothing, not "No"
    assert extract_answer("I am not able to solve this problem.") is None
    assert extract_answer("It is not possible to determine the value without more information.") is None
    assert check_answer("1, 4, 9", "1, 4 and 9") is True  # "and" in a reference's list is a comma


def test_no_number_gives_no_answer_and_an_unknown_check():
    assert extract_answer("I am not able to solve this problem.") is None
    assert extract_answer("") is None
    assert check_answer(None, "7") is None


def test_text_answers_are_the_final_sentence_or_the_marker_clause():
    final = "So the biggest is the blue whale."
    assert answer(f"Whales are mammals.\n{final}", "text") == (final, "whole")
    assert answer("Let me think.\nAnswer: Blue whale", "text") == ("Blue whale", "answer_marker")


# -- comparison ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["math", "number"])
def test_fractions_decimals_and_latex_fractions_compare_exactly(kind):
    assert check_answer(r"\frac{3}{4}", "3/4", kind) is True
    assert check_answer(r"\frac{3}{4}", "0.75", kind) is True
    assert check_answer(r"\frac{3}{4}", "4/3", kind) is False
    assert check_answer("0.3333333", "1/3", kind) is True  # a decimal: relative tolerance 1e-6
    assert check_answer("0.33", "1/3", kind) is False


def test_negative_numbers_thousands_separators_and_percents():
    assert answer("So the balance is -3.") == ("-3", "conclusion")
    assert check_answer("-3", "-3") is True and check_answer("-3", "3") is False
    assert check_answer("1,000", "1000") is True and check_answer("1,000", "100") is False
    assert check_answer("1{,}000", "1000", "number") is True
    assert check_answer("50%", "0.5") is True and check_answer("50\\%", "50") is True
    assert check_answer("50%", "0.6") is False
    assert check_answer("x = 5", "5") is True and check_answer("f(6) = 11 + 18 = 29", "29", "number") is True


def test_an_answer_that_is_not_a_value_is_unknown_never_false():
    box = extract_answer(r"Hence it holds for \boxed{\text{all primes}}.")
    assert box == Extracted(r"\text{all primes}", "boxed")
    assert check_answer(box.text, "7") is None
    assert check_answer("all even numbers", "7", "number") is None
    assert check_answer("2^n", "7", "number") is None  # number kind does not read expressions
    assert check_answer("29", "No integer solutions") is None


def test_a_missing_reference_is_unknown():
    assert check_answer("5", None) is None
    assert check_answer("5", "") is None
    assert check_answer("5", "   ") is None


def test_symbolic_equivalence():
    assert check_answer("2^{n}", "2^n") is True
    assert check_answer(r"\sqrt{2}", "sqrt(2)") is True
    assert check_answer("n(n+1)/2", r"\frac{n(n+1)}{2}") is True
    assert check_answer("(x+1)^2", "x^2 + 2x + 1") is True
    assert check_answer(r"\binom{10}{5}", "252") is True
    assert check_answer("2^{n+1}", "2^n") is False
    assert check_answer("1", "2^(n-1)") is False
    assert check_answer("x = 6, y = 5", "y=5, x=6") is True


def test_a_partial_reading_is_no_reading():
    # math-verify alone reads "2^floor(n/2)*floor(n/2)!" as 2; then "2" would match it
    assert check_answer("2^floor(n/2)*floor(n/2)!", "2^floor(n/2)*floor(n/2)!") is True
    assert check_answer("2", "2^floor(n/2)*floor(n/2)!") is False


def test_powers_too_big_to_evaluate_are_refused_quickly():
    start = time.perf_counter()
    assert check_answer("2^{2^{100}}", "4") is None
    assert check_answer("(10^{1000000})!", "3") is None
    assert time.perf_counter() - start < 2


def test_text_answers_match_after_normalisation():
    assert check_answer("The Blue  Whale.", "blue whale", "text") is True
    assert check_answer("Ｙｅｓ!", "yes", "text") is True  # NFKC
    assert check_answer("No", "Yes", "text") is False
    assert check_answer("...", "Yes", "text") is None


def test_champ_style_references_find_their_value():
    response = "Choosing 5 of the 10 positions gives C(10, 5).\n\nThe number of such arrangements is 252."
    assert check_answer(extract_answer(response).text, "C(10, 5), or equivalently 252") is True
    assert check_answer("C(10, 5)", "C(10, 5), or equivalently 252") is True
    assert check_answer("251", "C(10, 5), or equivalently 252") is False
    assert check_answer("35.7%", "5/14, or approximately 35.7%") is True
    assert check_answer("0.36", "5/14, or approximately 35.7%") is False
    assert check_answer(r"\frac{5}{14}", "5/14, or approximately 35.7%") is True
    assert check_answer("-3", "-3 is the only possible value") is True
    assert check_answer("0", "0 (i.e., no such values)") is True
    assert check_answer("100", "100 (i.e., all values)") is True
    assert check_answer(r"\frac{2}{3}", "The limit exists and is equal to 2/3") is True
    assert check_answer("98", "98 values") is True
    assert check_answer("(n(n+1)/2)^2", "sum_(i=1)^n i^3, or equivalently (n(n+1)/2)^2") is True


def test_same_answer_compares_two_model_answers():
    half = Extracted(r"\frac{1}{2}", "boxed")
    assert same_answer(half, Extracted("0.5", "last_number")) is True
    assert same_answer(half, Extracted("1/3", "answer_marker")) is False
    assert same_answer(half, None) is None
    assert same_answer(Extracted("Blue whale", "whole"), Extracted("blue whale.", "whole"), "text") is True


def test_symbolic_checks_work_off_the_main_thread():
    # math-verify's signal-based timeouts raise outside the main thread unless turned off; the
    # inputs are used nowhere else, so no cached result hides a parse or a comparison
    cases = [("p = 7, q = 3", "q=3, p=7", True), ("p = 7, q = 4", "q=3, p=7", False), (r"b_{k} + \frac{1}{k}", "b_k + 1/k", True)]

    def run(case):
        assert threading.current_thread() is not threading.main_thread()
        return check_answer(case[0], case[1])

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(run, cases)) == [want for *_, want in cases]


# -- the stage ----------------------------------------------------------------------------

ROWS = [  # id, response, reference
    ("right", r"Adding the cases, the answer is \boxed{239}.", "239"),
    ("wrong", "There are 29 valid strings of length 6 that differ by at most 1.", "239"),
    ("no_number", "I could not finish the count.", "12"),
    ("no_reference", "The total is 17.", None),
    ("not_a_value", r"It holds for \boxed{\text{all primes}}.", "7"),
]


def table(rows=ROWS, answers=True) -> pa.Table:
    messages = [[{"role": "user", "content": "q"}, {"role": "assistant", "content": r}] for _, r, _ in rows]
    cols = {"id": [i for i, _, _ in rows], "messages": pa.array(messages, MESSAGES_TYPE)}
    if answers:
        cols["answer"] = [a for _, _, a in rows]
    return pa.table(cols)


def test_verify_adds_its_columns_and_rejects_nothing_by_default():
    assert REGISTRY["verify"] is Verify
    out = Verify()(table())
    rows = {r["id"]: r for r in out.kept.to_pylist()}
    assert {k: r["verified"] for k, r in rows.items()} == {
        "right": "true", "wrong": "false", "no_number": "unknown", "no_reference": "unknown", "not_a_value": "unknown"}
    assert (rows["wrong"]["extracted_answer"], rows["wrong"]["answer_rule"]) == ("29", "conclusion")
    assert (rows["right"]["extracted_answer"], rows["right"]["answer_rule"]) == ("239", "boxed")
    assert rows["no_number"]["extracted_answer"] is None and rows["no_number"]["answer_rule"] is None
    assert out.rejected.num_rows == 0
    assert out.stats == {"verified_true": 1, "verified_false": 1, "verified_unknown": 3}
    again = Verify()(out.kept)  # a second verify replaces the columns
    assert again.kept.column_names == out.kept.column_names


def test_drop_unverified_rejects_wrong_answers_with_what_was_compared():
    out = Verify(drop_unverified=True)(table())
    assert out.kept.num_rows + out.rejected.num_rows == len(ROWS)
    (rej,) = out.rejected.to_pylist()
    assert rej["id"] == "wrong" and rej["reason"] == "wrong_answer"
    assert rej["detail"] == "extracted '29' (conclusion) != reference '239'"


def test_drop_unknown_also_rejects_what_could_not_be_checked():
    out = Verify(drop_unverified=True, drop_unknown=True)(table())
    assert out.kept.num_rows + out.rejected.num_rows == len(ROWS)
    assert out.kept.column("id").to_pylist() == ["right"]
    reasons = dict(zip(out.rejected.column("id").to_pylist(), out.rejected.column("reason").to_pylist()))
    assert reasons == {"wrong": "wrong_answer", "no_number": "unverifiable", "no_reference": "unverifiable",
                       "not_a_value": "unverifiable"}
    details = dict(zip(out.rejected.column("id").to_pylist(), out.rejected.column("detail").to_pylist()))
    assert details["no_reference"] == "no reference answer"
    assert "cannot be compared" in details["not_a_value"] and "no final answer" in details["no_number"]


def test_a_table_without_the_answer_column_is_all_unknown_unless_a_column_was_named():
    with pytest.warns(CurateWarning, match="the table has no 'answer' column"):  # a likely mistake, said once
        out = Verify()(table(answers=False))
    assert set(out.kept.column("verified").to_pylist()) == {"unknown"}
    with pytest.warns(CurateWarning):
        dropped = Verify(drop_unknown=True)(table(answers=False)).rejected
    assert set(dropped.column("detail").to_pylist()) == {"no reference answer (the table has no 'answer' column)"}
    with pytest.raises(StageError, match=r"answer_column 'gold' is not a column .* columns are id, messages, answer"):
        Verify(answer_column="gold")(table())


def test_number_references_in_an_integer_column_are_read():
    t = table([("a", "So the total is 72.", None), ("b", "The total is 71.", None)], answers=False)
    out = Verify(kind="number", answer_column="gold")(t.append_column("gold", pa.array([72, 72])))
    assert out.kept.column("verified").to_pylist() == ["true", "false"]


def test_unknown_config_keys_are_errors():
    with pytest.raises(RecipeError, match="drop_wrong: unknown key"):
        Verify(drop_wrong=True)


# -- the CHAMP pool -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def champ():
    """The CHAMP pool's rows with a plain-number reference or a human first-wrong-step label,
    verified once: (rows, labels) with labels[(problem, model, setting)] = fully correct."""
    pool = SOURCES["champ"]({"include_model_solutions": True}).read(StageContext()).kept
    data = json.loads((importlib.resources.files("champ_dataset") / "dataset_files/v0.json").read_bytes())
    labels = {}
    for pid, problem in data["problems"].items():
        for key, fws in problem["fws_annotations"].items():
            model, setting = key.split("|", 1)
            labels[(pid, model, setting)] = fws["start_idx"] in (None, "None")
    keys = zip(pool.column("problem_id").to_pylist(), pool.column("model").to_pylist(), pool.column("prompt_setting").to_pylist())
    answers = pool.column("answer").to_pylist()
    keep = [k in labels or bool(PLAIN_NUMBER.fullmatch(a)) for k, a in zip(keys, answers)]
    start = time.perf_counter()
    out = Verify()(pool.filter(pa.array(keep)))
    print(f"\nverified {out.kept.num_rows:,} CHAMP rows in {time.perf_counter() - start:.1f} s: {out.stats}")
    return out.kept.to_pylist(), labels


def test_every_plain_number_reference_gets_a_verdict_where_the_response_states_a_number(champ):
    rows, _ = champ
    plain = [r for r in rows if PLAIN_NUMBER.fullmatch(r["answer"])]
    assert len(plain) == 6120  # 85 problems x 72 solutions
    counts = Counter(r["verified"] for r in plain)
    no_answer = [r for r in plain if r["extracted_answer"] is None]
    unknown = [r for r in plain if r["verified"] == "unknown"]
    print(f"plain-number references: {dict(counts)}; no answer found in {len(no_answer)}")
    # a number against a number always decides; unknown is left to answers that are expressions we cannot read
    assert all(r["extracted_answer"] is None or not PLAIN_NUMBER.fullmatch(r["extracted_answer"]) for r in unknown)
    # no answer (measured: 125 of 6,120): a last paragraph that is cut off, says the value "cannot be
    # determined", or states a condition with no value -- the conservative fallback takes no number from above it
    assert len(no_answer) < 0.025 * len(plain)
    assert len(unknown) < 0.035 * len(plain)  # measured: 191
    assert counts["false"] > 0.5 * len(plain) and counts["true"] > 0.3 * len(plain)


def test_verdicts_agree_with_champs_human_labels(champ):
    rows, labels = champ
    by_label: dict[tuple[bool, bool], Counter] = {(p, c): Counter() for p in (True, False) for c in (True, False)}
    for r in rows:
        key = (r["problem_id"], r["model"], r["prompt_setting"])
        if key in labels:
            by_label[bool(PLAIN_NUMBER.fullmatch(r["answer"])), labels[key]][r["verified"]] += 1
    for (plain, correct), counts in by_label.items():
        print(f"{'plain-number' if plain else 'other'} references, {'fully correct' if correct else 'wrong step'}: "
              f"{dict(counts)}")
    correct, flawed = by_label[True, True], by_label[True, False]
    assert correct.total() >= 30 and flawed.total() >= 130
    # every solution the annotators found fully correct is verified true (measured: 32 of 32)
    assert correct["true"] >= 0.95 * correct.total()
    # a solution with a wrong step can still reach the right number; most do not (measured: 103 of 138 false)
    assert flawed["false"] >= 0.7 * flawed.total()
    # on free-form references, a definite verdict on a fully correct solution is true (measured: 69 of 73)
    other = by_label[False, True]
    assert other["true"] >= 0.9 * (other["true"] + other["false"])

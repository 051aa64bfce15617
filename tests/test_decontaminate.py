import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import curate
from curate.errors import RecipeError, SourceError, StageError
from curate.models.base import LM
from curate.sources import SOURCES
from curate.stage import RECIPE_PATHS, StageContext
from curate.stages import REGISTRY, Decontaminate, ExactDedup

PROBLEMS = [
    ("A bakery sells muffins for 3 dollars each and cookies for 2 dollars each. On Saturday it sold 45 muffins "
     "and twice as many cookies as muffins. How much money did the bakery take in from muffins and cookies on Saturday?"),
    ("Maria reads 24 pages of her novel every weekday and 40 pages on each day of the weekend. If the novel has "
     "512 pages and she starts on a Monday, on which day of the week will she finish the book?"),
    ("A rectangular garden is 18 meters long and 12 meters wide. A gravel path 1 meter wide runs around the "
     "outside of the garden. What is the area of the path in square meters?"),
    ("Tom has three times as many marbles as Jerry, and together they have 96 marbles. After Tom gives Jerry "
     "some marbles, they each have the same number. How many marbles did Tom give to Jerry?"),
    ("A train leaves the station at 9:15 in the morning traveling at 80 kilometers per hour. A second train leaves "
     "the same station at 10:00 on a parallel track at 100 kilometers per hour. At what time does the second train catch up?"),
    ("The sum of the interior angles of a convex polygon is 1980 degrees. How many sides does the polygon have, "
     "and how many diagonals can be drawn inside it from all of its vertices?"),
    ("A water tank holds 1200 liters when full. One pipe fills it in 6 hours and a drain empties it in 10 hours. "
     "If the tank starts empty with both open, how long until the tank is full?"),
    ("Find the number of positive integers less than 500 that are divisible by 6 or by 15 but not by both, "
     "and explain how inclusion and exclusion gives the count."),
    ("A jar contains 5 red marbles, 7 blue marbles and 8 green marbles. Two marbles are drawn at random without "
     "replacement. What is the probability that both marbles drawn are the same color? Express your answer as a common fraction."),
    ("Lena invests 2500 dollars in an account paying 4 percent interest compounded annually. How many whole years "
     "must pass before the balance in the account first exceeds 3000 dollars?"),
    ("A farmer keeps chickens and goats in one pen. Altogether the animals have 62 heads and 178 legs. How many "
     "goats does the farmer keep, and how many chickens are in the pen?"),
    ("The average score of 24 students on a quiz was 78. When the teacher added the scores of two late students, "
     "the class average rose to 79. What was the average score of the two late students?"),
    ("Solve for all real values of x such that the square root of x plus 7 equals x minus 5, and check every "
     "candidate solution in the original equation before answering."),
    ("A cyclist rides up a hill at 12 kilometers per hour and returns down the same road at 30 kilometers per hour. "
     "What is her average speed for the entire round trip in kilometers per hour?"),
    ("A store marks up a jacket by 40 percent over its wholesale cost and later offers a 25 percent discount off "
     "the marked price. If the sale price is 84 dollars, what was the wholesale cost?"),
    ("How many different ways can the letters of the word BANANA be arranged in a row so that no two letters A "
     "appear next to each other anywhere in the arrangement?"),
    ("The lengths of the sides of a right triangle are consecutive even integers. Find the perimeter of the triangle "
     "and the length of the altitude drawn to its hypotenuse, in simplest form."),
    ("A clock shows exactly 3:40. What is the measure in degrees of the smaller angle formed between the hour hand "
     "and the minute hand of the clock at that moment?"),
    ("Ben saves 15 dollars in the first week, and each week after that he saves 5 dollars more than the week before. "
     "How much has Ben saved in total at the end of the twelfth week?"),
    ("A cone has a base radius of 6 centimeters and a slant height of 10 centimeters. What is the volume of the "
     "cone in cubic centimeters, expressed in terms of pi?"),
]
EVAL = PROBLEMS[:10]  # the held-out test questions
CLEAN = PROBLEMS[10:]  # training questions that share no text with them


def test_the_problems_are_realistic_and_distinct():
    assert all(25 <= len(p.split()) <= 60 for p in PROBLEMS)
    assert len(set(PROBLEMS)) == 20


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def eval_jsonl(tmp_path, name="heldout.jsonl"):
    return write_jsonl(tmp_path / name, [{"id": f"test_{i}", "question": q} for i, q in enumerate(EVAL)])


def sft(rows):
    """An SFT table from (id, prompt, response) triples."""
    return pa.table({
        "id": [r[0] for r in rows],
        "messages": [[{"role": "user", "content": p}, {"role": "assistant", "content": a}] for _, p, a in rows],
    })


def run(table, **config):
    return Decontaminate(**config)(table, StageContext())


def one_text(doc):
    """A one-row table whose response is ``doc``."""
    return sft([("r", "", doc)])


def coverage(tmp_path, item, doc, **config):
    """The overlap the stage reports for one eval item and one document (0 when kept)."""
    path = write_jsonl(tmp_path / "one.jsonl", [{"id": "x", "question": item}])
    out = run(one_text(doc), eval_sets=[str(path)], fields=["response"], threshold=0.0, **config)
    return out.rejected.column("overlap")[0].as_py() if out.rejected.num_rows else 0.0


PLANTED = {  # row id -> (prompt, response, eval item it copies)
    "case": (EVAL[0].upper(), "Muffins bring 135 dollars and cookies 180, so 315 dollars.", "test_0"),
    "punct": (EVAL[1].replace(" ", "  ").replace(".", " ;").replace(",", ""), "She finishes on a Friday.", "test_1"),
    "number": (EVAL[2].replace("18", "20"), "The path area is 64 square meters.", "test_2"),
    "word": (EVAL[3].replace("marbles", "stickers", 1), "Tom gave Jerry 24.", "test_3"),
    "prefix": ("Solve: " + EVAL[4], "The second train catches up at 1:00 in the afternoon.", "test_4"),
    "quoted": ("Here is a question from a worksheet.", f'The problem says: "{EVAL[5]}" The answer is 13 sides.', "test_5"),
    "wrapped": ("Please help with my homework. " + EVAL[6] + " Thanks!", "It takes 15 hours.", "test_6"),
    "most": (" ".join(EVAL[7].split()[:20]) + " and count them carefully.", "There are 100 of them.", "test_7"),
}


def test_every_planted_overlap_is_found_and_no_clean_row_is_rejected(tmp_path):
    clean = [(f"clean_{i}", q, "Let us work through it step by step.") for i, q in enumerate(CLEAN)]
    planted = [(k, p, r) for k, (p, r, _) in PLANTED.items()]
    out = run(sft(clean + planted), eval_sets=[str(eval_jsonl(tmp_path))])
    rej = {r["id"]: r for r in out.rejected.to_pylist()}
    assert set(rej) == set(PLANTED)
    assert {k: r["eval_item"] for k, r in rej.items()} == {k: v[2] for k, v in PLANTED.items()}
    assert {r["reason"] for r in rej.values()} == {"contaminated"}
    assert rej["quoted"]["matched_field"] == "response" and rej["case"]["matched_field"] == "prompt"
    assert rej["case"]["overlap"] == 1.0 and all(0.5 < r["overlap"] <= 1.0 for r in rej.values())
    assert rej["prefix"]["detail"] == "prompt covers 1.00 of eval item heldout.jsonl:test_4 (8-grams)"
    assert all(r["eval_file"] == "heldout.jsonl" for r in rej.values())
    assert out.kept.column("id").to_pylist() == [c[0] for c in clean]


def test_a_document_holding_the_whole_eval_item_covers_it_fully(tmp_path):
    assert coverage(tmp_path, EVAL[0], "Intro text. " + EVAL[0] + " More text after it.") == 1.0


def test_a_shared_7_gram_scores_zero_at_n_8_and_a_shared_8_gram_does_not(tmp_path):
    item = " ".join(EVAL[2].split()[:20])
    seven, eight = " ".join(item.split()[3:10]), " ".join(item.split()[3:11])
    assert coverage(tmp_path, item, f"unrelated words {seven} more unrelated words") == 0.0
    assert coverage(tmp_path, item, f"unrelated words {eight} more unrelated words") == 8 / 20


def test_overlapping_ngrams_are_not_double_counted(tmp_path):
    item = " ".join(f"w{i}" for i in range(20))
    # Words 0-9 hold three overlapping 8-grams (24 n-gram words) but only 10 distinct positions;
    # words 12-19 repeated twice in the document still cover those 8 positions once.
    doc = " ".join(f"w{i}" for i in range(10)) + " gap " + " ".join([f"w{i}" for i in range(12, 20)] * 2)
    assert coverage(tmp_path, item, doc) == (10 + 8) / 20
    assert coverage(tmp_path, item, item + " " + item) == 1.0


def test_mode_any_rejects_one_shared_ngram_that_coverage_keeps(tmp_path):
    path = eval_jsonl(tmp_path)
    table = one_text("As a warm-up: " + " ".join(EVAL[9].split()[:9]) + " in a bank.")
    assert run(table, eval_sets=[str(path)]).rejected.num_rows == 0
    out = run(table, eval_sets=[str(path)], mode="any")
    assert out.rejected.column("eval_item").to_pylist() == ["test_9"]
    assert 0 < out.rejected.column("overlap")[0].as_py() < 0.5


def test_eval_items_shorter_than_n_match_only_as_a_whole_phrase(tmp_path):
    path = write_jsonl(tmp_path / "short.jsonl", [{"id": "s", "question": "What is 7 times 8?"}])
    table = sft([
        ("whole", "Quick one: what is 7 times 8? Show work.", "56"),
        ("scattered", "What is the product when 7 is multiplied 8 times?", "8"),
        ("partial", "What is 7 times 9?", "63"),
    ])
    out = run(table, eval_sets=[str(path)])
    assert out.rejected.column("id").to_pylist() == ["whole"]
    assert out.rejected.column("detail")[0].as_py() == "prompt covers 1.00 of eval item short.jsonl:s (the whole item: under 8 words)"


def planted_pool():
    return sft([("hit", "Solve: " + EVAL[3], "24"), ("clean", CLEAN[0], "40 goats")])


def test_txt_csv_json_parquet_and_gzipped_eval_files_are_read_by_the_sources_reader(tmp_path):
    import csv
    import gzip

    (tmp_path / "e.txt").write_text("\n".join(EVAL) + "\n\n")
    with open(tmp_path / "e.csv", "w", newline="") as f:
        csv.writer(f).writerows([["problem", "answer"], *[[q, "1"] for q in EVAL]])
    (tmp_path / "e.csv.gz").write_bytes(gzip.compress((tmp_path / "e.csv").read_bytes()))
    (tmp_path / "e.json").write_text(json.dumps([{"prompt": q} for q in EVAL]))
    (tmp_path / "lines.json").write_text("".join(json.dumps({"prompt": q}) + "\n" for q in EVAL))  # JSON lines
    pq.write_table(pa.table({"id": [f"p{i}" for i in range(10)], "text": EVAL}), tmp_path / "e.parquet")
    with gzip.open(tmp_path / "e.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps({"input": q}) + "\n" for q in EVAL))
    expected = {"e.txt": "e.txt:4", "e.csv": "e.csv:5", "e.csv.gz": "e.csv.gz:5", "e.json": "e.json:4",
                "lines.json": "lines.json:4", "e.parquet": "p3", "e.jsonl.gz": "e.jsonl.gz:4"}
    for name, item in expected.items():
        out = run(planted_pool(), eval_sets=[str(tmp_path / name)])
        assert out.rejected.column("eval_item").to_pylist() == [item], name
        assert out.rejected.column("eval_file").to_pylist() == [name]
        assert out.kept.column("id").to_pylist() == ["clean"]


def test_a_broken_jsonl_eval_file_is_a_source_error_naming_the_file_and_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps({"question": EVAL[0]}) + "\n\n" + '{"question": "unterminated\n')
    with pytest.raises(SourceError, match=r"decontaminate\.eval_sets: .*broken\.jsonl line 3: not valid JSON"):
        run(planted_pool(), eval_sets=[str(path)])


def test_eval_file_problems_are_errors_that_say_where(tmp_path):
    with pytest.raises(SourceError, match=r"decontaminate\.eval_sets: cannot read .*missing\.jsonl: No such file"):
        run(planted_pool(), eval_sets=[str(tmp_path / "missing.jsonl")])
    with pytest.raises(SourceError, match="missing.jsonl"):
        Decontaminate(eval_sets=[str(tmp_path / "missing.jsonl")]).fingerprint("parent")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(StageError, match="empty.jsonl holds no items"):
        run(planted_pool(), eval_sets=[str(tmp_path / "empty.jsonl")])
    write_jsonl(tmp_path / "answers.jsonl", [{"question": EVAL[0]}, {"answer": "42"}])
    with pytest.raises(StageError, match=r"answers\.jsonl line 2: none of the eval_fields .* the record has answer"):
        run(planted_pool(), eval_sets=[str(tmp_path / "answers.jsonl")])
    with pytest.raises(RecipeError, match="eval_sets"):
        Decontaminate(eval_sets=[])
    with pytest.raises(RecipeError, match=r"questions\.xlsx: unknown file format \(known suffixes: \.jsonl, .*\.csv\.gz"):
        Decontaminate(eval_sets=["questions.xlsx"])


def test_eval_sets_are_marked_as_recipe_relative_paths():
    assert RECIPE_PATHS in Decontaminate.Config.model_fields["eval_sets"].metadata
    assert REGISTRY["decontaminate"] is Decontaminate


def test_fingerprint_follows_eval_file_content_not_its_path(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    first, second = eval_jsonl(a), eval_jsonl(b)
    fp = Decontaminate(eval_sets=[str(first)]).fingerprint("parent")
    assert Decontaminate(eval_sets=[str(second)]).fingerprint("parent") == fp
    with open(second, "a") as f:
        f.write(json.dumps({"id": "new", "question": CLEAN[0]}) + "\n")
    assert Decontaminate(eval_sets=[str(second)]).fingerprint("parent") != fp
    assert Decontaminate(eval_sets=[str(first)], ngram=12).fingerprint("parent") != fp


def test_fingerprint_did_not_change_when_eval_files_moved_to_the_sources_reader(tmp_path):
    # The value from before: a changed one means every cached decontaminate step reruns.
    rows = [{"id": "a", "prompt": "What is 2+2?", "response": "It is 4."}, {"id": "b", "prompt": "Name a prime.", "response": "7, say."}]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    assert Decontaminate(eval_sets=[str(path)]).fingerprint("parent") == "9f7efdddbf0b5ee4"


def test_in_a_pipeline_counts_add_up_and_rejects_carry_reason_and_detail(tmp_path):
    pool = write_jsonl(tmp_path / "pool.jsonl", [
        *({"q": q, "a": f"Work through problem {i} step by step."} for i, q in enumerate(CLEAN)),
        {"q": "Solve: " + EVAL[0].lower(), "a": "315 dollars."},
        {"q": "A worksheet question.", "a": f"Restating it: {EVAL[8]} Then count."},
    ])
    source = SOURCES["jsonl"](path=str(pool), fields={"prompt": "q", "response": "a"})
    stages = [ExactDedup(), Decontaminate(eval_sets=[str(eval_jsonl(tmp_path))])]
    result = curate.Pipeline(stages, source=source, name="decont").run()
    step = result.steps[-1]
    assert (step.rows_in, step.kept, step.rejected) == (12, 10, 2)
    rejected = curate.Store().resolve("decont").rejected().to_pylist()
    assert [(r["reason"], r["eval_item"]) for r in rejected] == [("contaminated", "test_0"), ("contaminated", "test_8")]
    assert rejected[1]["detail"] == "response covers 1.00 of eval item heldout.jsonl:test_8 (8-grams)"
    assert curate.Pipeline(stages, source=source, name="decont").run().all_cached


def test_the_index_handles_a_large_pool_in_seconds(tmp_path):
    import time

    rng = np.random.default_rng(0)
    vocab = np.array(sorted({w.lower().strip(".,?") for p in PROBLEMS for w in p.split()}))
    items = [{"id": f"e{i}", "question": " ".join(rng.choice(vocab, 40))} for i in range(1000)]
    path = write_jsonl(tmp_path / "big.jsonl", items)
    rows = [(f"r{i}", " ".join(rng.choice(vocab, 60)), " ".join(rng.choice(vocab, 200))) for i in range(20_000)]
    rows[123] = ("r123", "Copy: " + items[777]["question"], "")
    start = time.perf_counter()
    out = run(sft(rows), eval_sets=[str(path)])
    assert time.perf_counter() - start < 20
    assert out.rejected.column("eval_item").to_pylist() == ["e777"]


class ToyLM(LM):
    """A stand-in backend: each word's log-probability is -(its length), so known values."""

    def identity(self):
        return "toy"

    def chat_prompt(self, messages):
        return "".join(m["content"] for m in messages)

    def _logprobs(self, pairs):
        return [-np.array([len(w) for w in target.split()], float) for _, target in pairs]

    def _generate(self, prompts, sampling):
        raise NotImplementedError


def test_min_k_prob_scores_the_least_likely_tokens_and_rejects_nothing(tmp_path):
    table = sft([("a", "q", "aa b cccc d"), ("b", "q", ""), ("c", "q", "x y z w v")])
    stage = Decontaminate(eval_sets=[str(eval_jsonl(tmp_path))], min_k_model="toy", min_k=0.5)
    assert stage.models_used() == ["toy"]
    out = stage(table, StageContext(models={"toy": ToyLM("toy")}))
    scores = out.kept.column("min_k_prob").to_pylist()
    assert scores[0] == -3.0 and np.isnan(scores[1]) and scores[2] == -1.0  # mean of the 2 lowest of [-2,-1,-4,-1]
    assert out.rejected.num_rows == 0

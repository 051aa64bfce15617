"""The math SFT chain: from a noisy pool of model-written solutions to a clean SFT set.

Exact and near (MinHash) dedup of responses, quality rules tuned for math solutions,
decontamination against held-out evaluation problems; every final answer is checked against
the problem's reference (``verify``); each problem's difficulty is its share of wrong
solutions, the wrong ones leave, and the right ones are allocated by difficulty (DART's
Prop2Diff: hard problems keep more solutions, ``difficulty``); the rows whose problems
belong to the target distribution -- a category of problems the recipe names -- are chosen
by GOT-D (``select_target``); perplexity filtering under a reference LM (the model the
recipe names ``ref_lm``), last of the filters because it is the dearest; then CLEAR-style
rectification: the rows verify could not check
are scored by the model's confidence, filtered when it is low, and corrected when the model
is confident in one of its own solutions (``rectify``). Gopher's
prose thresholds reject 86% of CHAMP (a typical correct solution has an alphabetic-word
fraction of 0.79, mean word length 3.35 and a duplicate 5-gram fraction of 0.24), so they
are relaxed; the repetition rules stay, because looping generations are the commonest
defect in model-written solutions. Later issues append augmentation and fine-tuning
to this same chain.

The rectify settings here are the CPU demo's (2 samples of 64 tokens, one reflection
prompt, answer agreement only, filter the lowest 20%, no correction: the tiny reference LM
writes no real mathematics); recipes/math_sft_gpu.yaml overrides them with BSDetector's
(5 samples, two reflections, embedding agreement), gamma = 0.5, correction with eta = 0.8,
and a real instruct model.
"""

from __future__ import annotations

from pathlib import Path

from curate.stage import Stage
from curate.stages import (
    Decontaminate,
    Difficulty,
    ExactDedup,
    HeuristicFilter,
    MinhashDedup,
    PerplexityFilter,
    Rectify,
    SelectTarget,
    Verify,
)

# Ten CHAMP problems held out as the evaluation set (every 27th problem, with its reference
# answer and solution). The file ships inside this package (package data), so an installed
# curate finds it wherever it runs; recipes/data/champ_heldout.jsonl links to it. The
# fingerprint follows the file's content, not where it lives.
HELDOUT = Path(__file__).resolve().parent / "data" / "champ_heldout.jsonl"
TARGET_CATEGORY = "Number-Theory"


def heldout_ids() -> list[str]:
    """The ids of the held-out evaluation problems (CHAMP problem ids)."""
    import json

    with open(HELDOUT) as f:
        return [json.loads(line)["id"] for line in f if line.strip()]


def reference_lm_data() -> dict:
    """What the demo's tiny reference LM trains on: CHAMP's reference solutions, without the
    held-out problems (the same model is the finetune step's base, graded on them)."""
    return {"type": "champ", "include_model_solutions": False, "include_reference": True,
            "exclude_problems": heldout_ids()}


def champ_category(category: str) -> dict:
    """A data reference to CHAMP's problems of one category (their reference solutions)."""
    return {"type": "champ", "include_model_solutions": False, "include_reference": True, "categories": [category]}


def math_sft(ref_lm: str = "ref_lm", eval_sets: tuple[str, ...] = (str(HELDOUT),), rectify_lm: str | None = None,
             target: str | dict | None = None) -> list[Stage]:
    """The chain; ``ref_lm`` names the run's reference LM, ``eval_sets`` the evaluation
    questions no training row may overlap, ``rectify_lm`` the (instruct) model whose
    confidence filters and corrects rows (default: ``ref_lm``), ``target`` the examples of
    what the model should be good at (a data reference; default: CHAMP's Number-Theory
    problems)."""
    return [
        ExactDedup(field="response"),
        # CHAMP's prompt settings often yield the same solution with small edits; word
        # 5-grams at Jaccard >= 0.8 (verified) catch those near-copies.
        MinhashDedup(field="response"),
        # Thresholds read off both sides of each cut on CHAMP's 19,440 solutions: what they
        # reject are generation loops ("+ 1 + 1 ...", a solution pasted twice), number dumps
        # and runaway digit strings; looser cuts start taking legitimate computation tables.
        # Line-count rules are off because LaTeX \[ \] lines make them misfire.
        HeuristicFilter(
            field="response",
            min_words=10,
            min_mean_word_length=1.0,
            max_mean_word_length=15.0,
            max_symbol_word_ratio=None,
            min_alpha_word_fraction=0.2,
            min_stop_words=None,
            max_bullet_lines_ratio=None,
            max_ellipsis_lines_ratio=None,
            max_duplicate_line_fraction=None,
            max_duplicate_line_char_fraction=0.5,
            max_duplicate_paragraph_fraction=None,
            max_duplicate_paragraph_char_fraction=0.5,
            max_top_ngram_char_fraction={2: 0.3, 3: 0.3, 4: 0.3},
            max_duplicate_ngram_char_fraction={10: 0.8},
        ),
        # Every solution to an evaluation problem leaves the pool: its prompt is the problem
        # (8-gram coverage > 0.5, as Tulu 3), and a response quoting the problem counts too.
        Decontaminate(eval_sets=list(eval_sets), fields=["prompt", "response"]),
        # The solution's final answer (boxed, "the answer is", a yes/no, the value a summary
        # states, else a conservative last number) against the problem's reference answer,
        # exactly or symbolically. A wrong solution is not worth training on; the GPU recipe
        # keeps them for rectify to correct instead. Wrong solutions stay one step longer:
        # difficulty needs them to measure fail rates. Solutions verify cannot check leave:
        # measured by `curate audit` against 349 hand-checked answers of the final set, 26% of
        # those it kept were right, against 95% of the verified ones, and a tiny LM's
        # confidence cannot tell them apart (the GPU recipe keeps them for a real model's).
        Verify(kind="math", drop_unknown=True),
        # A problem's difficulty is the share of its checkable solutions that are wrong (CHAMP
        # has up to 72 per problem, from four models); the wrong ones leave (DART keeps only
        # correct responses), and each problem keeps at most ceil(16 * d / max d) of the rest
        # (Prop2Diff: the hardest keep 16, the easiest 1; 16, not 12, so that the set keeps
        # over 300 rows once the uncheckable ones are gone). Curriculum order (easy to hard)
        # is left to the training step.
        Difficulty(estimate="verified", group_by="problem_id", drop_incorrect=True,
                   sampling={"method": "prop2diff", "k_p": 16}),
        # GOT-D toward the target: the rows whose distribution moves the set toward the
        # target examples. The category is a property of the problem, so problems are
        # compared (one embedding per distinct problem, about 270, not one per solution), by
        # the built-in embedder minilm (the packaged all-MiniLM-L6-v2; `embedder:` names another).
        SelectTarget(target=target or champ_category(TARGET_CATEGORY), method="got_d", fraction=0.25, field="prompt"),
        # The response given its problem under the reference LM; the most perplexing 5% are
        # garbled or off-topic generations the rules above do not see. Scored last among the
        # filters, on what the cheaper steps kept: about 400 rows, not the 12,800 after
        # decontaminate (scoring all of them was three quarters of the demo's time).
        PerplexityFilter(model=ref_lm, max_percentile=95.0),
        # Rows verify could not check are scored by the model's confidence and the least
        # confident 20% filtered; rows verified true cost no model call. In the demo none
        # reaches it (verify drops them: the tiny LM's confidence is not calibrated); the
        # GPU recipe keeps them for rectify, and corrects. The demo's settings, for a chain
        # that keeps them: a fraction rather than an absolute gamma, and no correction (its
        # samples are not solutions: on CHAMP two of them, gibberish ending in the reference
        # number, cleared the correction gates).
        Rectify(model=rectify_lm or ref_lm, k=2, max_tokens=64, reflections=1, similarity="none", filter_fraction=0.2,
                correct=False),
    ]

"""The math SFT chain: from a noisy pool of model-written solutions to a clean SFT set.

Exact and near (MinHash) dedup of responses, quality rules tuned for math solutions,
decontamination against held-out evaluation problems, then perplexity filtering under a
reference LM (the model the recipe names ``ref_lm``). Gopher's
prose thresholds reject 86% of CHAMP (a typical correct solution has an alphabetic-word
fraction of 0.79, mean word length 3.35 and a duplicate 5-gram fraction of 0.24), so they
are relaxed; the repetition rules stay, because looping generations are the commonest
defect in model-written solutions. Later issues append rectification, selection,
difficulty-aware sampling, augmentation and fine-tuning to this same chain.
"""

from __future__ import annotations

from pathlib import Path

from curate.stage import Stage
from curate.stages import Decontaminate, ExactDedup, HeuristicFilter, MinhashDedup, PerplexityFilter

# Ten CHAMP problems held out as the evaluation set (recipes/data/champ_heldout.jsonl: every
# 27th problem, with its reference answer). The fingerprint follows the file's content,
# not where the checkout lives.
HELDOUT = Path(__file__).resolve().parents[1] / "recipes" / "data" / "champ_heldout.jsonl"


def math_sft(ref_lm: str = "ref_lm", eval_sets: tuple[str, ...] = (str(HELDOUT),)) -> list[Stage]:
    """The chain; ``ref_lm`` names the run's reference LM, ``eval_sets`` the evaluation
    questions no training row may overlap."""
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
        # The response given its problem under the reference LM; the most perplexing 5% are
        # garbled or off-topic generations the rules above do not see.
        PerplexityFilter(model=ref_lm, max_percentile=95.0),
    ]

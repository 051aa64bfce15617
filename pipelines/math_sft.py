"""The math SFT chain: from a noisy pool of model-written solutions to a clean SFT set.

Today: exact and near (MinHash) dedup of responses, then quality rules tuned for math solutions. Gopher's
prose thresholds reject 86% of CHAMP (a typical correct solution has an alphabetic-word
fraction of 0.79, mean word length 3.35 and a duplicate 5-gram fraction of 0.24), so they
are relaxed; the repetition rules stay, because looping generations are the commonest
defect in model-written solutions. Later issues append
near-dedup, perplexity filtering, rectification, selection, difficulty-aware sampling,
augmentation and fine-tuning to this same chain.
"""

from __future__ import annotations

from curate.stage import Stage
from curate.stages import ExactDedup, HeuristicFilter, MinhashDedup


def math_sft() -> list[Stage]:
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
    ]

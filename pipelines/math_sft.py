"""The math SFT chain: from a noisy pool of model-written solutions to a clean SFT set.

Today: exact dedup of responses, then quality rules tuned for math solutions
(equations lower the share of alphabetic words, and short correct answers exist, so
Gopher's prose thresholds are relaxed; the repetition rules stay, because looping
generations are the commonest defect in model-written solutions). Later issues append
near-dedup, perplexity filtering, rectification, selection, difficulty-aware sampling,
augmentation and fine-tuning to this same chain.
"""

from __future__ import annotations

from curate.stage import Stage
from curate.stages import ExactDedup, HeuristicFilter


def math_sft() -> list[Stage]:
    return [
        ExactDedup(field="response"),
        HeuristicFilter(
            field="response",
            min_words=20,
            max_words=5_000,
            min_mean_word_length=2.0,
            max_mean_word_length=12.0,
            min_alpha_word_fraction=0.4,
            min_stop_words=1,
            max_bullet_lines_ratio=None,
        ),
    ]

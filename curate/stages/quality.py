"""quality_classifier: score every row with a text classifier and keep the best (DCLM).

Two ways to get the classifier:

* **trained here** (``positives:``): examples of the documents wanted (any data reference:
  a file, a dataset, a source mapping) against negatives -- by default a seeded sample of the
  pool itself, as DCLM samples its web pool (or ``negatives:``, another reference). The
  method is ``hashed_linear`` (a logistic regression on hashed word uni- and bigrams; the
  default) or ``fasttext`` (DCLM's bigram fastText); ``curate.algorithms.quality`` has both,
  and ``benchmarks/pretrain.py`` measures them against each other (docs/pretraining.md). A share of both classes
  (``holdout``) is left out of training and scored after it: the step's stats say how well
  the classifier separates them (``heldout_auc``, ``heldout_accuracy``). The trained model
  is cached in ``$CURATE_CACHE/classifiers/`` under a hash of its training texts and
  settings, so a rerun with the same data trains nothing.
* **an existing classifier** (``classifier:`` naming a ``models:`` entry with ``backend:
  classifier``): a fastText ``.bin`` (DCLM's ``openhermes_reddit_eli5_vs_rw_v2_bigram_200k``)
  or a Hugging Face sequence-classification model (``HuggingFaceFW/fineweb-edu-classifier``).
  Its identity is part of the step's fingerprint.

Every row gets ``quality_score``; rows below the cut are rejected with reason ``low_quality``
and a detail giving their score and the cut. The cut is one of: ``threshold`` (an absolute
score: 0.5 for a probability, 3 on FineWeb-Edu's 0-5 scale), ``top_fraction`` (keep the best
share of the pool; DCLM keeps 10%) or ``min_percentile``. Ties at the cut are kept.

The classifier is trained once in the driver (``Stage.prepare``), then every block is scored
where it runs (a Ray task per block on a cluster, the model travelling with the stage), and
the cut is decided from the pool's scores alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
import xxhash
from pydantic import Field, model_validator

from ..algorithms import quality
from ..errors import StageError
from ..models.cache import cache_root
from ..records import default_text_field, text_columns, texts
from ..sources.refs import DataRef, DataSpec, resolve_data
from ..stage import RECIPE_DATA, Decision, Rows, Stage, StageConfig, StageContext, with_columns
from ..store import Store

READ_ROWS = 20_000  # pool rows read at a time while sampling negatives
SCORE_BATCH = 2_000  # texts scored per call
DCLM_TOP_FRACTION = 0.1


class QualityClassifierConfig(StageConfig):
    positives: Annotated[DataSpec | None, RECIPE_DATA] = None
    """Examples of the documents to keep more of (a file, a dataset name or a source mapping): train a classifier on them."""
    negatives: Annotated[DataSpec | None, RECIPE_DATA] = None
    """The other class (default: a seeded sample of the pool, ``negatives_per_positive`` times as many rows)."""
    classifier: str | None = None
    """Instead of training: a models: entry with backend: classifier (a fastText .bin or a sequence-classification model)."""
    field: str | None = None
    """Text to score: text, prompt, response, conversation or a string column; None = response (SFT) or text."""
    positives_field: str | None = None
    """Text of the positives and negatives references (default: ``field``, else text or response by their shape)."""
    method: Literal["hashed_linear", "fasttext"] = "hashed_linear"
    """How to train: a logistic regression on hashed word n-grams, or DCLM's bigram fastText (docs/pretraining.md compares them)."""
    negatives_per_positive: float = Field(1.0, gt=0)
    """Negatives sampled from the pool per positive (DCLM: about 1)."""
    max_examples: int = Field(200_000, ge=1)
    """At most this many training examples of each class (DCLM: 200k)."""
    holdout: float = Field(0.1, ge=0, lt=1)
    """Share of each class left out of training and scored after it, for the held-out stats."""
    dim: int = Field(32, ge=2)
    """fastText: embedding width."""
    epochs: int = Field(5, ge=1)
    """fastText: passes over the training data."""
    learning_rate: float = Field(0.1, gt=0)
    """fastText: learning rate."""
    word_ngrams: int = Field(2, ge=1, le=5)
    """Longest word n-gram hashed into features (DCLM: bigrams)."""
    buckets: int = Field(1 << 18, ge=1024)
    """Hash buckets for the n-gram features."""
    lowercase: bool = True
    """Lowercase texts before training and scoring (a trained classifier only)."""
    max_chars: int | None = Field(50_000, ge=1)
    """Score (and train on) the first this many characters of each text (null: all of it)."""
    threshold: float | None = None
    """Keep rows scoring at least this."""
    top_fraction: float | None = Field(None, gt=0, le=1)
    """Keep this best-scoring share of the pool (the default when no cut is given: 0.1, DCLM's)."""
    min_percentile: float | None = Field(None, ge=0, le=100)
    """Keep rows at or above this percentile of the pool's scores."""
    seed: int = 0

    @model_validator(mode="after")
    def _one_way(self) -> QualityClassifierConfig:
        if (self.positives is None) == (self.classifier is None):
            raise ValueError("give positives: (train a classifier on them) or classifier: (a models: entry with "
                             "backend: classifier), not both and not neither")
        if self.classifier is not None and self.negatives is not None:
            raise ValueError("negatives: trains a classifier with positives:; an existing classifier: needs neither")
        cuts = [k for k in ("threshold", "top_fraction", "min_percentile") if getattr(self, k) is not None]
        if len(cuts) > 1:
            raise ValueError(f"give one cut, not {' and '.join(cuts)}")
        return self

    def settings(self) -> quality.TrainSettings:
        return quality.TrainSettings(method=self.method, dim=self.dim, epochs=self.epochs, learning_rate=self.learning_rate,
                                     word_ngrams=self.word_ngrams, buckets=self.buckets, lowercase=self.lowercase,
                                     seed=self.seed)


class QualityClassifier(Stage):
    name = "quality_classifier"
    version = "1"
    Config = QualityClassifierConfig
    config: QualityClassifierConfig
    model_refs = ("classifier",)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._trained: tuple[bytes, dict[str, Any]] | None = None  # set by prepare: the model's bytes, its training stats
        self._scorer: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_scorer": None}  # the loaded model stays behind; its bytes travel

    def refs(self, store: Store | None) -> list[DataRef]:
        c = self.config
        return [resolve_data(spec, store, f"{self.name}.{key}") for key, spec in
                (("positives", c.positives), ("negatives", c.negatives)) if spec is not None]

    def dependencies(self, store: Store | None) -> list[str]:
        return [r.fingerprint for r in self.refs(store)]

    def fingerprint_config(self) -> dict[str, Any]:
        cfg = super().fingerprint_config()
        for key in ("positives", "negatives"):
            if key in cfg:
                cfg[key] = "content fingerprint in dependencies"  # not the path: a moved checkout stays cached
        return cfg

    # -- 0. the classifier ------------------------------------------------------------------
    def prepare(self, rows: Rows, ctx: StageContext) -> QualityClassifier:
        """Train the classifier (or find it in the cache) on the positives against the
        negatives; an existing ``classifier:`` needs nothing."""
        c = self.config
        if c.classifier is not None:
            return self
        try:
            quality.fasttext_module() if c.method == "fasttext" else _sklearn()
        except ImportError as e:
            raise StageError(f"{self.name}: {e}") from None
        refs = self.refs(ctx.store)
        pos = self._ref_texts(refs[0])
        if not pos:
            raise StageError(f"{self.name}: the positives {refs[0].label} hold no rows")
        pos = _sample(pos, c.max_examples, c.seed)
        if c.negatives is not None:
            neg = _sample(self._ref_texts(refs[1]), c.max_examples, c.seed + 1)
            if not neg:
                raise StageError(f"{self.name}: the negatives {refs[1].label} hold no rows")
        else:
            want = min(c.max_examples, max(1, round(len(pos) * c.negatives_per_positive)))
            neg = self._pool_sample(rows, want)
            if not neg:
                raise StageError(f"{self.name}: the pool is empty, so there are no negatives to train against; "
                                 "give negatives:")
        settings = c.settings()
        key = _key(pos, neg, settings, c.holdout)
        folder = cache_root(getattr(ctx.models, "cache_root", None)) / "classifiers"
        model_path, meta_path = folder / f"{key}.bin", folder / f"{key}.json"
        if model_path.is_file() and meta_path.is_file():
            data, stats = model_path.read_bytes(), json.loads(meta_path.read_text())
            ctx.reporter.log(f"{self.name}: classifier {key} from the cache")
        else:
            ctx.reporter.log(f"{self.name}: training a {c.method} classifier on {len(pos):,} positives and "
                             f"{len(neg):,} negatives")
            pos_train, pos_held = quality.holdout_split(len(pos), c.holdout, c.seed)
            neg_train, neg_held = quality.holdout_split(len(neg), c.holdout, c.seed + 1)
            try:
                data = quality.train([pos[i] for i in pos_train], [neg[i] for i in neg_train], settings)
            except RuntimeError as e:  # fastText's "Encountered NaN": its SGD diverged
                raise StageError(f"{self.name}: training the {c.method} classifier failed ({e}); a lower learning_rate "
                                 "or method: hashed_linear trains it") from None
            stats = {"train_positives": len(pos_train), "train_negatives": len(neg_train)}
            if len(pos_held) and len(neg_held):
                model = quality.Trained(data, settings)
                sp = model.probability([pos[i] for i in pos_held])
                sn = model.probability([neg[i] for i in neg_held])
                correct = int((sp >= 0.5).sum() + (sn < 0.5).sum())
                stats.update(heldout_positives=len(pos_held), heldout_negatives=len(neg_held),
                             heldout_auc=quality.auc(sp, sn), heldout_accuracy=correct / (len(sp) + len(sn)),
                             heldout_precision_at_k=quality.precision_at_k(sp, sn))
            _write_atomic(model_path, data)
            _write_atomic(meta_path, json.dumps(stats).encode())
        stats = {**stats, "classifier": key}
        prepared = QualityClassifier(c)
        prepared._trained = (data, stats)
        return prepared

    def _ref_texts(self, ref: DataRef) -> list[str]:
        table = ref.load()
        field = self.config.positives_field or self.config.field or default_text_field(table)
        return [self._cut(t) for t in texts(table, field)]

    def _pool_sample(self, rows: Rows, n: int) -> list[str]:
        """``n`` rows of the pool, the same whatever its blocks: those whose id hashes (seeded)
        lowest -- a uniform sample, read one batch of the text column at a time."""
        c = self.config
        names = ([str(v) for v in rows.column("id").to_pylist()] if "id" in rows.column_names
                 else [str(i) for i in range(rows.num_rows)])
        keys = np.fromiter((xxhash.xxh3_64_intdigest(v.encode(), seed=c.seed) for v in names), dtype=np.uint64, count=len(names))
        chosen = np.sort(np.argsort(keys, kind="stable")[:n])
        field = c.field or _field_of(rows)
        out, start, at = [], 0, 0
        for batch in rows.scan(text_columns(field, rows.column_names), READ_ROWS):
            end = start + batch.num_rows
            stop = int(np.searchsorted(chosen, end))
            if stop > at:
                values = texts(batch, field)
                out.extend(self._cut(values[int(i) - start]) for i in chosen[at:stop])
                at = stop
            start = end
        return out

    def _cut(self, text: str) -> str:
        m = self.config.max_chars
        return text if m is None else text[:m]

    # -- 1. the scores, block by block ------------------------------------------------------
    def score(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        """``quality_score`` of each row (row-wise: a block at a time, anywhere)."""
        c = self.config
        values = [self._cut(t) for t in texts(table, c.field or default_text_field(table))]
        if c.classifier is not None:
            if ctx.models is None:
                raise StageError(f"{self.name}: classifier '{c.classifier}' needs the run's models")
            model = ctx.models.classifier(c.classifier)
            score = lambda part: model.score(part)  # noqa: E731
        else:
            if self._trained is None:
                raise StageError(f"{self.name}: score() before prepare(): the classifier is not trained")
            if self._scorer is None:
                self._scorer = quality.Trained(self._trained[0], c.settings())
            scores = quality.probabilities(self._trained[0], c.settings(), values, ctx.workers, SCORE_BATCH, self._scorer)
            return with_columns(table, {"quality_score": pa.array(scores, pa.float64())})
        parts = [score(values[i : i + SCORE_BATCH]) for i in range(0, len(values), SCORE_BATCH)]
        scores = np.concatenate(parts) if parts else np.zeros(0)
        return with_columns(table, {"quality_score": pa.array(scores, pa.float64())})

    # -- 2. the cut over the pool's scores ---------------------------------------------------
    def decide(self, rows: Rows, ctx: StageContext) -> Decision:
        c = self.config
        scores = rows.column("quality_score").to_numpy(zero_copy_only=False).astype(np.float64)
        n = len(scores)
        stats: dict[str, int | float] = {"scored": n, **({k: v for k, v in self._trained[1].items()
                                                          if isinstance(v, (int, float))} if self._trained else {})}
        if c.threshold is not None:
            cut, rule = c.threshold, f"threshold {c.threshold:g}"
        elif c.min_percentile is not None:
            cut = float(np.percentile(scores, c.min_percentile)) if n else 0.0
            rule = f"percentile {c.min_percentile:g}"
        else:
            fraction = c.top_fraction if c.top_fraction is not None else DCLM_TOP_FRACTION
            k = max(1, int(round(fraction * n))) if n else 0
            cut = float(np.sort(scores)[::-1][k - 1]) if k else 0.0
            rule = f"top {fraction:.0%}"
        keep = scores >= cut
        detail = [None if k else f"quality_score {s:.4f} < {cut:.4f} ({rule})" for s, k in zip(scores, keep)]
        stats.update(cut=cut, kept=int(keep.sum()))
        reason = pa.array([None if k else "low_quality" for k in keep], pa.string())
        return Decision(keep, reason, pa.array(detail, pa.string()), stats=stats)


def _field_of(rows: Rows) -> str:
    return "response" if "messages" in rows.column_names else "text"


def _sample(values: list[str], n: int, seed: int) -> list[str]:
    if len(values) <= n:
        return values
    idx = np.sort(np.random.default_rng(seed).choice(len(values), n, replace=False))
    return [values[i] for i in idx]


def _key(pos: list[str], neg: list[str], settings: quality.TrainSettings, holdout: float) -> str:
    h = xxhash.xxh3_128()
    h.update(json.dumps({**settings.describe(), "holdout": holdout}, sort_keys=True).encode())
    for label, part in ((b"+", pos), (b"-", neg)):
        for t in part:
            h.update(label)
            h.update(len(t).to_bytes(8, "little"))
            h.update(t.encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:16]


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f"{path.suffix}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _sklearn() -> Any:
    try:
        import sklearn
    except ImportError:
        raise ImportError("hashed_linear needs scikit-learn: pip install scikit-learn") from None
    return sklearn

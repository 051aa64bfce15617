"""quality_classifier: a classifier trained on one domain's documents ranks held-out documents
of that domain first; the cut rules; the cached artifact; existing classifiers (a fastText
file, a transformers sequence classifier trained here) loaded through the models layer."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from curate import Pipeline
from curate.algorithms import quality
from curate.errors import RecipeError
from curate.models.pool import ModelPool
from curate.sources import SOURCES
from curate.stage import StageContext, TableRows
from curate.stages import QualityClassifier
from curate.store import Store


@pytest.fixture(scope="module")
def domains():
    """Real documents of two kinds: the READMEs of the installed Python distributions (their
    METADATA descriptions) and the files of /usr/share/doc (changelogs, copyright notices,
    manuals). Half the READMEs are the positives; the pool is the other half among the rest."""
    readmes = SOURCES["local_docs"](kinds=["metadata"], min_words=50, max_chars=200_000).read().kept
    docs = SOURCES["local_docs"](kinds=["doc"], min_words=50, max_chars=200_000, limit_per_kind=1500).read().kept
    texts = readmes.column("text").to_pylist()
    order = np.random.default_rng(0).permutation(len(texts))
    half = len(texts) // 2
    positives = [texts[i] for i in order[:half]]
    held = [texts[i] for i in order[half:]]
    others = docs.column("text").to_pylist()
    assert len(held) >= 40 and len(others) >= 1000, "this machine holds too few local documents for the test"
    pool = pa.table({"id": [f"readme{i}" for i in range(len(held))] + [f"doc{i}" for i in range(len(others))],
                     "text": held + others})
    return positives, pool, len(held)


def positives_file(tmp_path, texts):
    path = tmp_path / "positives.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in texts))
    return path


@pytest.mark.parametrize("method", ["fasttext", "hashed_linear"])
def test_a_classifier_trained_on_one_domain_ranks_its_held_out_documents_first(domains, tmp_path, method):
    positives, pool, n_held = domains
    out = QualityClassifier(positives=str(positives_file(tmp_path, positives)), method=method, epochs=25,
                            learning_rate=0.5, top_fraction=n_held / pool.num_rows)(pool)
    kept = out.kept.column("id").to_pylist()
    precision = sum(k.startswith("readme") for k in kept) / len(kept)
    base_rate = n_held / pool.num_rows
    assert precision >= 10 * base_rate, (precision, base_rate)  # measured: see docs/pretraining.md
    assert out.stats["heldout_auc"] > 0.5  # six of each class held out: a coarse number
    assert out.stats["train_positives"] + out.stats["heldout_positives"] == len(positives)
    rejected = out.rejected.to_pylist()
    assert len(kept) + len(rejected) == pool.num_rows
    assert {r["reason"] for r in rejected} == {"low_quality"}
    assert all("quality_score" in r["detail"] and "top" in r["detail"] for r in rejected)
    scores = out.kept.column("quality_score").to_numpy()
    assert scores.min() >= max(r["quality_score"] for r in rejected)  # the kept are the best scored


def test_the_cuts_keep_what_they_say():
    stage = QualityClassifier(positives="x.jsonl", threshold=0.5)
    scores = pa.table({"quality_score": [0.9, 0.1, 0.5, 0.7, 0.3]})
    keep = lambda **cut: QualityClassifier(positives="x.jsonl", **cut).decide(TableRows(scores), StageContext()).keep.tolist()  # noqa: E731
    assert stage.decide(TableRows(scores), StageContext()).keep.tolist() == [True, False, True, True, False]
    assert keep(top_fraction=0.4) == [True, False, False, True, False]
    assert keep(min_percentile=50) == [True, False, True, True, False]
    assert keep() == [True, False, False, False, False]  # DCLM's top 10%: one of five


@pytest.mark.parametrize("bad, message", [
    ({}, "give positives"),
    ({"positives": "a.jsonl", "classifier": "qc"}, "not both"),
    ({"positives": "a.jsonl", "threshold": 0.5, "top_fraction": 0.1}, "give one cut"),
    ({"classifier": "qc", "negatives": "b.jsonl"}, "needs neither"),
])
def test_bad_configs_say_what_is_wrong(bad, message):
    with pytest.raises(RecipeError, match=message):
        QualityClassifier(**bad)


def test_the_trained_classifier_is_cached_by_its_data_and_settings(domains, tmp_path, monkeypatch):
    positives, pool, _ = domains
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    path = str(positives_file(tmp_path, positives[:30]))
    small = pool.slice(0, 200)
    first = QualityClassifier(positives=path, method="hashed_linear")(small)
    models = sorted((tmp_path / "cache" / "classifiers").glob("*.bin"))
    assert len(models) == 1
    stamp = models[0].stat().st_mtime_ns
    again = QualityClassifier(positives=path, method="hashed_linear")(small)
    assert models[0].stat().st_mtime_ns == stamp  # read back, not trained again
    assert again.kept.column("quality_score").to_pylist() == first.kept.column("quality_score").to_pylist()
    QualityClassifier(positives=path, method="hashed_linear", word_ngrams=1)(small)
    assert len(list((tmp_path / "cache" / "classifiers").glob("*.bin"))) == 2  # other settings, another model


def test_an_existing_fasttext_file_is_applied_and_its_identity_is_in_the_fingerprint(domains, tmp_path):
    positives, pool, n_held = domains
    negatives = pool.column("text").to_pylist()[n_held : n_held + len(positives)]
    settings = quality.TrainSettings(method="fasttext", epochs=25, learning_rate=0.5, lowercase=False)  # applied as it is
    model = tmp_path / "quality.bin"
    model.write_bytes(quality.train(positives, negatives, settings))
    store = Store(tmp_path / "store")
    models = {"qc": {"backend": "classifier", "model": str(model)}}
    with ModelPool(models, store=store) as pool_:
        Pipeline([], pa.table({}) if False else _source(tmp_path, pool), name="pool").run(store)
        result = Pipeline([QualityClassifier(classifier="qc", top_fraction=n_held / pool.num_rows)], "pool", name="qc",
                          models=models).run(store, pool=pool_)
    kept = result.final.table()
    expected = quality.Trained(model.read_bytes(), settings).probability(
        [t[:50_000] for t in kept.column("text").to_pylist()])  # the stage reads max_chars of each
    assert np.allclose(kept.column("quality_score").to_numpy(), expected)
    precision = sum(i.startswith("readme") for i in kept.column("id").to_pylist()) / kept.num_rows
    assert precision >= 5 * n_held / pool.num_rows  # negatives: the first docs, not a sample of the pool
    model.write_bytes(quality.train(positives[:10], negatives[:10], settings))  # another model, another version
    with ModelPool(models, store=store) as pool_:
        other = Pipeline([QualityClassifier(classifier="qc", top_fraction=n_held / pool.num_rows)], "pool", name="qc",
                         models=models).run(store, pool=pool_)
    assert other.fingerprint != result.fingerprint


def _source(tmp_path, table):
    path = tmp_path / "pool.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in table.to_pylist()))
    return SOURCES["jsonl"](path=str(path), shape="text", fields={"id": "id"})


def test_a_transformers_sequence_classifier_trained_here_is_loaded_and_ranks_its_domain_first(domains, tmp_path, tiny_lm):
    """A tiny Llama sequence classifier (the tiny LM's tokenizer, 2 labels), trained here on
    the two domains, saved as any Hugging Face model is, then applied by the classifier backend."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    positives, pool, n_held = domains
    negatives = pool.column("text").to_pylist()[n_held : n_held + len(positives)]
    tok = AutoTokenizer.from_pretrained(tiny_lm)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256, num_labels=2,
                         pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else 0,
                         id2label={0: "other", 1: "readme"}, label2id={"other": 0, "readme": 1})
    model = LlamaForSequenceClassification(config)
    texts = positives + negatives
    labels = torch.tensor([1] * len(positives) + [0] * len(negatives))
    enc = tok(texts, truncation=True, max_length=128, padding="max_length", return_tensors="pt")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(60):
        idx = torch.randint(0, len(texts), (16,))
        loss = model(input_ids=enc.input_ids[idx], attention_mask=enc.attention_mask[idx], labels=labels[idx]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    folder = tmp_path / "readme-classifier"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    models = {"qc": {"backend": "classifier", "model": str(folder), "label": "readme", "max_length": 128}}
    with ModelPool(models) as pool_:
        out = QualityClassifier(classifier="qc", top_fraction=n_held / pool.num_rows)(pool, StageContext(models=pool_))
        scores = pool_.classifier("qc").score(["", "a"])
    assert ((scores >= 0) & (scores <= 1)).all()
    kept = out.kept.column("id").to_pylist()
    precision = sum(k.startswith("readme") for k in kept) / len(kept)
    assert precision >= 5 * n_held / pool.num_rows, precision

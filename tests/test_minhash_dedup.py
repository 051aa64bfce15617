"""minhash_dedup: signatures equal datasketch's, injected near-duplicates of real text are
found, distinct texts are never merged, and results do not depend on batching or workers."""

import glob
import random

import numpy as np
import pyarrow as pa
import pytest
from datasketch import MinHash

from curate.algorithms import graph, lsh
from curate.errors import RecipeError
from curate.stage import StageContext
from curate.stages import MinhashDedup


def real_documents(n_words=120):
    """Distinct passages of real English: the licence texts shipped with Debian."""
    words = []
    for f in sorted(glob.glob("/usr/share/common-licenses/*")):
        words += open(f, errors="ignore").read().split()
    docs = [" ".join(words[i : i + n_words]) for i in range(0, len(words) - n_words, n_words)]
    return list(dict.fromkeys(docs))


def distinct(docs, below=0.5):
    """Drop every passage whose 5-gram Jaccard with an earlier one is >= ``below``: the
    licences share whole paragraphs (GFDL 1.2 and 1.3 are 0.88 alike), so real text has
    natural near-duplicates that would blur what "distinct" means in these tests."""
    norm = lsh.Normalizer()
    close = exact_pairs(lsh.shingle_sets([norm(d) for d in docs], 5, "word"), below)
    drop = {j for _, j in close}
    return [d for k, d in enumerate(docs) if k not in drop]


def edited(text, rate, rng, vocab):
    """Word-level edits (substitute / delete / insert) at the given rate."""
    out = []
    for w in text.split():
        r = rng.random()
        if r < rate / 3:
            out.append(rng.choice(vocab))
        elif r < 2 * rate / 3:
            continue
        elif r < rate:
            out += [w, rng.choice(vocab)]
        else:
            out.append(w)
    return " ".join(out)


@pytest.fixture(scope="module")
def corpus():
    rng = random.Random(7)
    base = distinct(real_documents())
    vocab = sorted({w for d in base for w in d.split()})
    docs, origin = [], []
    for i, b in enumerate(base):
        docs.append(b)
        origin.append(i)
        if rng.random() < 0.9:
            for _ in range(rng.randint(2, 5)):
                docs.append(edited(b, rng.uniform(0.02, 0.15), rng, vocab))
                origin.append(i)
    order = list(range(len(docs)))
    rng.shuffle(order)
    docs, origin = [docs[k] for k in order], [origin[k] for k in order]
    norm = lsh.Normalizer()
    sets = lsh.shingle_sets([norm(d) for d in docs], 5, "word")
    truth = exact_pairs(sets, 0.8)
    table = pa.table({"id": [f"d{k}" for k in range(len(docs))], "text": docs})
    return table, origin, truth


def exact_pairs(sets, threshold):
    """Every pair with exact Jaccard >= threshold, by brute force (a sparse X @ X.T)."""
    from scipy.sparse import csr_matrix

    vocab = {h: k for k, h in enumerate(np.unique(np.concatenate(sets)))}
    rows = np.repeat(np.arange(len(sets)), [len(s) for s in sets])
    cols = np.array([vocab[h] for s in sets for h in s.tolist()])
    x = csr_matrix((np.ones(len(cols), dtype=np.int32), (rows, cols)), shape=(len(sets), len(vocab)))
    inter = (x @ x.T).tocoo()
    sizes = np.array([len(s) for s in sets])
    i, j, v = inter.row, inter.col, inter.data
    upper = i < j
    i, j, v = i[upper], j[upper], v[upper]
    jac = v / (sizes[i] + sizes[j] - v)
    return {(int(a), int(b)) for a, b in zip(i[jac >= threshold], j[jac >= threshold])}


def test_signature_equals_datasketch_for_words_and_characters():
    texts = [lsh.Normalizer()(t) for t in real_documents()[:5]] + ["tiny text", "", "naïve café — ünïcode"]
    a, b = lsh.permutations(128, 1)
    for unit, n in (("word", 5), ("char", 5), ("word", 1)):
        hashes, offsets = lsh.shingle_hashes(texts, n, unit)
        sig = lsh.signatures(hashes, offsets, a, b)
        for k, text in enumerate(texts):
            shingles = lsh.shingles(text, n, unit)
            assert hashes[offsets[k] : offsets[k + 1]].tolist() == [lsh.shingle_hash32(s, unit) for s in shingles]
            m = MinHash(num_perm=128, seed=1, hashfunc=lambda s, u=unit: lsh.shingle_hash32(s, u))
            m.update_batch(shingles)
            assert np.array_equal(m.hashvalues, sig[k]), (unit, k)


def test_injected_near_duplicates_found_with_high_recall_and_precision(corpus):
    table, origin, truth = corpus
    out = MinhashDedup()(table, StageContext(workers=2))
    idx = {r: k for k, r in enumerate(table.column("id").to_pylist())}
    cluster = {idx[r["id"]]: r["dup_cluster"] for t in (out.kept, out.rejected) for r in t.to_pylist()}
    assert len(truth) > 60
    # recall: a true pair (J >= 0.8) ends up in one cluster, so at most one of the two survives
    recall = sum(cluster[i] == cluster[j] for i, j in truth) / len(truth)
    assert recall >= 0.95
    # precision: a removed row truly near-duplicates (J >= 0.8) some other row of its cluster
    partners = {}
    for i, j in truth:
        partners.setdefault(i, set()).add(j)
        partners.setdefault(j, set()).add(i)
    removed = [idx[r] for r in out.rejected.column("id").to_pylist()]
    justified = sum(any(cluster[p] == cluster[k] for p in partners.get(k, ())) for k in removed)
    assert len(removed) > 50 and justified / len(removed) >= 0.95


def test_distinct_texts_are_never_merged(corpus):
    table, origin, _ = corpus
    out = MinhashDedup()(table)
    idx = {r: k for k, r in enumerate(table.column("id").to_pylist())}
    for r in out.rejected.to_pylist():
        assert origin[idx[r["id"]]] == origin[idx[r["duplicate_of"]]]
    assert len(set(origin)) == len({origin[idx[i]] for i in out.kept.column("id").to_pylist()})


def test_results_identical_across_batch_sizes_and_process_counts(corpus):
    table, _, _ = corpus
    runs = [MinhashDedup(batch_size=bs)(table, StageContext(workers=w)) for bs, w in ((2000, 1), (7, 1), (100, 2), (33, 2))]
    for out in runs[1:]:
        assert out.kept.equals(runs[0].kept)
        assert out.rejected.equals(runs[0].rejected)


def test_signature_agreement_estimates_jaccard_within_three_sigma():
    rng = np.random.default_rng(0)
    a, b = lsh.permutations(128, 1)
    for j in (0.2, 0.5, 0.8):
        # two sets of 1000 hashes sharing exactly the right number of elements
        union = rng.choice(2**32 - 1, size=3000, replace=False).astype(np.uint32)
        inter = int(round(j * 1000 * 2 / (1 + j)))
        size = (1000 * 2 - inter) // 2 + inter
        A = union[:size]
        B = np.concatenate([union[:inter], union[size : size + size - inter]])
        true_j = inter / len(np.union1d(A, B))
        sig = lsh.signatures(np.concatenate([A, B]), np.array([0, len(A), len(A) + len(B)]), a, b)
        est = (sig[0] == sig[1]).mean()
        assert abs(est - true_j) <= 3 * np.sqrt(true_j * (1 - true_j) / 128), (j, est, true_j)


def test_optimal_bands_match_datasketch_and_recall_bands_find_pairs_at_threshold():
    assert lsh.optimal_bands(0.7, 240) == (24, 10)
    assert lsh.optimal_bands(0.8, 128) == (9, 13)
    bands, rows = lsh.recall_bands(0.8, 128, 0.99)
    assert bands * rows <= 128 and lsh.candidate_probability(0.8, bands, rows) >= 0.99


def test_exact_duplicates_always_collide_and_a_chain_removes_only_direct_look_alikes():
    words = real_documents(200)[0].split()
    a_, b_, c_ = " ".join(words[:140]), " ".join(words[7:147]), " ".join(words[14:154])
    # J(a, b) = 0.87, J(b, c) = 0.93, J(a, c) = 0.81: at 0.85 a chain a ~ b ~ c, but c does not resemble a
    table = pa.table({"id": ["a", "b", "c", "a2"], "text": [a_, b_, c_, a_]})
    out = MinhashDedup(threshold=0.85)(table)
    # b goes for a; c's only look-alike, b, is gone, so c stays (connected components removed it for a)
    assert out.kept.column("id").to_pylist() == ["a", "c"]
    assert dict(zip(*out.rejected.select(["id", "duplicate_of"]).to_pydict().values())) == {"b": "a", "a2": "a"}
    assert set(out.kept.column("dup_cluster").to_pylist()) == {"a"}  # one cluster for analysis, named by its first row
    assert len(MinhashDedup(threshold=0.8)(table).kept) == 1  # at 0.8, c resembles a itself


def test_every_removed_row_is_removed_for_a_kept_row_it_resembles(corpus):
    """The keep rule on real text with chains (edits of one passage resemble it but not always
    each other): every removed row's ``duplicate_of`` is kept and has true Jaccard >= the
    threshold with it -- on the driver and in the plan's tasks, with tight and loose bands --
    and some rows of a cluster stay because their only look-alikes went."""
    from curate.stage import LocalPlan

    table, _, truth = corpus
    ids = table.column("id").to_pylist()
    idx = {r: k for k, r in enumerate(ids)}
    for options, driver_pairs in (({}, None), ({}, 0), ({"bands": 16, "rows": 2}, None), ({"bands": 16, "rows": 2}, 0)):
        ctx = StageContext()
        if driver_pairs is not None:
            ctx.plan = LocalPlan(ctx, 200, driver_pairs=driver_pairs)
            ctx.plan.partitions = 3
        out = MinhashDedup(**options)(table, ctx)
        kept = set(out.kept.column("id").to_pylist())
        removed = out.rejected.select(["id", "duplicate_of"]).to_pylist()
        assert len(removed) > 50
        for r in removed:
            assert r["duplicate_of"] in kept, r
            pair = tuple(sorted((idx[r["id"]], idx[r["duplicate_of"]])))
            assert pair in truth, r  # truth: every pair with exact word-5-gram Jaccard >= 0.8
        kept_idx = {idx[k] for k in kept}
        assert sum(i in kept_idx and j in kept_idx for i, j in truth) <= 0.01 * len(truth), options
        chained = [r for r in out.kept.to_pylist() if r["dup_cluster"] != r["id"]]
        assert chained, "no row kept in another row's cluster: the corpus has no chain to test"


def test_empty_and_too_short_texts_get_no_signature_and_are_kept():
    table = pa.table({"id": ["e1", "e2", "s1", "s2"], "text": ["", "", "two words", "two words"]})
    out = MinhashDedup()(table)
    assert len(out.kept) == 4 and len(out.rejected) == 0
    assert out.kept.column("dup_cluster").to_pylist() == ["e1", "e2", "s1", "s2"]


def test_keep_policies_longest_and_score():
    base = real_documents()[3]
    longer = base + " and one more clause at the very end"
    table = pa.table({"id": ["short", "long"], "text": [base, longer], "quality": [0.9, 0.1]})
    assert MinhashDedup(keep="longest")(table).kept.column("id").to_pylist() == ["long"]
    assert MinhashDedup(keep="score", score_column="quality")(table).kept.column("id").to_pylist() == ["short"]
    assert MinhashDedup()(table).kept.column("id").to_pylist() == ["short"]


def test_sft_rows_compare_the_chosen_part_of_the_conversation():
    base = real_documents()[5]
    msgs = lambda p, r: [{"role": "user", "content": p}, {"role": "assistant", "content": r}]  # noqa: E731
    table = pa.table({"id": ["x", "y"], "messages": [msgs("question one", base), msgs("a different question", base)]})
    assert len(MinhashDedup()(table).kept) == 1                   # same response
    assert len(MinhashDedup(field="prompt")(table).kept) == 2     # prompts differ (and are too short anyway)


def test_rejects_carry_kept_id_and_estimated_jaccard(corpus):
    table, _, _ = corpus
    rej = MinhashDedup()(table).rejected
    assert set(rej.column("reason").to_pylist()) == {"near_duplicate"}
    assert min(rej.column("jaccard").to_pylist()) > 0.5
    assert all("estimated Jaccard" in d for d in rej.column("detail").to_pylist())


def test_config_errors_are_recipe_errors():
    with pytest.raises(RecipeError, match="give both bands and rows"):
        MinhashDedup(bands=8)
    with pytest.raises(RecipeError, match="exceeds num_perm"):
        MinhashDedup(bands=20, rows=10)
    with pytest.raises(RecipeError, match="keep: score needs score_column"):
        MinhashDedup(keep="score")
    # exact_dedup's earlier name for the same option
    with pytest.raises(RecipeError, match="normalize_unicode: renamed to 'unicode_nfkc'"):
        MinhashDedup(normalize_unicode=True)


def test_against_removes_rows_that_near_duplicate_an_earlier_version_and_tracks_it(tmp_path):
    import json

    import curate
    from curate.sources import JsonlSource

    docs = distinct(real_documents())[:40]
    old = tmp_path / "old.jsonl"
    old.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[:20]))
    new = tmp_path / "new.jsonl"
    fresh = docs[20:40]
    repeats = [d + " (as amended)" for d in docs[:5]]  # near-copies of old rows, J ~ 0.97
    new.write_text("".join(json.dumps({"text": d}) + "\n" for d in fresh + repeats))
    store = tmp_path / "store"
    curate.Pipeline([], source=JsonlSource(path=str(old), shape="text"), name="old").run(store)

    step = MinhashDedup(against=["old"])
    result = curate.Pipeline([step], source=JsonlSource(path=str(new), shape="text"), name="new").run(store)
    rejected = result.final.rejected().to_pylist()
    assert len(rejected) == 5 and result.final.num_rows == 20
    assert {r["reason"] for r in rejected} == {"near_duplicate_of_earlier_version"}
    assert {r["duplicate_of"] for r in rejected} == {f"old:{k}" for k in range(1, 6)}
    assert list((store / "cache" / "minhash").glob("*.npz"))  # the reference's signatures are cached

    # the fingerprint follows the reference: a new version of 'old' reruns the step
    before = step.fingerprint("parent", curate.Store(store))
    old.write_text(old.read_text() + json.dumps({"text": docs[30]}) + "\n")
    curate.Pipeline([], source=JsonlSource(path=str(old), shape="text"), name="old").run(store)
    assert step.fingerprint("parent", curate.Store(store)) != before
    again = curate.Pipeline([step], source=JsonlSource(path=str(new), shape="text"), name="new").run(store)
    assert not again.steps[-1].cached and again.final.num_rows == 19  # docs[30] is now in 'old' too


def test_calibrate_reports_precision_recall_against_true_jaccard(corpus):
    from curate.calibrate import calibrate

    table, _, truth = corpus
    report = calibrate(table, MinhashDedup().config, examples=2)
    assert report["truth"]["pairs"] == len(truth)  # the reference banding finds every true pair
    assert report["merged"]["precision"] == 1.0 and report["merged"]["recall"] >= 0.95
    assert report["candidates"]["recall"] >= report["classic_unverified"]["recall"]
    assert report["candidates"]["precision"] < 1.0  # banding alone lets dissimilar pairs in...
    assert all(e["jaccard"] < 0.8 for e in report["examples"]["false_positive_candidates"])  # ...shown as examples
    unverified = calibrate(table, MinhashDedup(verify="none", bands=16, rows=8).config)
    assert unverified["merged"]["precision"] < report["merged"]["precision"]


def test_streaming_parquet_path_matches_the_stage(corpus, tmp_path):
    import pyarrow.parquet as pq

    from curate.stages.minhash import dedup_parquet

    table, _, _ = corpus
    path = tmp_path / "corpus.parquet"
    pq.write_table(table, path, row_group_size=100)
    kept_of, jac, cluster_of = dedup_parquet(str(path), "text", MinhashDedup(batch_size=64).config, StageContext(workers=2))
    out = MinhashDedup()(table)
    ids = table.column("id").to_pylist()
    partner = {r["id"]: r["id"] for r in out.kept.to_pylist()} | {r["id"]: r["duplicate_of"] for r in out.rejected.to_pylist()}
    cluster = {r["id"]: r["dup_cluster"] for t in (out.kept, out.rejected) for r in t.to_pylist()}
    assert [ids[k] for k in kept_of] == [partner[i] for i in ids]
    assert [ids[k] for k in cluster_of] == [cluster[i] for i in ids]


def test_candidate_pairs_are_the_same_however_the_band_hashes_are_partitioned(corpus):
    """The distributed plan's shuffle: band records split into any number of hash partitions
    and reduced one partition at a time give exactly ``lsh.candidate_pairs`` of the whole."""
    from curate.stages.minhash import _pair_keys, band_records, signatures_of

    table, _, _ = corpus
    c = MinhashDedup().config
    sig, valid = signatures_of(table, "text", c, StageContext(), "test")
    bands, rows = 16, 2  # loose bands: big groups, so the star-and-chain path is taken too
    whole = lsh.candidate_pairs(lsh.band_hashes(sig, bands, rows), valid)
    assert len(whole) > 1000
    n = len(table)
    for parts in (1, 3, 8):
        blocks = [band_records(sig[s : s + 50], valid[s : s + 50], s, bands, rows, parts) for s in range(0, n, 50)]
        keys = np.concatenate([k for p in range(parts) for k in _pair_keys(n, parts, *(b[p] for b in blocks))])
        assert np.array_equal(lsh.pairs_of(lsh.sorted_unique(keys), n), whole), parts


def test_the_decision_does_not_depend_on_the_plans_blocks_or_partitions(corpus):
    from curate.stage import LocalPlan

    table, _, _ = corpus
    out = MinhashDedup()(table)
    assert len(out.rejected) > 50
    for block_rows, parts, workers in ((13, 5, 1), (400, 1, 2), (10_000, 3, 1)):
        ctx = StageContext(workers=workers)
        ctx.plan = LocalPlan(ctx, block_rows)
        ctx.plan.partitions = parts
        other = MinhashDedup()(table, ctx)
        assert other.kept.equals(out.kept) and other.rejected.equals(out.rejected), (block_rows, parts)


@pytest.mark.parametrize("keep", ["first", "longest", "score"])
@pytest.mark.parametrize("verify", ["exact", "signature", "none"])
def test_clustering_by_the_plans_tasks_decides_as_the_driver_does(corpus, keep, verify):
    """Above ``driver_pairs`` candidate pairs, verification and clustering run as the plan's
    shuffles (minhash_cluster: signature joins, true Jaccard where the rows' texts are,
    Large-Star/Small-Star components, survivors per component): the same decision as the
    driver's, at any block size and number of partitions."""
    from curate.stage import LocalPlan

    table, _, _ = corpus
    table = table.append_column("quality", pa.array([float(len(t) % 17) for t in table.column("text").to_pylist()]))
    stage = MinhashDedup(keep=keep, verify=verify, score_column="quality" if keep == "score" else None)
    out = stage(table)
    assert len(out.rejected) > 50
    for block_rows, parts in ((37, 3), (500, 1), (10_000, 4)):
        ctx = StageContext()
        ctx.plan = LocalPlan(ctx, block_rows, driver_pairs=0)
        ctx.plan.partitions = parts
        other = stage(table, ctx)
        assert other.kept.equals(out.kept), (block_rows, parts)
        assert other.rejected.equals(out.rejected), (block_rows, parts)


@pytest.mark.parametrize("shape", ["random", "chain", "stars", "cliques"])
def test_large_star_small_star_finds_the_connected_components(shape):
    """The partitioned components minhash_cluster runs (algorithms.graph) label every node with
    its component's smallest node, as union-find does, on graphs that take many rounds (a
    shuffled chain of 3,000 nodes) and few, over 1 to 7 partitions."""
    from curate.algorithms import graph

    rng = np.random.default_rng(3)
    n = 3000
    if shape == "random":
        pairs = rng.integers(0, n, (2000, 2))
    elif shape == "chain":
        perm = rng.permutation(n)
        pairs = np.stack([perm[:-1], perm[1:]], axis=1)
    elif shape == "stars":
        pairs = np.stack([rng.integers(0, 50, n), np.arange(n)], axis=1)
    else:
        groups = rng.integers(0, 300, n)
        pairs = np.array([(a, b) for g in range(300) for a in np.flatnonzero(groups == g)
                          for b in np.flatnonzero(groups == g) if a < b])
    labels = lsh.components(n, pairs)
    smallest = np.full(labels.max() + 1, n)
    np.minimum.at(smallest, labels, np.arange(n))
    for parts in (1, 2, 7):
        assert np.array_equal(graph.star_components(n, pairs, parts), smallest[labels]), parts


@pytest.mark.parametrize("seed", range(5))
def test_keep_in_order_keeps_an_independent_set_and_removes_each_row_for_an_earlier_kept_neighbour(seed):
    rng = np.random.default_rng(seed)
    n = 300
    pairs = rng.integers(0, n, (600 + 200 * seed, 2))
    order = rng.permutation(n)
    partner = graph.keep_in_order(order, pairs)
    rank = np.empty(n, int)
    rank[order] = np.arange(n)
    neighbours = {k: set() for k in range(n)}
    for a, b in pairs.tolist():
        if a != b:
            neighbours[a].add(b)
            neighbours[b].add(a)
    kept = {k for k in range(n) if partner[k] < 0}
    for k in range(n):
        earlier_kept = sorted((m for m in neighbours[k] if m in kept and rank[m] < rank[k]), key=lambda m: rank[m])
        if k in kept:
            assert not earlier_kept and not (neighbours[k] & kept), k  # no edge joins two kept nodes
        else:
            assert earlier_kept and partner[k] == earlier_kept[0], k  # removed for its first kept neighbour
    assert graph.keep_in_order(np.array([0, 1, 2]), np.array([[0, 1], [1, 2]])).tolist() == [-1, 0, -1]  # a chain
    assert graph.keep_in_order(np.array([2, 1, 0]), np.array([[0, 1], [1, 2]])).tolist() == [-1, 2, -1]
    assert graph.keep_in_order(np.array([1, 0, 2]), np.array([[0, 1], [1, 2]])).tolist() == [1, -1, 1]

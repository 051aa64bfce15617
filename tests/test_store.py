
import pyarrow as pa
import pytest

from curate.errors import StoreError, UsageError
from curate.store import Store


def manifest(fp, kept, rejected):
    return {"fingerprint": fp, "counts": {"in": len(kept) + len(rejected), "kept": len(kept), "rejected": len(rejected)}}


def write(store, fp, n=3):
    kept = pa.table({"id": [f"{fp}-{i}" for i in range(n)], "text": ["x"] * n})
    rejected = pa.table({"id": ["r"], "reason": ["why"], "detail": ["because"]})
    return store.write_version(kept, rejected, manifest(fp, kept, rejected))


def test_written_version_round_trips_and_is_visible_only_with_manifest(tmp_path):
    store = Store(tmp_path)
    v = write(store, "aaaaaaaaaaaaaaaa")
    assert store.has("aaaaaaaaaaaaaaaa")
    assert v.table().column("id").to_pylist() == ["aaaaaaaaaaaaaaaa-0", "aaaaaaaaaaaaaaaa-1", "aaaaaaaaaaaaaaaa-2"]
    assert v.rejected().column("reason").to_pylist() == ["why"]
    assert not any((tmp_path / "tmp").iterdir())  # nothing left behind in tmp


def test_shards_split_large_tables(tmp_path):
    store = Store(tmp_path)
    kept = pa.table({"id": [str(i) for i in range(25)], "text": ["t"] * 25})
    v = store.write_version(kept, pa.table({"id": pa.array([], pa.string()), "reason": pa.array([], pa.string())}),
                            manifest("bbbbbbbbbbbbbbbb", kept, []), shard_rows=10)
    assert len(v.shards()) == 3 and v.table().num_rows == 25


def test_references_latest_nth_and_prefix(tmp_path):
    store = Store(tmp_path)
    for fp in ("1111111111111111", "2222222222222222", "3333333333333333"):
        write(store, fp)
        store.tag("demo", fp)
    store.tag("demo", "3333333333333333")  # re-tagging the latest adds nothing
    assert len(store.history("demo")) == 3
    assert store.resolve("demo").fingerprint == "3333333333333333"
    assert store.resolve("demo@latest").fingerprint == "3333333333333333"
    assert store.resolve("demo@1").fingerprint == "1111111111111111"
    assert store.resolve("demo@222222").fingerprint == "2222222222222222"
    assert store.resolve("2222222222").fingerprint == "2222222222222222"
    with pytest.raises(UsageError, match="versions 1..3"):
        store.resolve("demo@4")
    with pytest.raises(UsageError, match="did you mean 'demo'"):
        store.resolve("dem")


def test_step_names_with_slash_are_addressable(tmp_path):
    store = Store(tmp_path)
    write(store, "4444444444444444")
    store.tag("recipe/exact_dedup", "4444444444444444")
    assert store.resolve("recipe/exact_dedup@1").fingerprint == "4444444444444444"
    assert "recipe/exact_dedup" in store.names()


def test_stale_temp_dir_of_a_dead_run_is_swept_and_never_listed(tmp_path):
    store = Store(tmp_path)
    dead = tmp_path / "tmp" / "cccccccccccccccc.999999999.deadbeef"
    (dead / "data").mkdir(parents=True)
    (dead / "data" / "part-00000.parquet").write_bytes(b"partial")
    assert store.fingerprints() == []
    write(store, "dddddddddddddddd")
    assert not dead.exists()
    assert store.fingerprints() == ["dddddddddddddddd"]


def test_forced_rewrite_replaces_version_atomically(tmp_path):
    store = Store(tmp_path)
    write(store, "eeeeeeeeeeeeeeee", n=2)
    write(store, "eeeeeeeeeeeeeeee", n=5)
    assert store.version("eeeeeeeeeeeeeeee").table().num_rows == 5


def test_corrupt_manifest_is_a_store_error(tmp_path):
    store = Store(tmp_path)
    write(store, "ffffffffffffffff")
    (tmp_path / "versions" / "ffffffffffffffff" / "manifest.json").write_text("{broken")
    with pytest.raises(StoreError, match="corrupt manifest"):
        store.version("ffffffffffffffff")


def test_default_root_comes_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_STORE", str(tmp_path / "elsewhere"))
    assert Store().root == (tmp_path / "elsewhere").resolve()
    monkeypatch.delenv("CURATE_STORE")
    monkeypatch.chdir(tmp_path)
    assert Store().root == (tmp_path / ".curate").resolve()


def test_a_store_takes_a_file_uri_and_refuses_an_object_store_naming_it(tmp_path):
    from curate.errors import UsageError

    store = Store(f"file://{tmp_path}/s")
    assert store.root == (tmp_path / "s").resolve()
    assert Store(f"file://localhost{tmp_path}/my%20store").root == (tmp_path / "my store").resolve()
    with pytest.raises(UsageError, match=r"store s3://bucket/curate: a store lives on a filesystem"):
        Store("s3://bucket/curate")
    with pytest.raises(UsageError, match="absolute local path"):
        Store("file://relative/store")

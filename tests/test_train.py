"""The bundled fine-tuning step: TRL SFT on a dataset version, the model as a versioned
artifact, checkpoints that let an interrupted training resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from curate import Pipeline
from curate.errors import RecipeError
from curate.sources import SOURCES
from curate.store import Store
from curate.train import ModelStore, TrainConfig, resolve_base, training_rows

from .conftest import ROOT, run_cli

# A few steps at a rate a 225k-parameter model moves at (the demo's tiny LM).
FAST = {"max_steps": 8, "batch_size": 4, "gradient_accumulation": 1, "learning_rate": 2e-3, "max_length": 256,
        "save_steps": 4}


@pytest.fixture
def champ_version(isolated_store):
    """40 CHAMP model solutions (4 problems) as a stored dataset version."""
    source = SOURCES["champ"](SOURCES["champ"].Config(limit_problems=4, models=["GPT-4"]))
    return Pipeline([], source, name="toy").run(isolated_store).final


def _response_nll(model: Path, table) -> float:
    """Mean per-token loss of the rows' responses given their prompts, under ``model``: the
    training objective, on fixed data (the logged per-step losses are over random batches)."""
    from curate.models import ModelPool
    from curate.records import prompt_messages, response_of

    pool = ModelPool({"m": {"backend": "transformers", "model": str(model)}}, cache=False)
    try:
        lm = pool.get("m")
        messages = table.column("messages").to_pylist()
        lps = lm.logprobs([(lm.chat_prompt(prompt_messages(m)), response_of(m)) for m in messages])
    finally:
        pool.close()
    return float(-np.concatenate(lps).mean())


def _weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def test_full_finetuning_changes_every_trainable_parameter_and_lowers_the_loss(tiny_lm, champ_version, isolated_store):
    store = Store(isolated_store)
    base = resolve_base(str(tiny_lm))
    model, cached = ModelStore(store).train(champ_version, "toy", TrainConfig(model=str(tiny_lm), method="full", **FAST),
                                            base)
    assert not cached
    before, after = _weights(tiny_lm), _weights(model.model_path)
    assert set(before) == set(after)
    unchanged = [name for name in before if np.array_equal(before[name], after[name])]
    assert not unchanged, f"parameters the training did not move: {unchanged}"
    assert [e["step"] for e in model.log()] == list(range(1, 9))  # the loss of every step is logged
    data = champ_version.table()
    assert _response_nll(model.model_path, data) < _response_nll(tiny_lm, data) - 0.05
    assert model.manifest["train"]["trainable_parameters"] == sum(v.size for v in before.values())


def test_lora_trains_every_adapter_and_merges_it_into_every_targeted_layer(tiny_lm, champ_version, isolated_store):
    from safetensors.numpy import load_file

    store = Store(isolated_store)
    config = TrainConfig(model=str(tiny_lm), method="lora", lora_r=4, lora_alpha=8, lora_dropout=0.0,
                         **{**FAST, "learning_rate": 1e-2})
    model, _ = ModelStore(store).train(champ_version, "toy", config, resolve_base(str(tiny_lm)))
    adapter = load_file(str(model.path / "adapter" / "adapter_model.safetensors"))
    lora_b = {k: v for k, v in adapter.items() if "lora_B" in k}
    # PEFT starts every B at zero, so a B still all zero is an adapter the training never moved
    assert lora_b and all(np.abs(v).max() > 0 for v in lora_b.values()), [k for k, v in lora_b.items() if not v.any()]
    before, after = _weights(tiny_lm), _weights(model.model_path)
    targeted = [k for k in before if k.endswith("proj.weight")]  # every linear layer of the decoder
    assert len(targeted) == 2 * 7
    assert all(not np.array_equal(before[k], after[k]) for k in targeted)
    assert np.array_equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])  # not a target
    data = champ_version.table()
    assert _response_nll(model.model_path, data) < _response_nll(tiny_lm, data) - 0.05


def test_a_model_records_its_config_data_fingerprint_and_log_and_is_trained_once(tiny_lm, champ_version, isolated_store):
    store = Store(isolated_store)
    config = TrainConfig(model=str(tiny_lm), method="full", **{**FAST, "max_steps": 2})
    registry = ModelStore(store)
    model, _ = registry.train(champ_version, "toy", config, resolve_base(str(tiny_lm)))
    resolved = json.loads((model.path / "train_config.json").read_text())
    assert resolved["max_steps"] == 2 and resolved["learning_rate"] == FAST["learning_rate"] and resolved["base_identity"]
    dataset = json.loads((model.path / "dataset.json").read_text())
    assert dataset["fingerprint"] == champ_version.fingerprint and dataset["rows"] == champ_version.num_rows
    assert [s["step"] for s in dataset["lineage"]] == ["source"]
    assert len(model.log()) == 2 and not list((store.root / "models" / "tmp").glob("*"))
    # 2 steps of 4 rows reach 8 rows: a seeded sample of 8 + 5% is all that is tokenized
    summary = model.manifest["train"]
    assert summary["rows"] == champ_version.num_rows > 9 and summary["trained_rows"] == 9 == summary["sampled_for_max_steps"]
    again, cached = registry.train(champ_version, "toy", config, resolve_base(str(tiny_lm)))
    assert cached and again.fingerprint == model.fingerprint
    # a checkpoint setting does not change the weights, so it is the same model; a learning rate does
    assert registry.fingerprint(champ_version.fingerprint, resolve_base(str(tiny_lm)),
                                config.model_copy(update={"save_steps": 1})) == model.fingerprint
    other = config.model_copy(update={"learning_rate": 1e-4})
    assert registry.fingerprint(champ_version.fingerprint, resolve_base(str(tiny_lm)), other) != model.fingerprint
    assert registry.resolve("toy").fingerprint == model.fingerprint == registry.resolve(model.fingerprint[:6]).fingerprint
    listed = run_cli("models", "list", "--json", "--store", str(isolated_store))
    assert listed.returncode == 0, listed.stderr
    assert [m["fingerprint"] for m in json.loads(listed.stdout)] == [model.fingerprint]


def test_assistant_only_loss_splits_each_conversation_at_its_last_reply():
    import pyarrow as pa

    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"},
            {"role": "assistant", "content": "2"}]
    table = pa.table({"id": ["a", "b"], "messages": [conv, conv[:2]]})
    rows, counts = training_rows(table, assistant_only_loss=True)
    assert rows == [{"prompt": conv[:2], "completion": conv[2:]}]
    assert counts["no_assistant_reply"] == 1
    rows, _ = training_rows(table, assistant_only_loss=False)
    assert rows == [{"messages": conv}]


def test_a_half_written_checkpoint_is_never_resumed_from(tmp_path):
    from curate.train.sft import CHECKPOINT_FILES, last_checkpoint

    for step, files in ((5, [*CHECKPOINT_FILES, "model.safetensors"]), (10, ["model.safetensors", "optimizer.pt"])):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for f in files:
            (folder / f).write_text("x")
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-5"
    assert not (tmp_path / "checkpoint-10").exists()  # a kill during the save of step 10 left it incomplete


def test_train_config_errors_name_the_field(tmp_path):
    from curate.recipe import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nsource: {type: champ, limit_problems: 2}\nstages: [exact_dedup]\n"
                      "train:\n  model: m\n  learning_rte: 0.1\neval:\n  data: nope.jsonl\n  max_tokens: 0\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(recipe)
    text = str(err.value)
    assert "r.yaml:6: train.learning_rte: unknown key; did you mean 'learning_rate'?" in text
    assert "r.yaml:9: eval.max_tokens" in text


def test_an_interrupted_training_resumes_from_its_last_checkpoint_and_ends_where_an_uninterrupted_one_does(
        tiny_lm, champ_version, isolated_store, tmp_path):
    steps = 60
    settings = {"method": "full", "max_steps": steps, "save_steps": 5, "batch_size": 2, "gradient_accumulation": 1,
                "max_length": 128, "learning_rate": 1e-3}
    args = ["train", "toy", "--model", str(tiny_lm), *(a for k, v in settings.items() for a in ("--set", f"{k}={v}")),
            "--store", str(isolated_store)]
    proc = subprocess.Popen([sys.executable, "-m", "curate", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=os.environ.copy(), start_new_session=True)
    work = isolated_store / "models" / "tmp"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not list(work.glob("*/checkpoint-10")):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(work.glob("*/checkpoint-10")), proc.stderr.read().decode()[-2000:]
    assert not ModelStore(Store(isolated_store)).list(), "the training finished before it was killed; nothing was tested"

    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from checkpoint-" in resumed.stdout, resumed.stdout
    model = ModelStore(Store(isolated_store)).resolve("toy")
    log = model.log()
    assert [e["step"] for e in log] == list(range(1, steps + 1))  # every step once, none lost, none repeated

    # the same training, never interrupted, into another store: the same losses, step by step
    other = tmp_path / "other"
    Pipeline([], SOURCES["champ"](SOURCES["champ"].Config(limit_problems=4, models=["GPT-4"])), name="toy").run(other)
    straight = run_cli(*args[:-1], str(other))
    assert straight.returncode == 0, straight.stderr
    reference = ModelStore(Store(other)).resolve("toy")
    assert reference.fingerprint == model.fingerprint
    np.testing.assert_allclose([e["loss"] for e in log], [e["loss"] for e in reference.log()], rtol=1e-4)

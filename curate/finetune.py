"""The end of a recipe: fine-tune on the curated version (and on its baselines, e.g. the raw
pool), evaluate every model on the held-out set, write the comparison table.

    curate run recipes/math_sft.yaml   # the chain, then train: and eval:

Each training is a versioned model (``curate.train.artifacts``): rerunning an unchanged
recipe trains nothing and evaluates nothing (evaluations are stored with the model, keyed
by the held-out set's content and the eval settings). The table goes to
``<store>/reports/<name>/comparison.md`` (and ``.csv``) and is printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .fingerprint import hash_parts
from .stage import Reporter
from .store import Store, Version
from .train import BaseWeights, ModelStore, TrainConfig, TrainedModel, resolve_base
from .train.config import EvalConfig

if TYPE_CHECKING:
    from .evaluate import EvalResult
    from .models import ModelPool

EVAL_VERSION = "1"
SOURCE_STEP = "source"


@dataclass
class Finished:
    """What training and evaluation produced: the models (label, model, cached) and the
    comparison rows; ``table`` is the Markdown the run printed."""

    models: list[tuple[str, TrainedModel, bool]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    table: str = ""
    path: Path | None = None


def train_model(ref: str, config: TrainConfig | None = None, *, store: Store | str | None = None,
                models: dict[str, Any] | None = None, reporter: Reporter | None = None, force: bool = False,
                **settings: Any) -> tuple[TrainedModel, bool]:
    """Fine-tune on the dataset version ``ref`` (``curate train``): ``config``, or its fields as
    keywords (``train_model("math_sft", model="Qwen/Qwen2.5-0.5B", method="lora")``).
    ``models`` names the models ``config.model`` may refer to (a recipe's ``models:``).
    Returns the model and whether it already existed."""
    from .models import ModelPool

    store = store if isinstance(store, Store) else Store(store)
    config = TrainConfig(**{**(config.model_dump(exclude_defaults=True) if config is not None else {}), **settings})
    version = store.resolve(ref)
    pool = ModelPool(models or {}, reporter=reporter, store=store)
    try:
        base = resolve_base(config.model, pool, store, reporter)
        return ModelStore(store).train(version, ref, config, base, reporter, force=force)
    finally:
        pool.close()


def training_targets(name: str, final: Version, config: TrainConfig, store: Store, steps: list[str]) -> list[tuple[str, Version]]:
    """(label, version) for the curated set and each baseline: a step of this recipe
    (``source``: the raw pool), labelled ``NAME/STEP``, or any dataset reference."""
    out = [(name, final)]
    for ref in config.baselines:
        label = f"{name}/{ref}" if ref in steps else ref
        out.append((label, store.resolve(label)))
    return out


def finetune_and_evaluate(name: str, final: Version, train: TrainConfig, evaluation: EvalConfig | None,
                          pool: ModelPool, store: Store, steps: list[str], reporter: Reporter | None = None,
                          force: bool = False) -> Finished:
    """Train ``train.model`` on ``final`` and on the baselines, evaluate each (and the base
    model) on ``evaluation.data``, and write the comparison table. ``pool`` is the run's
    models (``Recipe.run`` passes the one its chain used); the caller closes it."""
    done = Finished()
    base = resolve_base(train.model, pool, store, reporter)
    registry = ModelStore(store)
    for label, version in training_targets(name, final, train, store, [SOURCE_STEP, *steps]):
        model, cached = registry.train(version, label, train, base, reporter, force=force)
        if reporter is not None:
            s = model.manifest["train"]
            reporter.log(f"finetune {label}: {'cached' if cached else 'trained'} {model.fingerprint} "
                         f"({s['steps']} steps, loss {s['first_loss']} -> {s['final_loss']})")
        done.models.append((label, model, cached))
    if evaluation is None:
        return done
    from .evaluate import load_eval_set

    items = load_eval_set(evaluation.data, store)
    eval_fp = hash_parts("eval", [(i.id, i.question, i.answer, i.solution) for i in items],
                         evaluation.model_dump(mode="json", exclude={"data", "base"}), EVAL_VERSION)
    if evaluation.base:
        done.rows.append({"label": f"{base.label} (base, not fine-tuned)", "dataset": "-", "dataset_fingerprint": "",
                          "rows": 0, "train_loss": None,
                          "eval": _evaluate_base(base, items, evaluation, eval_fp, store, pool, reporter)})
    for label, model, _ in done.models:
        result = registry.load_eval(model, eval_fp)
        if result is None or force:
            evaluated = run_eval(pool, str(model.model_path), label, items, evaluation, reporter)
            evaluated.write(registry.eval_dir(model, eval_fp))
            result = evaluated.to_json()
        s = model.manifest["train"]
        done.rows.append({"label": label, "dataset": model.name, "dataset_fingerprint": model.manifest["dataset"]["fingerprint"],
                          "rows": model.manifest["dataset"]["rows"], "train_loss": s["final_loss"],
                          "model": model.fingerprint, "eval": result})
    from .evaluate import comparison_table, write_comparison

    done.table = comparison_table(done.rows)
    done.path, _ = write_comparison(done.rows, store.area("reports", name) / "comparison.md")
    return done


def _evaluate_base(base: BaseWeights, items: list, evaluation: EvalConfig, eval_fp: str, store: Store,
                   pool: ModelPool, reporter: Reporter | None) -> dict:
    import json

    folder = store.area("reports", "base-evals", hash_parts(base.identity, eval_fp))
    if (folder / "eval.json").is_file():
        return json.loads((folder / "eval.json").read_text())
    result = run_eval(pool, str(base.path), base.label, items, evaluation, reporter)
    result.write(folder)
    return result.to_json()


def evaluate_models(refs: list[str], evaluation: EvalConfig, store: Store, reporter: Reporter | None = None
                    ) -> list[dict[str, Any]]:
    """``curate eval``: a comparison row per model -- a trained model (its fingerprint, or the
    dataset it was trained on) or a local model folder -- each answering ``evaluation.data``."""
    from .errors import StoreError, UsageError
    from .evaluate import load_eval_set
    from .models import ModelPool

    registry = ModelStore(store)
    items = load_eval_set(evaluation.data, store)
    rows = []
    with ModelPool(reporter=reporter, store=store) as pool:  # this command's one pool
        for ref in refs:
            if Path(ref).is_dir():
                row = {"label": ref, "dataset": "-", "dataset_fingerprint": "", "rows": 0, "train_loss": None}
                path = ref
            else:
                try:
                    m = registry.resolve(ref)
                except StoreError as e:
                    raise UsageError(str(e)) from None
                row = {"label": m.name, "dataset": m.name, "dataset_fingerprint": m.manifest["dataset"]["fingerprint"],
                       "rows": m.manifest["dataset"]["rows"], "train_loss": m.manifest["train"]["final_loss"],
                       "model": m.fingerprint}
                path = str(m.model_path)
            rows.append({**row, "eval": run_eval(pool, path, row["label"], items, evaluation, reporter).to_json()})
    return rows


def run_eval(pool: ModelPool, model_path: str, label: str, items: list, evaluation: EvalConfig,
             reporter: Reporter | None) -> EvalResult:
    """``curate.evaluate.evaluate`` of the model in ``model_path`` (an ``EvalResult``), loaded
    through the run's ``pool`` for this evaluation only."""
    from .evaluate import evaluate

    with pool.borrowed(f"eval:{label}", {"backend": "transformers", "model": model_path}) as lm:
        return evaluate(lm, items, kind=evaluation.kind, max_tokens=evaluation.max_tokens,
                        system_prompt=evaluation.system_prompt, instruction=evaluation.instruction, reporter=reporter,
                        label=label)

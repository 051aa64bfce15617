"""The openai backend against a real HTTP server on 127.0.0.1 (``curate.models.serve`` over
the tiny transformers model), and the parts of the vllm backend that need no vLLM.

Fault tests use timeout_s=1 and max_retries <= 2: the openai client's backoff starts at
about 0.5 s and doubles, so each stays within a few seconds.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import urllib.error
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest

from curate.models import CallCache, ModelError, ModelPool, OpenAISpec, Sampling, VLLMSpec
from curate.models.openai_api import OpenAILM, target_logprobs
from curate.models.serve import serve
from curate.models.vllm_offline import pick_logprobs
from curate.models.windows import score_windows

MESSAGES = [{"role": "user", "content": "What is 3 plus 4?"}]


@pytest.fixture(scope="module")
def local(tiny_lm):
    lm = ModelPool({"tiny": {"backend": "transformers", "model": str(tiny_lm)}}, cache=False).get("tiny")
    yield lm
    lm.close()


@pytest.fixture
def start(local):
    """``start(faults=..., **server_options)`` -> a running server; closed after the test."""
    servers = []

    def _start(**options):
        servers.append(serve(local, **options))
        return servers[-1]

    yield _start
    for s in servers:
        s.close()


def remote(server, name="remote", cache=None, **spec):
    return OpenAILM(name, OpenAISpec(base_url=server.url, model="tiny", **spec), cache=cache)


def posts(server):
    return [s for s in server.seen if s.method == "POST"]


# -- generation ------------------------------------------------------------------------------
def test_greedy_generation_through_chat_and_completions_routes_equals_local(local, start):
    server = start()
    lm = remote(server)
    prompts = [MESSAGES, "The sum of 3 and 4"]
    sampling = Sampling(max_tokens=12)
    assert lm.generate(prompts, sampling) == [local.generate([p], sampling)[0] for p in prompts]
    assert lm.generate(prompts, sampling) == lm.generate(prompts, sampling)  # deterministic
    assert {s.path for s in posts(server)} == {"/v1/chat/completions", "/v1/completions"}


def test_n_sampled_completions_per_prompt_and_greedy_n_asks_once(local, start):
    server = start()
    lm = remote(server)
    out = lm.generate([MESSAGES, "The sum of"], Sampling(n=3, temperature=1.0, max_tokens=8, seed=1))
    assert [len(o) for o in out] == [3, 3]
    assert all(isinstance(t, str) for o in out for t in o)
    assert [s.body["n"] for s in posts(server)] == [3, 3]
    greedy = lm.generate([MESSAGES], Sampling(n=2, max_tokens=8))[0]
    assert greedy[0] == greedy[1] and posts(server)[-1].body["n"] == 1  # vLLM rejects n > 1 when greedy


def test_requests_run_concurrently_up_to_max_concurrency_results_in_input_order(local, start):
    server = start(faults=[0.3] * 6)  # each answer delayed, so requests overlap
    prompts = [f"The sum of {i} and {i}" for i in range(6)]
    out = remote(server, max_concurrency=2).generate(prompts, Sampling(max_tokens=6))
    assert out == [local.generate([p], Sampling(max_tokens=6))[0] for p in prompts]  # one request per prompt
    assert server.max_in_flight == 2


# -- log-probabilities -----------------------------------------------------------------------
def test_logprobs_through_the_server_equal_local_transformers_logprobs(local, start):
    lm = remote(start())
    pairs = [
        ("", "The sum of 3 and 4 is 7. Numbers are fun to add together."),
        (local.chat_prompt(MESSAGES), "The answer is 7."),  # context ends with a newline
        ("The sum of 3 and 4 is", " 7. Numbers"),
        ("Some context", ""),
    ]
    got, want = lm.logprobs(pairs), local.logprobs(pairs)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=1e-4)
    assert [len(g) for g in got][:3] == [len(local.tokenizer(t, add_special_tokens=False).input_ids) for _, t in pairs[:3]]


def test_server_without_prompt_logprobs_gives_a_clear_error(start):
    lm = remote(start(prompt_logprobs="omit"))
    with pytest.raises(ModelError, match="does not return prompt log-probabilities") as e:
        lm.logprobs([("", "The sum of 3 and 4 is 7.")])
    assert "vLLM" in str(e.value)


def test_server_rejecting_echo_is_reported_with_its_message_and_not_retried(start):
    server = start(prompt_logprobs="reject")
    with pytest.raises(ModelError) as e:
        remote(server).logprobs([("", "The sum of 3 and 4 is 7.")])
    msg = str(e.value)
    assert "HTTP 400" in msg and "echo and logprobs are not supported" in msg and "echo + logprobs" in msg
    assert len(posts(server)) == 1


def test_second_logprobs_call_on_the_same_pairs_is_answered_from_the_cache(start, tmp_path):
    server = start()
    pairs = [("", "The sum of 1 and 2 is 3."), ("The sum of 1 and 2 is", " 3.")]
    lm = remote(server, cache=CallCache(tmp_path / "calls.sqlite"))
    first = lm.logprobs(pairs)
    sent = len(server.seen)
    assert sent == 2
    again = remote(server, cache=CallCache(tmp_path / "calls.sqlite"))  # a new run, same cache file
    second = again.logprobs(pairs)
    assert len(server.seen) == sent
    assert again.stats.cached == 2 and again.stats.calls == 0
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_target_logprobs_aligns_vllm_style_offsets_shifted_by_a_bos_string():
    # vLLM counts text offsets in token strings: "<s>" adds 3. Text "ab cd".
    offsets = [0, 3, 5, 7, 8]  # "<s>", "ab", " c", "d", then the generated token
    values = [None, -1.0, -2.0, -3.0, -9.0]
    tokens = ["<s>", "ab", " c", "d", "!"]
    assert target_logprobs(offsets, values, tokens, 0, 5, generated=1) == [-1.0, -2.0, -3.0]
    assert target_logprobs(offsets, values, tokens, 2, 5, generated=1) == [-2.0, -3.0]
    assert target_logprobs(offsets, values, tokens, 4, 5, generated=1) == [-3.0]
    # a token straddling the boundary ("ab " + "cd") holds target characters: it is kept
    assert target_logprobs(offsets, values, tokens, 3, 5, generated=1) == [-2.0, -3.0]
    # a server that reports no generated token
    assert target_logprobs(offsets[:4], values[:4], tokens[:4], 2, 5, generated=0) == [-2.0, -3.0]
    # a server without BOS: the text's first token has no log-probability and is dropped
    assert target_logprobs([0, 2, 4, 5], [None, -2.0, -3.0, -9.0], None, 0, 5, generated=1) == [-2.0, -3.0]
    with pytest.raises(ValueError):
        target_logprobs([0, 2, 4, 5], [-1.0, None, -3.0, -9.0], None, 0, 5, generated=1)


# -- retries and errors ----------------------------------------------------------------------
def test_server_error_and_timeout_are_retried_then_succeed(local, start):
    server = start(faults=[500, "hang"])
    lm = remote(server, timeout_s=1, max_retries=2)
    assert lm.generate(["The sum of"], Sampling(max_tokens=4)) == local.generate(["The sum of"], Sampling(max_tokens=4))
    seen = posts(server)
    assert [s.fault for s in seen] == [500, "hang", None]
    assert [s.status for s in seen] == [500, 0, 200]
    assert [s.headers.get("x-stainless-retry-count") for s in seen] == ["0", "1", "2"]


def test_dropped_connection_is_retried(local, start):
    server = start(faults=["drop"])
    out = remote(server, timeout_s=1, max_retries=1).generate(["The sum of"], Sampling(max_tokens=4))
    assert out == local.generate(["The sum of"], Sampling(max_tokens=4))
    assert len(posts(server)) == 2


def test_retries_exhausted_give_a_model_error_naming_the_status(start):
    server = start(faults=[503, 503, 503])
    with pytest.raises(ModelError, match=r"HTTP 503: injected fault.*after 1 retries"):
        remote(server, timeout_s=1, max_retries=1).generate(["x"], Sampling(max_tokens=2))
    assert len(posts(server)) == 2


@pytest.mark.parametrize("case", ["wrong model name", "invalid parameter"])
def test_client_error_is_reported_with_status_url_model_and_message_and_not_retried(start, case):
    if case == "wrong model name":
        server = start()
        lm = OpenAILM("remote", OpenAISpec(base_url=server.url, model="no-such-model", max_retries=2))
        expected = ["HTTP 404", "`no-such-model` does not exist", "no-such-model", server.url]
    else:
        server = start(faults=[(400, "max_tokens is too large for this model")])
        lm = remote(server, max_retries=2)
        expected = ["HTTP 400", "max_tokens is too large", "tiny", server.url]
    with pytest.raises(ModelError) as e:
        lm.generate([MESSAGES], Sampling(max_tokens=4))
    for part in expected:
        assert part in str(e.value)
    assert len(posts(server)) == 1


def test_api_key_is_sent_as_bearer_header_and_never_appears_in_messages(start, monkeypatch):
    key = "sk-test-0123456789secret"
    monkeypatch.setenv("CURATE_TEST_API_KEY", key)
    server = start(api_key=key, faults=[None, (401, f"invalid key {key}")])
    lm = remote(server, api_key_env="CURATE_TEST_API_KEY", max_retries=0)
    assert lm.generate(["The sum of"], Sampling(max_tokens=2))[0]
    assert posts(server)[0].headers["authorization"] == f"Bearer {key}"
    with pytest.raises(ModelError) as e:
        lm.generate(["Another prompt"], Sampling(max_tokens=2))
    assert key not in str(e.value) and "HTTP 401" in str(e.value) and "CURATE_TEST_API_KEY" in str(e.value)
    assert key not in repr(e.value.__cause__) and e.value.__suppress_context__


def test_unset_api_key_variable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("CURATE_MISSING_KEY", raising=False)
    with pytest.raises(ModelError, match="CURATE_MISSING_KEY"):
        OpenAILM("remote", OpenAISpec(base_url="http://127.0.0.1:9/v1", model="m", api_key_env="CURATE_MISSING_KEY"))


def test_unreachable_server_is_a_clear_error():
    lm = OpenAILM("remote", OpenAISpec(base_url="http://127.0.0.1:9/v1", model="m", max_retries=0, timeout_s=1))
    with pytest.raises(ModelError, match="cannot connect.*is the server running"):
        lm.generate(["x"], Sampling(max_tokens=2))


def test_missing_openai_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)  # import openai -> ImportError
    with pytest.raises(ModelError, match=r"pip install 'curate\[api\]'"):
        OpenAILM("remote", OpenAISpec(base_url="http://127.0.0.1:9/v1", model="m"))


# -- chat prompts and identity ---------------------------------------------------------------
def test_chat_prompt_needs_a_tokenizer_and_then_matches_the_local_template(local, start, tiny_lm):
    server = start()
    with pytest.raises(ModelError, match="tokenizer:"):
        remote(server).chat_prompt(MESSAGES)
    assert remote(server, tokenizer=str(tiny_lm)).chat_prompt(MESSAGES) == local.chat_prompt(MESSAGES)


def test_identity_is_the_server_and_the_served_model_name():
    def identity(**spec):
        return ModelPool({"r": {"backend": "openai", **spec}}).identity("r")

    a = identity(base_url="http://h:8000/v1", model="m")
    assert a == identity(base_url="http://h:8000/v1/", model="m", max_concurrency=1, timeout_s=5)
    assert a != identity(base_url="http://h:8000/v1", model="other")
    assert a != identity(base_url="http://h:9000/v1", model="m")


# -- the server's own contract ---------------------------------------------------------------
def test_server_answers_bad_requests_with_openai_style_errors(start):
    server = start()

    def call(path, body=None, raw=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(server.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    status, body = call("/models")
    assert status == 200 and [m["id"] for m in body["data"]] == ["tiny"]
    assert call("/completions", raw=b"{not json")[0] == 400
    status, body = call("/chat/completions", {"model": "tiny"})
    assert status == 400 and "messages" in body["error"]["message"] and body["error"]["code"] == 400
    status, body = call("/completions", {"model": "tiny", "prompt": "x", "top_p": 0})
    assert status == 400 and "top_p" in body["error"]["message"]
    status, body = call("/completions", {"model": "nope", "prompt": "x"})
    assert status == 404 and "does not exist" in body["error"]["message"]
    status, body = call("/completions", {"model": "tiny", "prompt": ["a b", "c"], "max_tokens": 0, "echo": True,
                                         "logprobs": 0})
    assert status == 200 and [c["text"] for c in body["choices"]] == ["a b", "c"]
    lp = body["choices"][0]["logprobs"]
    assert lp["token_logprobs"][0] is None and all(v is not None for v in lp["token_logprobs"][1:])
    assert len(lp["tokens"]) == len(lp["text_offset"]) == len(lp["top_logprobs"])


# -- vllm: what can be checked without vLLM (the backend itself is untested here: no GPU) ----
def test_vllm_backend_without_vllm_says_how_to_install(tiny_lm):
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    from curate.models.vllm_offline import VllmLM

    with pytest.raises(ModelError, match=r"needs vLLM on a CUDA machine: pip install 'curate\[gpu\]'"):
        VllmLM("gen", VLLMSpec(model=str(tiny_lm)))
    # its identity needs no vLLM: the model folder's content, apart from the transformers backend's
    pool = ModelPool({"gen": {"backend": "vllm", "model": str(tiny_lm)}, "ref": {"model": str(tiny_lm)}})
    assert pool.identity("gen") != pool.identity("ref")


def test_vllm_score_windows_score_every_target_token_once_with_half_a_window_of_context():
    for start_, end, window in [(1, 5, 16), (3, 40, 16), (30, 31, 16), (1, 1000, 64), (100, 130, 8)]:
        windows = score_windows(start_, end, window)
        scored = [t for lo, a, b in windows for t in range(a, b)]
        assert scored == list(range(start_, end))
        for lo, a, b in windows:
            assert b - lo <= window and lo < a
            assert a - lo >= min(window // 2, a)
    assert score_windows(5, 5, 16) == []


def test_vllm_pick_logprobs_reads_the_actual_tokens():
    lp = SimpleNamespace
    prompt_logprobs = [None, {7: lp(logprob=-0.5), 1: lp(logprob=-0.1)}, {9: lp(logprob=-2.0)}]
    np.testing.assert_allclose(pick_logprobs(prompt_logprobs, [1, 7, 9], 2), [-0.5, -2.0])
    with pytest.raises(ModelError):
        pick_logprobs(prompt_logprobs, [1, 8, 9], 2)

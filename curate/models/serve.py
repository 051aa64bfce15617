"""Serve any ``LM`` over OpenAI-compatible HTTP routes, with the standard library only.

    server = serve(lm)                     # a daemon thread; server.url is ".../v1"
    OpenAI(base_url=server.url, api_key="x").completions.create(model=lm.name, prompt="2+2=")
    server.close()

Routes: ``GET /v1/models``, ``POST /v1/completions`` (``prompt`` a string or a list of
strings; ``n``, ``temperature``, ``top_p``, ``max_tokens``, ``seed``, ``stop``; ``echo`` and
``logprobs`` in the legacy shape, echoed prompt tokens first, the first one without a
log-probability, as vLLM returns them), ``POST /v1/chat/completions`` (``messages``, with
the same sampling fields). Errors come back as ``{"error": {"message", "type", "code"}}``.

It is for tests and local use (``curate models serve``): one model, calls to it serialised
by a lock, no streaming, no batching across requests. Log-probabilities need a model with
a Hugging Face ``tokenizer`` attribute (``TransformersLM``); ``top_logprobs`` holds only
the scored token, since ``LM`` gives no alternatives.

Testing aid, fault injection: ``faults=[500, "hang", 0.3, "drop", (400, "bad")]`` answers
the next requests, one fault each, before serving normally: an int is that HTTP status
(with an OpenAI-style error body), ``(status, message)`` the same with that message,
``"hang"`` never answers (the thread waits ``hang_s`` or until ``close()``), ``"drop"``
closes the connection without an answer, a float delays the answer by that many seconds.
``seen`` records every request (path, headers, body, status) and ``max_in_flight`` the
most requests handled at once, so a test can check what a client really sent.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .base import LM, ModelError, Sampling

Fault = int | float | str | tuple[int, str]


class _Fail(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


@dataclass
class Seen:
    """One request the server received, and the status it answered (0: no answer)."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: Any
    status: int = 0
    fault: Any = field(default=None)


class LMServer:
    """An OpenAI-compatible server over ``lm``; ``serve()`` makes and starts one."""

    def __init__(self, lm: LM, host: str = "127.0.0.1", port: int = 0, model_name: str | None = None,
                 faults: Iterable[Fault] = (), hang_s: float = 30.0, api_key: str | None = None,
                 prompt_logprobs: str = "yes"):
        """``api_key``: require ``Authorization: Bearer <key>`` (401 otherwise).
        ``prompt_logprobs``: ``"yes"``; ``"omit"`` answers without logprobs (servers that
        ignore the field); ``"reject"`` answers 400 to echo/logprobs (hosted chat APIs)."""
        if prompt_logprobs not in ("yes", "omit", "reject"):
            raise ValueError(f"prompt_logprobs must be 'yes', 'omit' or 'reject', not {prompt_logprobs!r}")
        self.lm, self.model_name = lm, model_name or lm.name
        self.faults: deque = deque(faults)
        self.hang_s, self.api_key, self.prompt_logprobs = hang_s, api_key, prompt_logprobs
        self.seen: list[Seen] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._state = threading.Lock()  # faults, seen, counters
        self._model = threading.Lock()  # one model call at a time
        self._stop = threading.Event()
        try:
            self._httpd = ThreadingHTTPServer((host, port), _Handler)
        except OSError as e:
            raise ModelError(f"cannot serve model '{self.model_name}' on {host}:{port}: {e.strerror or e}") from None
        self._httpd.app = self  # type: ignore[attr-defined]
        self.host, self.port = host, self._httpd.server_address[1]
        self.url = f"http://{host}:{self.port}/v1"
        self._thread: threading.Thread | None = None

    def start(self) -> LMServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"curate-serve-{self.port}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()  # wakes hanging handlers
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> LMServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- routes ------------------------------------------------------------------------------
    def route(self, method: str, path: str, body: Any) -> dict:
        path = path.split("?")[0].rstrip("/")
        if method == "GET" and path == "/v1/models":
            return {"object": "list", "data": [{"id": self.model_name, "object": "model", "created": int(time.time()),
                                                "owned_by": "curate"}]}
        if method == "POST" and path in ("/v1/completions", "/v1/chat/completions"):
            if not isinstance(body, dict):
                raise _Fail(400, "the request body must be a JSON object")
            model = body.get("model")
            if not model:
                raise _Fail(400, "'model' is required")
            if model != self.model_name:
                raise _Fail(404, f"The model `{model}` does not exist.", "NotFoundError")
            return self.completions(body) if path == "/v1/completions" else self.chat(body)
        raise _Fail(404, f"no route {method} {path}", "NotFoundError")

    def completions(self, body: dict) -> dict:
        prompts = body.get("prompt")
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise _Fail(400, "'prompt' must be a string or a non-empty list of strings (token ids are not supported)")
        echo, logprobs = bool(body.get("echo")), body.get("logprobs")
        if (echo or logprobs is not None) and self.prompt_logprobs == "reject":
            raise _Fail(400, "echo and logprobs are not supported by this server")
        sampling, max_tokens = _sampling(body, default_max_tokens=16)
        outs = self._generate(prompts, sampling, max_tokens)
        choices, used = [], 0
        for i, (prompt, texts) in enumerate(zip(prompts, outs)):
            for j, text in enumerate(texts):
                n_gen = self._count(text)
                used += n_gen
                lp = None
                if logprobs is not None and self.prompt_logprobs == "yes":
                    lp = self._token_logprobs(prompt, text, echo)
                choices.append({"index": i * sampling.n + j, "text": (prompt if echo else "") + text, "logprobs": lp,
                                "finish_reason": "length" if max_tokens and n_gen >= max_tokens else "stop"})
        n_prompt = sum(self._count(p) for p in prompts)
        return self._envelope("text_completion", choices, n_prompt, used)

    def chat(self, body: dict) -> dict:
        messages = body.get("messages")
        ok = isinstance(messages, list) and messages and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages)
        if not ok:
            raise _Fail(400, "'messages' must be a non-empty list of {role, content} objects with string values")
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
        sampling, max_tokens = _sampling(body, default_max_tokens=512)
        texts = self._generate([messages], sampling, max_tokens)[0]
        choices = [{"index": j, "message": {"role": "assistant", "content": t}, "logprobs": None,
                    "finish_reason": "length" if self._count(t) >= max_tokens else "stop"} for j, t in enumerate(texts)]
        return self._envelope("chat.completion", choices, 0, sum(self._count(t) for t in texts))

    # -- model calls -------------------------------------------------------------------------
    def _generate(self, prompts: list, sampling: Sampling, max_tokens: int) -> list[list[str]]:
        if max_tokens == 0:  # echo-only scoring requests
            return [[""] * sampling.n for _ in prompts]
        with self._model:
            return self.lm.generate(prompts, sampling)

    def _tokens(self, text: str) -> tuple[list[str], list[int]]:
        tok = getattr(self.lm, "tokenizer", None)
        if tok is None:
            raise _Fail(400, f"model '{self.model_name}' has no tokenizer here, so logprobs are not available")
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        spans = enc["offset_mapping"]
        return [text[a:b] for a, b in spans], [a for a, _ in spans]

    def _token_logprobs(self, prompt: str, completion: str, echo: bool) -> dict:
        """The legacy ``logprobs`` object: the prompt's tokens scored as a text on its own
        (after the start token the model scores from), then the completion's tokens scored
        given the prompt; offsets into the returned text."""
        tokens: list[str] = []
        values: list[float | None] = []
        offsets: list[int] = []
        with self._model:
            if echo and prompt:
                toks, offs = self._tokens(prompt)
                tok = self.lm.tokenizer  # type: ignore[attr-defined]
                start = tok.bos_token or tok.eos_token
                lps = [float(x) for x in self.lm.logprobs([("", prompt)])[0]]
                if start:
                    tokens, values, offsets = [start], [None], [0]
                elif lps:
                    lps[0] = None  # type: ignore[call-overload]
                tokens, values, offsets = tokens + toks, values + lps, offsets + offs
            if completion:
                toks, offs = self._tokens(completion)
                base = len(prompt) if echo else 0
                tokens += toks
                values += [float(x) for x in self.lm.logprobs([(prompt, completion)])[0]]
                offsets += [base + o for o in offs]
        top = [None if v is None else {t: v} for t, v in zip(tokens, values)]
        return {"tokens": tokens, "token_logprobs": values, "text_offset": offsets, "top_logprobs": top}

    def _count(self, text: str) -> int:
        tok = getattr(self.lm, "tokenizer", None)
        return len(tok(text, add_special_tokens=False).input_ids) if tok is not None and text else 0

    def _envelope(self, kind: str, choices: list, prompt_tokens: int, completion_tokens: int) -> dict:
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()), "model": self.model_name,
                "choices": choices, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                              "total_tokens": prompt_tokens + completion_tokens}}

    # -- bookkeeping -------------------------------------------------------------------------
    def _arrive(self, seen: Seen) -> Fault | None:
        with self._state:
            self.seen.append(seen)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            seen.fault = self.faults.popleft() if self.faults else None
            return seen.fault

    def _leave(self) -> None:
        with self._state:
            self._in_flight -= 1


def _sampling(body: dict, default_max_tokens: int) -> tuple[Sampling, int]:
    def get(key: str, default: Any) -> Any:
        return default if body.get(key) is None else body[key]

    try:
        max_tokens = int(get("max_tokens", default_max_tokens))
        if max_tokens < 0:
            raise ValueError(f"max_tokens must be at least 0, got {max_tokens}")
        stop = get("stop", ())
        s = Sampling(n=int(get("n", 1)), temperature=float(get("temperature", 1.0)), top_p=float(get("top_p", 1.0)),
                     max_tokens=max(1, max_tokens), seed=int(get("seed", 0)),
                     stop=(stop,) if isinstance(stop, str) else tuple(stop))
    except (TypeError, ValueError) as e:
        raise _Fail(400, f"invalid sampling parameters: {e}") from None
    return s, max_tokens


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the openai client reuses connections
    server_version = "curate-serve"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests and the CLI report instead
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        app: LMServer = self.server.app  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
            bad_json = None
        except ValueError as e:
            body, bad_json = raw.decode("utf-8", "replace"), e
        seen = Seen(method, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        fault = app._arrive(seen)
        try:
            if fault == "hang":
                app._stop.wait(app.hang_s)
                self.close_connection = True
                return
            if fault == "drop":
                self.close_connection = True
                return
            if isinstance(fault, float):
                app._stop.wait(fault)
            elif isinstance(fault, (int, tuple)):
                status, message = fault if isinstance(fault, tuple) else (fault, f"injected fault: HTTP {fault}")
                raise _Fail(status, message, "server_error" if status >= 500 else "invalid_request_error")
            if app.api_key is not None and self.headers.get("Authorization") != f"Bearer {app.api_key}":
                raise _Fail(401, "missing or wrong API key", "authentication_error")
            if bad_json is not None:
                raise _Fail(400, f"the request body is not valid JSON: {bad_json}")
            self._reply(200, app.route(method, self.path, body), seen)
        except _Fail as f:
            self._reply(f.status, {"error": {"message": f.message, "type": f.kind, "code": f.status}}, seen)
        except Exception as e:  # noqa: BLE001 - a model failure is the client's 500, not a dead server
            self._reply(500, {"error": {"message": f"{type(e).__name__}: {e}", "type": "server_error", "code": 500}}, seen)
        finally:
            app._leave()

    def _reply(self, status: int, payload: dict, seen: Seen) -> None:
        data = json.dumps(payload).encode()
        seen.status = status
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (timed out) before the answer
            self.close_connection = True


def serve(lm: LM, host: str = "127.0.0.1", port: int = 0, model_name: str | None = None, **options: Any) -> LMServer:
    """Start serving ``lm`` in a daemon thread (``port=0``: a free port); ``.url``, ``.close()``.
    ``options``: ``faults``, ``hang_s``, ``api_key``, ``prompt_logprobs`` (see ``LMServer``)."""
    return LMServer(lm, host, port, model_name, **options).start()


def serve_forever(lm: LM, host: str = "127.0.0.1", port: int = 8000, model_name: str | None = None,
                  api_key: str | None = None, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve ``lm`` until interrupted (Ctrl-C); ``on_ready(url)`` is called once it listens."""
    server = LMServer(lm, host, port, model_name, api_key=api_key)
    if on_ready is not None:
        on_ready(server.url)
    try:
        server._httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()

"""`bonesoup serve`: the real HTTP server on loopback, with a tiny Llama and two LoRA backbones.

Greedy responses are compared with models merged offline (`merge_lora_into_base`) with the same
coefficients, loaded from disk and run through `generate`. Full-weight backbones, and the cache of
their soups, are compared with `merge_checkpoints` the same way.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml
from conftest import build_tiny_llama, make_lora_adapter, perturb_model, save_checkpoint

from bonesoup.cli import main as cli_main
from bonesoup.coefficients import soup_coefficients
from bonesoup.lora import merge_lora_into_base
from bonesoup.merge import merge_checkpoints
from bonesoup.models import load_causal_lm, load_tokenizer
from bonesoup.serve import Limits, SoupEngine, create_server
from bonesoup.serve.protocol import ApiError, ParsedRequest, SamplingParams

BACKBONE_MATRIX = [[0.7, 0.3], [0.3, 0.7]]
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
MAX_TOKENS = 12


def build_run_dir(root: Path, base_dir: Path) -> Path:
    """Write config.yaml and two finished LoRA backbones bone-soup-0 and bone-soup-1."""
    root.mkdir(parents=True)
    config = {"model": {"name_or_path": str(base_dir)}, "training": {"seeds": [0]}}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    backbones = root / "seed-0" / "backbones"
    for j, weights in enumerate(BACKBONE_MATRIX):
        folder = backbones / f"bone-soup-{j}"
        make_lora_adapter(
            base_dir,
            folder,
            seed=40 + j,
            rank=4,
            alpha=8,
            target_modules=("q_proj", "v_proj", "o_proj", "up_proj", "down_proj"),
        )
        record = {
            "name": folder.name,
            "method": "bone-soup",
            "weights": weights,
            "seed": 0,
            "status": "done",
            "format": "lora",
        }
        (folder / "backbone.json").write_text(json.dumps(record))
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_base_dir) -> Path:
    return build_run_dir(tmp_path_factory.mktemp("serve") / "run", tiny_base_dir)


@pytest.fixture(scope="module")
def server(run_dir):
    limits = Limits(max_tokens=64, default_max_tokens=8, max_prompt_tokens=80)
    engine = SoupEngine(run_dir, limits=limits, batch_window=0.05).load()
    httpd = create_server(engine, "127.0.0.1", 0, max_concurrency=6, max_body_bytes=4096)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    engine.stop()
    thread.join(5)


def request(server, method: str, path: str, body=None, raw: bytes | None = None):
    """Send one request on a new connection; return (status, headers, parsed JSON or text)."""
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=60)
    data = raw
    if data is None and body is not None:
        data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    connection.request(method, path, body=data, headers=headers)
    response = connection.getresponse()
    text = response.read().decode()
    connection.close()
    is_json = response.getheader("Content-Type") == "application/json"
    return response.status, response, json.loads(text) if is_json else text


def chat(server, preference, **extra):
    body = {
        "messages": CHAT,
        "preference": preference,
        "temperature": 0,
        "max_tokens": MAX_TOKENS,
        **extra,
    }
    return request(server, "POST", "/v1/chat/completions", body)


def stream_chunks(text: str) -> list:
    events = [line[len("data: ") :] for line in text.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(event) for event in events[:-1]]


# Offline reference ---------------------------------------------------------------------------
_OFFLINE: dict[tuple, str] = {}


def offline_text(
    run_dir: Path, base_dir: Path, tmp_path: Path, preference, prompt_ids, extrapolation=None
) -> str:
    """Merge the backbones with bone-soup coefficients, reload and decode greedily."""
    key = (tuple(preference), tuple(prompt_ids), extrapolation and tuple(extrapolation))
    if key in _OFFLINE:
        return _OFFLINE[key]
    soup = soup_coefficients(preference, matrix=BACKBONE_MATRIX, extrapolation=extrapolation)
    coefficients = soup.backbones.tolist()
    adapters = [run_dir / "seed-0" / "backbones" / f"bone-soup-{j}" for j in range(2)]
    output = tmp_path / f"merged-{len(_OFFLINE)}"
    merge_lora_into_base(base_dir, adapters, coefficients, output)
    model = load_causal_lm(str(output))
    tokenizer = load_tokenizer(str(base_dir))
    with torch.inference_mode():
        generated = model.generate(
            torch.tensor([prompt_ids]),
            attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            do_sample=False,
            max_new_tokens=MAX_TOKENS,
            pad_token_id=tokenizer.pad_token_id,
        )
    text = tokenizer.decode(generated[0, len(prompt_ids) :], skip_special_tokens=True)
    _OFFLINE[key] = text
    return text


def chat_prompt_ids(base_dir: Path) -> list[int]:
    tokenizer = load_tokenizer(str(base_dir))
    text = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# Tests ---------------------------------------------------------------------------------------
def test_health_and_models(server):
    status, _, body = request(server, "GET", "/health")
    assert status == 200
    assert body["status"] == "ok"
    assert body["methods"] == ["bone-soup", "aba"]
    status, _, body = request(server, "GET", "/v1/models")
    assert status == 200
    assert [model["id"] for model in body["data"]] == ["bonesoup-run"]
    status, _, body = request(server, "GET", "/v1/nothing")
    assert status == 404
    assert body["error"]["code"] == "not_found"


def test_get_on_post_route_is_405(server):
    status, response, body = request(server, "GET", "/v1/completions")
    assert status == 405
    assert response.getheader("Allow") == "POST"
    assert body["error"]["code"] == "method_not_allowed"


def test_greedy_chat_matches_offline_merge(server, run_dir, tiny_base_dir, tmp_path):
    preference = [1.0, 0.0]  # bone-soup coefficients (1.75, -0.75): extrapolates past a backbone
    status, response, body = chat(server, preference)
    assert status == 200, body
    assert response.getheader("X-Request-Id").startswith("req-")
    prompt_ids = chat_prompt_ids(tiny_base_dir)
    expected = offline_text(run_dir, tiny_base_dir, tmp_path, preference, prompt_ids)
    assert body["choices"][0]["message"]["content"] == expected
    assert body["object"] == "chat.completion"
    assert body["soup"]["coefficients"] == pytest.approx([1.75, -0.75])
    usage = body["usage"]
    assert usage["prompt_tokens"] == len(prompt_ids)
    assert 1 <= usage["completion_tokens"] <= MAX_TOKENS
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_completion_matches_offline_merge(server, run_dir, tiny_base_dir, tmp_path):
    preference = [0.5, 0.5]
    prompt = "The quick brown fox"
    body = {"prompt": prompt, "preference": preference, "temperature": 0, "max_tokens": MAX_TOKENS}
    status, _, reply = request(server, "POST", "/v1/completions", body)
    assert status == 200, reply
    prompt_ids = load_tokenizer(str(tiny_base_dir))(prompt)["input_ids"]
    expected = offline_text(run_dir, tiny_base_dir, tmp_path, preference, prompt_ids)
    assert reply["choices"][0]["text"] == expected
    assert reply["object"] == "text_completion"


def test_concurrent_preferences_get_own_soups(server, run_dir, tiny_base_dir, tmp_path):
    preferences = [[1.0, 0.0], [0.0, 1.0], [0.3, 0.7], [1.0, 0.0], [0.0, 1.0]]
    with ThreadPoolExecutor(len(preferences)) as pool:
        results = list(pool.map(lambda mu: chat(server, mu), preferences))
    prompt_ids = chat_prompt_ids(tiny_base_dir)
    texts = []
    for preference, (status, _, body) in zip(preferences, results, strict=True):
        assert status == 200, body
        text = body["choices"][0]["message"]["content"]
        assert text == offline_text(run_dir, tiny_base_dir, tmp_path, preference, prompt_ids)
        texts.append(text)
    # The preference must matter, or the comparison above could not tell soups apart.
    assert texts[0] != texts[1]


def test_stream_matches_non_stream(server):
    preference = [0.2, 0.8]
    _, _, whole = chat(server, preference)
    status, response, text = chat(
        server, preference, stream=True, stream_options={"include_usage": True}
    )
    assert status == 200
    assert response.getheader("Content-Type") == "text/event-stream"
    chunks = stream_chunks(text)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert content == whole["choices"][0]["message"]["content"]
    finals = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finals[-1] == whole["choices"][0]["finish_reason"]
    assert all(reason is None for reason in finals[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == whole["usage"]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


def test_completion_stream_text(server):
    body = {"prompt": "Paris is", "preference": [0.6, 0.4], "temperature": 0, "max_tokens": 10}
    _, _, whole = request(server, "POST", "/v1/completions", body)
    status, _, text = request(server, "POST", "/v1/completions", {**body, "stream": True})
    assert status == 200
    chunks = stream_chunks(text)
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole["choices"][0]["text"]


def test_stop_string_cuts_text(server):
    _, _, whole = chat(server, [1.0, 0.0])
    text = whole["choices"][0]["message"]["content"]
    assert len(text) >= 3, "the greedy reply is too short to pick a stop string from"
    stop = text[2:4] if len(text) >= 4 else text[2:3]
    _, _, cut = chat(server, [1.0, 0.0], stop=[stop])
    assert cut["choices"][0]["message"]["content"] == text[: text.find(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"


def test_max_tokens_gives_length(server):
    status, _, body = chat(server, [0.5, 0.5], max_tokens=1)
    assert status == 200
    if body["choices"][0]["finish_reason"] == "length":
        assert body["usage"]["completion_tokens"] == 1


def test_seeded_sampling_repeats(server):
    extra = {"temperature": 1.0, "top_p": 0.9, "seed": 7}
    first = chat(server, [0.4, 0.6], **extra)[2]["choices"][0]["message"]["content"]
    second = chat(server, [0.4, 0.6], **extra)[2]["choices"][0]["message"]["content"]
    assert first == second


INVALID = [
    ({"preference": [0.5, 0.6]}, "preference", "sum"),
    ({"preference": [1.0]}, "preference", "2 objectives"),
    ({"preference": [0.2, 0.3, 0.5]}, "preference", "2 objectives"),
    ({"preference": [1.2, -0.2]}, "preference", "non-negative"),
    ({"preference": None}, "preference", "missing"),
    ({"preference": ["a", "b"]}, "preference", "list of 2 numbers"),
    ({"method": "bone_soup"}, "method", "did you mean 'bone-soup'"),
    ({"method": "rewarded-soup"}, "method", "not served"),
    ({"max_tokens": 0}, "max_tokens", "out of range"),
    ({"max_tokens": 65}, "max_tokens", "out of range"),
    ({"max_tokens": "5"}, "max_tokens", "integer"),
    ({"temperature": -0.1}, "temperature", "out of range"),
    ({"temperature": 2.5}, "temperature", "out of range"),
    ({"top_p": 0}, "top_p", "out of range"),
    ({"top_p": 1.5}, "top_p", "out of range"),
    ({"n": 2}, "n", "one choice"),
    ({"seed": -1}, "seed", "out of range"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ({"stop": [""]}, "stop", "1 to"),
    ({"stream": "yes"}, "stream", "true or false"),
    ({"messages": []}, "messages", "non-empty"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "invalid"),
    ({"messages": [{"role": "user", "content": "word " * 60}]}, "messages", "at most 80"),
    ({"preferences": [0.5, 0.5]}, "preferences", "did you mean 'preference'"),
    ({"logit_bias": {"5": 1}}, "logit_bias", "not supported"),
]


@pytest.mark.parametrize(
    ("change", "param", "fragment"), INVALID, ids=[case[1] + "-" + case[2] for case in INVALID]
)
def test_invalid_chat_request(server, change, param, fragment):
    body = {"messages": CHAT, "preference": [0.5, 0.5], "max_tokens": 4, **change}
    body = {key: value for key, value in body.items() if value is not None}
    status, _, reply = request(server, "POST", "/v1/chat/completions", body)
    assert status == 400, reply
    error = reply["error"]
    assert error["param"] == param
    assert fragment in error["message"]
    assert error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "param", "code"}


def test_completion_prompt_must_be_one_string(server):
    body = {"prompt": ["one", "two"], "preference": [0.5, 0.5]}
    status, _, reply = request(server, "POST", "/v1/completions", body)
    assert status == 400
    assert reply["error"]["param"] == "prompt"


def test_prompt_plus_max_tokens_beyond_context(server, tiny_base_dir):
    tokenizer = load_tokenizer(str(tiny_base_dir))
    words = 1
    while len(tokenizer("word " * words)["input_ids"]) < 70:  # under the 80-token prompt limit
        words += 1
    body = {"prompt": "word " * words, "preference": [0.5, 0.5], "max_tokens": 64}
    status, _, reply = request(server, "POST", "/v1/completions", body)
    assert status == 400
    assert reply["error"]["code"] == "context_length_exceeded"
    assert "context length of 128" in reply["error"]["message"]


def test_model_field_never_a_path(server):
    for model in ("../../etc/passwd", "/tmp", "embedded"):
        status, _, reply = chat(server, [0.5, 0.5], model=model)
        assert status == 404
        assert reply["error"]["param"] == "model"
        assert reply["error"]["code"] == "model_not_found"
    status, _, _ = chat(server, [0.5, 0.5], model="bonesoup-run", max_tokens=2)
    assert status == 200


def test_invalid_json_and_body_size(server):
    status, _, reply = request(server, "POST", "/v1/chat/completions", raw=b"{not json")
    assert status == 400
    assert "not valid JSON" in reply["error"]["message"]
    status, _, reply = request(server, "POST", "/v1/chat/completions", raw=b"[1, 2]")
    assert status == 400
    huge = json.dumps({"messages": CHAT, "preference": [0.5, 0.5], "pad": "x" * 10_000})
    status, _, reply = request(server, "POST", "/v1/chat/completions", raw=huge.encode())
    assert status == 413
    assert reply["error"]["code"] == "request_too_large"


def test_concurrency_limit_gives_503(server):
    acquired = 0
    while server.slots.acquire(blocking=False):  # occupy every admission slot
        acquired += 1
    try:
        status, response, reply = chat(server, [0.5, 0.5], max_tokens=2)
    finally:
        for _ in range(acquired):
            server.slots.release()
    assert acquired == 6
    assert status == 503
    assert reply["error"]["code"] == "server_overloaded"
    assert response.getheader("Retry-After") == "1"


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the server"
        time.sleep(0.01)


def engine_text(engine: SoupEngine, request: ParsedRequest, prompt_ids: list[int]):
    """Submit a parsed request straight to the engine; return (text, soup report)."""
    job = engine.submit("req-direct", request, prompt_ids)
    text = ""
    while True:
        event = job.events.get(timeout=60)
        assert event.kind != "error", event.error.message
        if event.kind == "done":
            return text, job.soup
        text += event.text


def test_extrapolation_matches_offline_merge(server, run_dir, tiny_base_dir, tmp_path):
    preference, factors = [0.5, 0.5], [2.0, 1.0]
    prompt = "The quick brown fox"
    prompt_ids = load_tokenizer(str(tiny_base_dir))(prompt)["input_ids"]
    request = ParsedRequest(
        "completion", tuple(preference), "bone-soup", SamplingParams(MAX_TOKENS, 0.0)
    )
    request.prompt = prompt
    request.extrapolation = factors
    text, soup = engine_text(server.engine, request, prompt_ids)
    # c_j = sum_i mu_i k_i (B^{-T})_{j,i} with B^{-T} = [[1.75, -0.75], [-0.75, 1.75]];
    # b = sum_i mu_i (1 - k_i).
    assert soup["coefficients"] == pytest.approx([1.375, 0.125])
    assert soup["base"] == pytest.approx(-0.5)
    assert soup["extrapolation"] == factors
    expected = offline_text(run_dir, tiny_base_dir, tmp_path, preference, prompt_ids, factors)
    assert text == expected
    plain = offline_text(run_dir, tiny_base_dir, tmp_path, preference, prompt_ids)
    assert text != plain  # the factors changed the soup's text
    request.extrapolation = [0.5, 1.0]
    with pytest.raises(ApiError) as error:
        server.engine.submit("req-bad", request, prompt_ids)
    assert error.value.param == "extrapolation"
    assert ">= 1" in error.value.message


@pytest.fixture(scope="module")
def server_one_soup(run_dir):
    """A server that batches only requests with the same coefficients (--one-soup-per-batch)."""
    engine = SoupEngine(run_dir, batch_window=0.05, per_row_soups=False).load()
    httpd = create_server(engine, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    engine.stop()
    thread.join(5)


@pytest.mark.parametrize(("mode", "batches", "largest"), [("per-row", 1, 4), ("one-soup", 2, 2)])
def test_queued_requests_share_batches(
    mode, batches, largest, request_fixture, run_dir, tiny_base_dir, tmp_path
):
    httpd = request_fixture("server" if mode == "per-row" else "server_one_soup")
    engine = httpd.engine
    preferences = [[0.3, 0.7], [1.0, 0.0], [0.3, 0.7], [1.0, 0.0]]
    prompts = ["Paris is", "The quick brown fox jumps over", "A short answer", "Paris is"]
    with ThreadPoolExecutor(5) as pool:
        with engine._soup_lock:  # hold the model so the requests below queue up together
            blocker = pool.submit(chat, httpd, [0.5, 0.5], max_tokens=2)
            wait_for(lambda: engine.running)  # the scheduler took the blocker and waits
            before = dict(engine.stats)
            futures = [
                pool.submit(
                    request,
                    httpd,
                    "POST",
                    "/v1/completions",
                    {
                        "prompt": prompt,
                        "preference": preference,
                        "temperature": 0,
                        "max_tokens": MAX_TOKENS,
                    },
                )
                for prompt, preference in zip(prompts, preferences, strict=True)
            ]
            wait_for(lambda: engine.queued == len(prompts))
        results = [future.result() for future in futures]
        assert blocker.result()[0] == 200
    # Responses can arrive before the engine counts the batch that produced them.
    wait_for(lambda: engine.stats["batches"] - before["batches"] >= 1 + batches)
    time.sleep(0.05)
    after = engine.stats
    assert after["batches"] - before["batches"] == 1 + batches
    assert after["largest_batch"] >= largest
    tokenizer = load_tokenizer(str(tiny_base_dir))
    for prompt, preference, (status, _, body) in zip(prompts, preferences, results, strict=True):
        assert status == 200, body
        # Each left-padded row must decode as its prompt alone in a model merged offline.
        expected = offline_text(
            run_dir, tiny_base_dir, tmp_path, preference, tokenizer(prompt)["input_ids"]
        )
        assert body["choices"][0]["text"] == expected


@pytest.fixture()
def request_fixture(request):
    return request.getfixturevalue


def build_full_run(root: Path, base_dir: Path, tokenizer) -> list[Path]:
    """Write config.yaml and two full-weight backbones rewarded-soup-0/1; return their folders."""
    backbones = root / "seed-3" / "backbones"
    root.mkdir()
    (root / "config.yaml").write_text(
        yaml.safe_dump({"model": {"name_or_path": str(base_dir)}, "training": {"seeds": [3]}})
    )
    dirs = []
    for j in range(2):
        folder = backbones / f"rewarded-soup-{j}"
        model = perturb_model(build_tiny_llama(seed=0), seed=300 + j, scale=0.05)
        save_checkpoint(model, tokenizer, folder)
        (folder / "backbone.json").write_text(
            json.dumps(
                {
                    "name": folder.name,
                    "method": "rewarded-soup",
                    "weights": [float(j == 0), float(j == 1)],
                    "seed": 3,
                    "status": "done",
                    "format": "full",
                }
            )
        )
        dirs.append(folder)
    return dirs


def offline_full_text(dirs, base_dir: Path, output: Path, coefficients, prompt, tokenizer) -> str:
    """Merge full checkpoints as theta_0 + sum_j c_j tau_j, reload and decode greedily."""
    merged = merge_checkpoints(dirs, coefficients, output, base=base_dir)
    model = load_causal_lm(str(merged))
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=MAX_TOKENS,
            pad_token_id=tokenizer.pad_token_id,
        )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_full_weight_backbones(tmp_path, tiny_base_dir, tiny_tokenizer):
    root = tmp_path / "full-run"
    dirs = build_full_run(root, tiny_base_dir, tiny_tokenizer)
    engine = SoupEngine(root, batch_window=0.0).load()
    httpd = create_server(engine, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        assert engine.methods == ("rewarded-soup",)
        prompt = "The quick brown fox"
        body = {
            "prompt": prompt,
            "preference": [0.25, 0.75],
            "method": "rewarded-soup",
            "temperature": 0,
            "max_tokens": MAX_TOKENS,
        }
        status, _, reply = request(httpd, "POST", "/v1/completions", body)
        status_default, _, default = request(
            httpd, "POST", "/v1/completions", {**body, "method": None}
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
        engine.stop()
    assert status == 200, reply
    assert status_default == 400  # bone-soup is the default method, and it has no backbones here
    assert default["error"]["param"] == "method"
    expected = offline_full_text(
        dirs, tiny_base_dir, tmp_path / "merged", [0.25, 0.75], prompt, tiny_tokenizer
    )
    assert reply["choices"][0]["text"] == expected


FULL_PROMPT = "Paris is"
FULL_PREFERENCES = {"A": [0.25, 0.75], "B": [0.9, 0.1]}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_base_dir, tiny_tokenizer):
    """A full-weight run and the offline-merged greedy texts of preferences A and B."""
    root = tmp_path_factory.mktemp("full-cache") / "run"
    dirs = build_full_run(root, tiny_base_dir, tiny_tokenizer)
    texts = {
        name: offline_full_text(
            dirs, tiny_base_dir, root.parent / f"merged-{name}", mu, FULL_PROMPT, tiny_tokenizer
        )
        for name, mu in FULL_PREFERENCES.items()
    }
    return root, texts


@pytest.mark.parametrize(
    ("size", "hits", "misses", "entries"), [(2, 1, 2, 2), (1, 0, 3, 1), (0, 0, 3, 0)]
)
def test_full_weight_soup_cache(full_run, size, hits, misses, entries):
    root, expected = full_run
    assert expected["A"] != expected["B"]  # so a stale soup would change the text
    engine = SoupEngine(root, batch_window=0.0, soup_cache=size).load()
    httpd = create_server(engine, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        texts = []
        # With 2 entries the second A is a hit. With 1 entry, B evicted A, so A is computed again.
        for name in ("A", "B", "A"):
            body = {
                "prompt": FULL_PROMPT,
                "preference": FULL_PREFERENCES[name],
                "method": "rewarded-soup",
                "temperature": 0,
                "max_tokens": MAX_TOKENS,
            }
            status, _, reply = request(httpd, "POST", "/v1/completions", body)
            assert status == 200, reply
            texts.append(reply["choices"][0]["text"])
        _, _, health = request(httpd, "GET", "/health")
    finally:
        httpd.shutdown()
        httpd.server_close()
        engine.stop()
    assert texts == [expected["A"], expected["B"], expected["A"]]
    assert health["switches"] == 3
    assert health["soup_cache_size"] == size
    assert health["soup_cache_hits"] == hits
    assert health["soup_cache_misses"] == misses
    assert health["soup_cache_entries"] == entries
    # The model now contains soup A, whether it came from the cache or was recomputed.
    merged = load_causal_lm(str(root.parent / "merged-A"))
    served = dict(engine.soup.model.named_parameters())
    for name, parameter in merged.named_parameters():
        torch.testing.assert_close(served[name], parameter, rtol=1e-5, atol=1e-6)


def test_cli_serves_and_stops(run_dir):
    command = [
        sys.executable,
        "-m",
        "bonesoup.cli",
        "serve",
        str(run_dir),
        "--port",
        "0",
        "--max-tokens-limit",
        "16",
        "--default-max-tokens",
        "4",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        url = None
        for line in process.stderr:
            lines.append(line)
            match = re.search(r"serving \S+ at (http://127\.0\.0\.1:\d+)", line)
            if match:
                url = match.group(1)
                break
        assert url, "".join(lines)
        with urllib.request.urlopen(url + "/health", timeout=30) as response:
            assert json.loads(response.read())["status"] == "ok"
    finally:
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "stopped serving" in rest


def test_cli_rejects_negative_soup_cache(run_dir, capsys):
    status = cli_main(["serve", str(run_dir), "--soup-cache", "-1"])
    captured = capsys.readouterr()
    assert status == 2
    assert "--soup-cache = -1" in captured.err
    assert captured.out == ""


def test_cli_rejects_missing_run_dir(tmp_path, capsys):
    status = cli_main(["serve", str(tmp_path / "missing")])
    captured = capsys.readouterr()
    assert status == 2
    assert "config file not found" in captured.err
    assert captured.out == ""


def test_extrapolation_over_http(server, run_dir, tiny_base_dir, tmp_path):
    preference, factors = [0.5, 0.5], [2.0, 1.0]
    prompt = "The quick brown fox"
    body = {
        "prompt": prompt,
        "preference": preference,
        "extrapolation": factors,
        "temperature": 0,
        "max_tokens": MAX_TOKENS,
    }
    status, _, reply = request(server, "POST", "/v1/completions", body)
    assert status == 200, reply
    assert reply["soup"]["coefficients"] == pytest.approx([1.375, 0.125])
    assert reply["soup"]["base"] == pytest.approx(-0.5)
    prompt_ids = load_tokenizer(str(tiny_base_dir))(prompt)["input_ids"]
    expected = offline_text(run_dir, tiny_base_dir, tmp_path, preference, prompt_ids, factors)
    assert reply["choices"][0]["text"] == expected
    for bad in ([0.5, 1.0], [2.0], "2,1", [True, 1.0]):
        status, _, reply = request(
            server, "POST", "/v1/completions", {**body, "extrapolation": bad}
        )
        assert status == 400, reply
        assert reply["error"]["param"] == "extrapolation"

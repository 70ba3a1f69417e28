"""Prompt loaders on the packaged sets and on local files in the hh-rlhf and TL;DR formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bonesoup.errors import BonesoupError
from bonesoup.prompts import (
    PromptExample,
    format_prompt,
    hash_split,
    load_prompts,
    split_hh_dialogue,
    text_hash,
)

FIXTURES = Path(__file__).parent / "fixtures"


def test_chitchat_splits_disjoint_and_stable():
    splits = {split: load_prompts("chitchat", split) for split in ("train", "validation", "test")}
    sizes = {split: len(examples) for split, examples in splits.items()}
    total = sum(sizes.values())
    assert total > 15_000
    assert 0.75 < sizes["train"] / total < 0.85
    prompts = {split: {e.prompt.lower() for e in examples} for split, examples in splits.items()}
    assert not prompts["train"] & prompts["test"]
    assert not prompts["train"] & prompts["validation"]
    assert load_prompts("chitchat", "test", limit=5) == splits["test"][:5]


def test_chitchat_questions_respect_word_limits():
    examples = load_prompts("chitchat", "validation", min_words=8, max_words=12)
    assert examples
    for example in examples:
        assert example.prompt.endswith("?")
        assert 8 <= len(example.prompt.split()) <= 12
        assert example.reference is None
        assert example.id.startswith("chitchat-")
    assert len({e.prompt.lower() for e in examples}) == len(examples)


def test_hash_split_is_fixed():
    digest = text_hash("How are you doing today?")
    assert digest == text_hash("  how are YOU doing   today? ")
    assert hash_split("0" * 40) == "train"
    assert hash_split("0" * 32 + "00000008") == "validation"
    assert hash_split("0" * 32 + "00000009") == "test"


def test_news_articles_are_references():
    train = load_prompts("news", "train")
    validation = load_prompts("news", "validation")
    test = load_prompts("news", "test")
    assert (len(train), len(validation), len(test)) == (300, 25, 25)
    example = test[0]
    assert example.reference
    assert example.reference in example.prompt
    assert example.prompt.startswith("Summarize")
    assert example.id == "lee-25"


def test_hh_rlhf_local_directory():
    train = load_prompts("hh-rlhf", "train", path=str(FIXTURES / "hh-rlhf"))
    assert len(train) == 5
    first = train[0]
    assert first.prompt == "\n\nHuman: How do I boil an egg?\n\nAssistant:"
    assert first.reference == "Put it in boiling water for about nine minutes."
    # Multi-turn dialogues are cut at the last assistant turn only.
    assert train[1].prompt.count("\n\nAssistant:") == 2
    assert train[1].prompt.endswith("\n\nHuman: What is the capital of Japan?\n\nAssistant:")


def test_hh_rlhf_test_keeps_every_fourth():
    test = load_prompts("hh-rlhf", "test", path=str(FIXTURES / "hh-rlhf"))
    rows = [json.loads(line) for line in (FIXTURES / "hh-rlhf" / "test.jsonl").open()]
    assert len(test) == 3
    for example, row in zip(test, rows[::4]):
        assert row["chosen"].startswith(example.prompt)
    validation = load_prompts("hh-rlhf", "validation", path=str(FIXTURES / "hh-rlhf"))
    assert len(validation) == 6


def test_hh_rlhf_single_file():
    examples = load_prompts("hh-rlhf", "train", path=str(FIXTURES / "hh-rlhf" / "train.jsonl"))
    assert len(examples) == 5


def test_split_hh_dialogue_without_assistant_raises():
    with pytest.raises(BonesoupError, match="no '\\\\n\\\\nAssistant:' turn"):
        split_hh_dialogue("\n\nHuman: hello")


def test_summarize_dedup_and_recipe():
    train = load_prompts("summarize", "train", path=str(FIXTURES / "summarize"))
    assert [e.id for e in train] == ["tldr-t3_aaa", "tldr-t3_bbb"]
    assert train[0].prompt.startswith("SUBREDDIT: r/relationships\nTITLE: My roommate")
    assert train[0].prompt.endswith("\nTL;DR:")
    assert train[0].reference in train[0].prompt
    test = load_prompts("summarize", "test", path=str(FIXTURES / "summarize"))
    assert [e.id for e in test] == ["tldr-t3_ccc", "tldr-t3_bbb"]
    assert load_prompts("summarize", "validation", path=str(FIXTURES / "summarize")) == []


def test_jsonl_source(tmp_path):
    examples = load_prompts("jsonl", path=str(FIXTURES / "prompts.jsonl"))
    assert examples[0] == PromptExample(id="otters", prompt="Tell me about otters.")
    assert examples[1].reference == "The cat sat on the mat all day."
    assert examples[1].id == "prompts-2"
    assert load_prompts(str(FIXTURES / "prompts.jsonl"), limit=1) == examples[:1]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": "no prompt"}', "needs a non-empty string field 'prompt'"),
        ("not json", "is not valid JSON"),
        ('{"prompt": "ok", "reference": 3}', "'reference' must be a string"),
    ],
)
def test_jsonl_bad_rows_raise(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(BonesoupError, match=message):
        load_prompts("jsonl", path=str(path))


@pytest.mark.parametrize(
    ("source", "kwargs", "message"),
    [
        ("chitchatt", {}, "did you mean 'chitchat'"),
        ("chitchat", {"split": "dev"}, "split 'dev' is invalid"),
        ("chitchat", {"limit": -1}, "limit=-1"),
        ("chitchat", {"max_words": 3}, "max_words=3 must be >= min_words=6"),
        ("chitchat", {"colour": "red"}, "invalid option for prompt source"),
        ("jsonl", {}, "needs path="),
        ("hh-rlhf", {"path": str(FIXTURES)}, "no train.jsonl"),
    ],
)
def test_bad_sources_raise(source, kwargs, message):
    with pytest.raises(BonesoupError, match=message):
        load_prompts(source, **kwargs)


def test_hh_rlhf_wrong_format_raises():
    with pytest.raises(BonesoupError, match="no 'chosen' field"):
        load_prompts("hh-rlhf", "train", path=str(FIXTURES / "summarize" / "train.jsonl"))


def test_format_prompt_uses_chat_template(tiny_tokenizer):
    text = format_prompt(tiny_tokenizer, "Hello?", system="Be brief.")
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_format_prompt_without_template():
    class Plain:
        chat_template = None

    assert format_prompt(Plain(), "Hello?") == "Hello?"
    assert format_prompt(Plain(), "Hello?", system="Be brief.") == "Be brief.\n\nHello?"

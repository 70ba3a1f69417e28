"""Reward-model objectives on tiny random sequence classifiers saved to disk."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bonesoup.errors import BonesoupError
from bonesoup.objectives import get_objective
from bonesoup.objectives.reward_models import HH_TEMPLATE, PRESETS, RewardModelObjective

PROMPTS = ["What is the capital of France?", "Tell me a short story."]
RESPONSES = ["Paris is the capital of France.", "A fox jumps over the lazy dog and runs far away."]


def save_tiny_classifier(path, tokenizer, num_labels: int = 1, seed: int = 0):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=256,
        num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(seed)
    model = GPT2ForSequenceClassification(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, tiny_tokenizer):
    return save_tiny_classifier(tmp_path_factory.mktemp("classifier"), tiny_tokenizer)


@pytest.fixture(scope="module")
def two_label_dir(tmp_path_factory, tiny_tokenizer):
    return save_tiny_classifier(tmp_path_factory.mktemp("two_label"), tiny_tokenizer, 2, seed=1)


def test_scores_match_direct_forward(classifier_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    objective = RewardModelObjective(classifier_dir, input_format="pair")
    scores = objective.score(PROMPTS, RESPONSES)
    model = AutoModelForSequenceClassification.from_pretrained(classifier_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(classifier_dir)
    for prompt, response, score in zip(PROMPTS, RESPONSES, scores):
        inputs = tokenizer(prompt, response, return_tensors="pt")
        with torch.no_grad():
            expected = model(**inputs).logits[0, 0].item()
        assert score == pytest.approx(expected, abs=1e-5)


def test_batching_does_not_change_scores(classifier_dir):
    whole = RewardModelObjective(classifier_dir, batch_size=8).score(PROMPTS, RESPONSES)
    single = RewardModelObjective(classifier_dir, batch_size=1).score(PROMPTS, RESPONSES)
    assert whole == pytest.approx(single, abs=1e-5)
    assert whole[0] != whole[1]


def test_input_formats_differ(classifier_dir):
    by_format = {
        fmt: RewardModelObjective(classifier_dir, input_format=fmt).score(
            PROMPTS, RESPONSES, ["The source text.", None]
        )
        for fmt in ("pair", "concat", "response", "summary_post")
    }
    assert by_format["response"] != by_format["pair"]
    assert by_format["summary_post"] != by_format["response"]
    # Without a reference, summary_post pairs the response with the prompt instead.
    summary_prompt = RewardModelObjective(classifier_dir, input_format="summary_post").score(
        PROMPTS[1:], RESPONSES[1:]
    )
    assert summary_prompt[0] == pytest.approx(by_format["summary_post"][1], abs=1e-5)


def test_prompt_template_applied_once(classifier_dir):
    templated = RewardModelObjective(classifier_dir, prompt_template=HH_TEMPLATE)
    plain = RewardModelObjective(classifier_dir)
    wrapped_prompt = HH_TEMPLATE.format(prompt=PROMPTS[0])
    assert templated.score(PROMPTS[:1], RESPONSES[:1]) == pytest.approx(
        plain.score([wrapped_prompt], RESPONSES[:1]), abs=1e-5
    )
    # A prompt already in hh-rlhf form is left alone.
    assert templated.score([wrapped_prompt], RESPONSES[:1]) == pytest.approx(
        plain.score([wrapped_prompt], RESPONSES[:1]), abs=1e-5
    )


def test_empty_response_scores_finite(classifier_dir):
    for fmt in ("pair", "response"):
        objective = RewardModelObjective(classifier_dir, input_format=fmt)
        value = objective.score(["Hi"], [""])[0]
        assert math.isfinite(value)


def test_logit_index_selects_label(two_label_dir):
    first = RewardModelObjective(two_label_dir, logit_index=0).score(PROMPTS, RESPONSES)
    second = RewardModelObjective(two_label_dir, logit_index=1).score(PROMPTS, RESPONSES)
    assert first != second
    with pytest.raises(BonesoupError, match="out of range"):
        RewardModelObjective(two_label_dir, logit_index=2)
    with pytest.raises(BonesoupError, match="has 2 labels; pass logit_index"):
        RewardModelObjective(two_label_dir, logit_index=None)


def test_hf_spec_and_preset_override(classifier_dir):
    by_spec = get_objective(f"hf:{classifier_dir}")
    assert by_spec.name == f"hf:{classifier_dir}"
    preset = get_objective("helpful", model_name_or_path=str(classifier_dir))
    assert preset.name == "helpful"
    assert preset.objective.prompt_template == PRESETS["helpful"]["prompt_template"]
    assert preset.score(PROMPTS, RESPONSES) == pytest.approx(
        RewardModelObjective(classifier_dir, prompt_template=HH_TEMPLATE).score(PROMPTS, RESPONSES),
        abs=1e-5,
    )


def test_causal_lm_is_rejected(tiny_base_dir):
    with pytest.raises(BonesoupError, match="not a sequence classifier"):
        RewardModelObjective(tiny_base_dir)


def test_missing_directory_is_rejected(tmp_path):
    with pytest.raises(BonesoupError, match="cannot load a model config"):
        RewardModelObjective(tmp_path / "nowhere")


def test_pickle_only_checkpoint_is_rejected(tmp_path, classifier_dir):
    # Only the config and tokenizer, no model.safetensors: as a pytorch_model.bin-only repo looks.
    target = tmp_path / "no_weights"
    target.mkdir()
    for item in classifier_dir.iterdir():
        if item.suffix != ".safetensors":
            (target / item.name).write_bytes(item.read_bytes())
    with pytest.raises(BonesoupError, match="safetensors"):
        RewardModelObjective(target)


def test_untrained_head_is_rejected(tmp_path, tiny_tokenizer):
    # A GPT2 base model relabelled as a classifier has no score head weights.
    from transformers import GPT2Config, GPT2Model

    config = GPT2Config(vocab_size=len(tiny_tokenizer), n_embd=32, n_layer=1, n_head=2)
    GPT2Model(config).save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    config_path = tmp_path / "config.json"
    data = json.loads(config_path.read_text())
    data["architectures"] = ["GPT2ForSequenceClassification"]
    data["num_labels"] = 1
    config_path.write_text(json.dumps(data))
    with pytest.raises(BonesoupError, match="classification head was never trained"):
        RewardModelObjective(tmp_path)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"input_format": "chat"}, "input_format='chat' is invalid"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"max_length": 2}, "max_length=2"),
    ],
)
def test_invalid_options_raise(classifier_dir, options, message):
    with pytest.raises(BonesoupError, match=message):
        RewardModelObjective(classifier_dir, **options)


def test_non_string_response_raises(classifier_dir):
    objective = RewardModelObjective(classifier_dir)
    with pytest.raises(BonesoupError, match=r"responses\[1\] is a list"):
        objective.score(PROMPTS, [RESPONSES[0], ["tokens"]])


def test_presets_are_complete():
    assert set(PRESETS) == {"helpful", "harmless", "humor", "summary", "faithful", "deberta"}
    assert PRESETS["faithful"]["input_format"] == "summary_post"
    assert PRESETS["faithful"]["logit_index"] == 1


def test_cli_scores_with_classifier(classifier_dir, capsys):
    from bonesoup.cli import main

    argv = ["score", "--objective", f"hf:{classifier_dir}", "--prompt", PROMPTS[0]]
    assert main([*argv, "--response", RESPONSES[0], "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    expected = RewardModelObjective(classifier_dir).score(PROMPTS[:1], RESPONSES[:1])[0]
    assert result["score"] == pytest.approx(expected, abs=1e-5)


def test_cli_rejects_causal_lm(tiny_base_dir, capsys):
    from bonesoup.cli import main

    argv = ["score", "--objective", f"hf:{tiny_base_dir}", "--response", "hello"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "not a sequence classifier" in captured.err

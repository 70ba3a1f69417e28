"""Measure how the built-in objectives conflict on the embedded starting model's own samples.

Run: python bench/measure_conflict.py [--samples 48] [--max-new-tokens 32] [--seed 0]

Samples one response per chitchat train prompt (6-25 words) from SmolLM2-135M-Instruct (the
fp32 copy made by `bonesoup.models.ensure_embedded_model`), through the chat template, top_p
0.9, temperature 1, batches of 8 with left padding. Prints the mean of every objective and the
Spearman correlation of each with relevance. A negative value means the two pull apart on the
starting model. Alternative length rewards are included to compare the conciseness formula.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from scipy.stats import spearmanr

from bonesoup.models import ensure_embedded_model, load_tokenizer
from bonesoup.objectives import get_objective
from bonesoup.objectives.builtin import count_words
from bonesoup.prompts import format_prompt, load_prompts

OBJECTIVES = ("relevance", "conciseness", "sentiment", "readability", "fluency", "harmlessness")


def sample_responses(prompts: list[str], max_new_tokens: int, seed: int) -> list[str]:
    from transformers import AutoModelForCausalLM

    path = ensure_embedded_model()
    tokenizer = load_tokenizer(str(path))
    tokenizer.padding_side = "left"  # transformers 5.25 drops it on reload
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    torch.manual_seed(seed)
    responses = []
    for start in range(0, len(prompts), 8):
        texts = [format_prompt(tokenizer, prompt) for prompt in prompts[start : start + 8]]
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        with torch.inference_mode():
            output = model.generate(
                **batch,
                do_sample=True,
                top_p=0.9,
                temperature=1.0,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        responses.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    return [text.strip() for text in responses]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=48, help="prompts, one response each")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="tokens per response")
    parser.add_argument("--seed", type=int, default=0, help="torch seed for sampling")
    args = parser.parse_args()
    torch.set_num_threads(1)

    prompts = [e.prompt for e in load_prompts("chitchat", "train", args.samples, max_words=25)]
    responses = sample_responses(prompts, args.max_new_tokens, args.seed)
    scores = {name: get_objective(name).score(prompts, responses) for name in OBJECTIVES}
    words = [count_words(text) for text in responses]
    scores["-words (linear length penalty)"] = [-float(w) for w in words]
    scores["1 - min(chars, 120)/120"] = [1 - min(len(t), 120) / 120 for t in responses]

    print(
        f"{len(responses)} samples, {args.max_new_tokens} new tokens, seed {args.seed}; "
        f"words per response: mean {statistics.fmean(words):.1f}, median "
        f"{statistics.median(words)}, on the conciseness plateau (<= 12 words): "
        f"{sum(w <= 12 for w in words)}"
    )
    print("| objective | mean | std | Spearman with relevance | p-value |")
    print("|---|---|---|---|---|")
    for name, values in scores.items():
        if name == "relevance":
            rho, p_value = 1.0, 0.0
        else:
            result = spearmanr(scores["relevance"], values)
            rho, p_value = result.statistic, result.pvalue
        print(
            f"| {name} | {statistics.fmean(values):.3f} | {statistics.stdev(values):.3f} "
            f"| {rho:+.2f} | {p_value:.3f} |"
        )
    for prompt, response in list(zip(prompts, responses))[:3]:
        print(f"\nprompt: {prompt}\nresponse: {response}")


if __name__ == "__main__":
    main()

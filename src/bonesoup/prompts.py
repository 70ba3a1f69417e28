"""Prompt sets for training and evaluation, and chat formatting of a prompt.

Sources of `load_prompts(source, split, limit, **options)`:

- "chitchat": questions from the chitchat-dataset package (human-human chats). A question is one
  utterance ending in "?" with at least `min_words` (6) and at most `max_words` (None) words,
  de-duplicated case-insensitively. The split comes from the sha1 of the normalised text: its
  last 8 hex digits as an integer, mod 10, give train for 0-7, validation for 8 and test for 9.
- "news": the Lee news corpus shipped in gensim's test data, as summarisation prompts with the
  article as the reference. train = the 300 lee_background.cor articles, validation = the first
  25 of the 50 lee.cor articles, test = the other 25.
- "hh-rlhf": Anthropic/hh-rlhf rows ({"chosen", "rejected"}). The prompt is the chosen dialogue
  up to and including its last "\\n\\nAssistant:" and the reference is the chosen reply after it.
  The test split keeps every 4th example (indices 0, 4, 8, ...). Option `path`: a local .jsonl
  (.gz) file, a directory with <split>.jsonl(.gz), or a hub id (default "Anthropic/hh-rlhf").
- "summarize": openai/summarize_from_feedback "comparisons" rows ({"info": {"post", "title",
  "subreddit", ...}, "summaries", ...}). Prompt = "SUBREDDIT: r/{subreddit}\\nTITLE: {title}\\n
  POST: {post}\\nTL;DR:", reference = the post. Posts are de-duplicated by info.id in file order;
  test = the first 2,000 validation posts, validation = the rest, train = the train posts.
  Option `path` as for hh-rlhf (default hub id "openai/summarize_from_feedback").
- "jsonl": option `path`, a file with one JSON object per line. Each object has a "prompt"
  string and may have "reference" and "id". Every row is returned, whatever the split. A source
  ending in ".jsonl" is read the same way.

Ordering is deterministic: file order, except chitchat, which is sorted by the sha1 of the text.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import inspect
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bonesoup.errors import BonesoupError

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
SOURCES = ("chitchat", "news", "hh-rlhf", "summarize", "jsonl")
ASSISTANT_MARKER = "\n\nAssistant:"
NEWS_TEMPLATE = "Summarize the following news article in one or two sentences.\n\n{article}"
SUMMARIZE_TEMPLATE = "SUBREDDIT: r/{subreddit}\nTITLE: {title}\nPOST: {post}\nTL;DR:"
SUMMARIZE_TEST_SIZE = 2000


@dataclass(frozen=True)
class PromptExample:
    """One prompt with a stable id and an optional reference (source text or gold reply)."""

    id: str
    prompt: str
    reference: str | None = None


def text_hash(text: str) -> str:
    """Return the sha1 hex digest of the whitespace-collapsed, lower-cased text."""
    normalised = " ".join(text.lower().split())
    return hashlib.sha1(normalised.encode("utf-8")).hexdigest()


def hash_split(digest: str) -> str:
    """Map a sha1 hex digest to train (80%), validation (10%) or test (10%)."""
    bucket = int(digest[-8:], 16) % 10
    if bucket < 8:
        return "train"
    return "validation" if bucket == 8 else "test"


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BonesoupError(f"package {package!r} is not installed; pip install it to use it")
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def _chitchat_utterances() -> tuple[str, ...]:
    """Return every utterance of chitchat-dataset in file order (parsed once per process)."""
    data = json.loads((_package_dir("chitchat_dataset") / "dataset.json").read_text())
    return tuple(
        utterance["text"]
        for conversation in data.values()
        for turn in conversation["messages"]
        for utterance in turn
    )


def load_chitchat(
    split: str, min_words: int = 6, max_words: int | None = None
) -> list[PromptExample]:
    """Load chitchat questions of `min_words`..`max_words` words for one hash split."""
    if max_words is not None and max_words < min_words:
        raise BonesoupError(f"max_words={max_words} must be >= min_words={min_words}")
    seen: dict[str, str] = {}
    for text in _chitchat_utterances():
        question = " ".join(text.split())
        words = len(question.split())
        if not question.endswith("?") or words < min_words:
            continue
        if max_words is not None and words > max_words:
            continue
        seen.setdefault(text_hash(question), question)
    chosen = [(digest, q) for digest, q in seen.items() if hash_split(digest) == split]
    chosen.sort()
    return [PromptExample(id=f"chitchat-{digest[:12]}", prompt=q) for digest, q in chosen]


def load_news(split: str, template: str = NEWS_TEMPLATE) -> list[PromptExample]:
    """Load Lee corpus articles as summarisation prompts (article as the reference)."""
    data_dir = _package_dir("gensim") / "test" / "test_data"
    if split == "train":
        name, rows = "lee_background.cor", slice(None)
    else:
        name, rows = "lee.cor", slice(0, 25) if split == "validation" else slice(25, None)
    lines = (data_dir / name).read_text(encoding="utf-8", errors="replace").splitlines()
    articles = [line.strip() for line in lines if line.strip()]
    stem = name.removesuffix(".cor")
    examples = []
    for index, article in list(enumerate(articles))[rows]:
        prompt = template.format(article=article)
        examples.append(PromptExample(id=f"{stem}-{index}", prompt=prompt, reference=article))
    return examples


def _find_split_file(directory: Path, split: str) -> Path:
    names = [split] + (["valid", "val"] if split == "validation" else [])
    for name in names:
        for suffix in (".jsonl", ".jsonl.gz", ".json"):
            candidate = directory / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    raise BonesoupError(
        f"no {split}.jsonl(.gz) in {str(directory)!r}; add that file or pass its path"
    )


def _load_rows(path: str, split: str, config: str | None = None) -> list[dict[str, Any]]:
    """Read rows with `datasets.load_dataset`: local file or directory, or a hub id."""
    import datasets

    local = Path(path).expanduser()
    try:
        if local.is_file():
            dataset = datasets.load_dataset("json", data_files=str(local), split="train")
        elif local.is_dir():
            data_file = _find_split_file(local, split)
            dataset = datasets.load_dataset("json", data_files=str(data_file), split="train")
        else:
            dataset = datasets.load_dataset(path, config, split=split)
    except (FileNotFoundError, ValueError, ConnectionError) as error:
        raise BonesoupError(f"cannot load {split!r} split from {path!r}: {error}") from error
    return list(dataset)


def split_hh_dialogue(chosen: str) -> tuple[str, str]:
    """Split an hh-rlhf dialogue at its last "\\n\\nAssistant:" into (prompt, reply)."""
    cut = chosen.rfind(ASSISTANT_MARKER)
    if cut < 0:
        raise BonesoupError(
            f"dialogue has no {ASSISTANT_MARKER!r} turn: {chosen[:60]!r}...; "
            "expected the Anthropic/hh-rlhf format"
        )
    end = cut + len(ASSISTANT_MARKER)
    return chosen[:end], chosen[end:].strip()


def load_hh_rlhf(split: str, path: str = "Anthropic/hh-rlhf") -> list[PromptExample]:
    """Load hh-rlhf prompts; the test split keeps every 4th example."""
    hub_split = "test" if split in ("test", "validation") else "train"
    rows = _load_rows(path, hub_split)
    if split == "test":
        rows = rows[::4]
    elif split == "validation":
        # NOTE: hh-rlhf has no validation split, so this returns the test rows outside the
        # every-4th test subset.
        rows = [row for index, row in enumerate(rows) if index % 4 != 0]
    examples = []
    for index, row in enumerate(rows):
        if "chosen" not in row:
            raise BonesoupError(f"hh-rlhf row {index} of {path!r} has no 'chosen' field")
        prompt, reply = split_hh_dialogue(row["chosen"])
        examples.append(PromptExample(id=f"hh-{split}-{index}", prompt=prompt, reference=reply))
    return examples


def load_summarize(
    split: str,
    path: str = "openai/summarize_from_feedback",
    template: str = SUMMARIZE_TEMPLATE,
) -> list[PromptExample]:
    """Load de-duplicated Reddit posts from summarize_from_feedback comparisons."""
    hub_split = "train" if split == "train" else "validation"
    rows = _load_rows(path, hub_split, config="comparisons")
    posts: dict[str, dict[str, Any]] = {}
    for index, row in enumerate(rows):
        info = row.get("info") or {}
        if not info.get("post"):
            raise BonesoupError(f"summarize row {index} of {path!r} has no info.post field")
        key = str(info.get("id") or text_hash(info["post"]))
        posts.setdefault(key, info)
    infos = list(posts.items())
    if split == "test":
        infos = infos[:SUMMARIZE_TEST_SIZE]
    elif split == "validation":
        infos = infos[SUMMARIZE_TEST_SIZE:]
    examples = []
    for key, info in infos:
        prompt = template.format(
            subreddit=info.get("subreddit") or "", title=info.get("title") or "", post=info["post"]
        )
        examples.append(PromptExample(id=f"tldr-{key}", prompt=prompt, reference=info["post"]))
    return examples


def load_jsonl(path: str | Path) -> list[PromptExample]:
    """Load a user file: one JSON object per line with "prompt" and optional "reference", "id"."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BonesoupError(f"prompt file {str(path)!r} not found")
    examples = []
    with path.open(encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise BonesoupError(f"{path}:{number} is not valid JSON: {error}") from error
            prompt = row.get("prompt") if isinstance(row, dict) else None
            if not isinstance(prompt, str) or not prompt.strip():
                raise BonesoupError(f"{path}:{number} needs a non-empty string field 'prompt'")
            reference = row.get("reference")
            if reference is not None and not isinstance(reference, str):
                raise BonesoupError(f"{path}:{number}: 'reference' must be a string or absent")
            example_id = str(row.get("id", f"{path.stem}-{number}"))
            examples.append(PromptExample(id=example_id, prompt=prompt, reference=reference))
    return examples


def _loader(source: str) -> Callable[..., list[PromptExample]]:
    loaders: dict[str, Callable[..., list[PromptExample]]] = {
        "chitchat": load_chitchat,
        "news": load_news,
        "hh-rlhf": load_hh_rlhf,
        "summarize": load_summarize,
    }
    return loaders[source]


def load_prompts(
    source: str, split: str = "train", limit: int | None = None, **options: Any
) -> list[PromptExample]:
    """Load up to `limit` prompts of one split from `source`, in a deterministic order."""
    if split not in SPLITS:
        raise BonesoupError(f"split {split!r} is invalid; use one of {', '.join(SPLITS)}")
    if limit is not None and limit < 0:
        raise BonesoupError(f"limit={limit} must be >= 0 or None")
    if source == "jsonl" or source.endswith(".jsonl"):
        path = options.pop("path", None) if source == "jsonl" else source
        if path is None:
            raise BonesoupError("source 'jsonl' needs path=<file with a 'prompt' field per line>")
        examples = load_jsonl(path, **options)
    elif source in SOURCES:
        loader = _loader(source)
        try:
            inspect.signature(loader).bind(split, **options)
        except TypeError as error:
            raise BonesoupError(f"invalid option for prompt source {source!r}: {error}") from error
        examples = loader(split, **options)
    else:
        import difflib

        close = difflib.get_close_matches(source, SOURCES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise BonesoupError(
            f"unknown prompt source {source!r}; {hint}use one of {', '.join(SOURCES)} "
            "or a .jsonl file"
        )
    logger.debug("loaded %d %s prompts from %s", len(examples), split, source)
    return examples if limit is None else examples[:limit]


def format_prompt(tokenizer: Any, prompt: str, system: str | None = None) -> str:
    """Render a prompt with the tokenizer's chat template and a generation prompt.

    Without a chat template the prompt is returned as is, preceded by the system text and a
    blank line when `system` is given.
    """
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": prompt})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{system}\n\n{prompt}" if system else prompt

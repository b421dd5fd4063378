"""Answers from the models under evaluation: local models (base, adapter, full folder) and OpenAI-compatible
endpoints.

Model specs: ``smollm2`` (the embedded SmolLM2-135M-Instruct), a LoRA adapter folder (or a training output
folder holding ``adapter/``), a full Hugging Face model folder, ``openai:MODEL@BASE_URL``, or
``answers:FILE[#LABEL]`` (answers written beforehand, see ``doctune.trainer.answers``). An endpoint is asked
through the ``complete`` function the caller gives (``Complete``; the app layer passes
``doctune.agents.chat.ChatCompleter.complete``, which brings the key, timeout and retry rule of ``settings.llm``):
this floor holds no HTTP client, reads no key and has no retry policy of its own.
Local generation stops at the end-of-turn token and decodes without special tokens (the recipe's answers leaked
``<|im_end|>``); greedy for one sample, sampling (T=0.8, top-p 0.95) for several.

Every answer comes back as a ``Generation``: its text and why it ended. ``length`` means the token budget cut it
(``finish_reason`` from the endpoint; a local model that used all ``max_new_tokens`` without an end token): the
evaluator counts and shows such answers, as a cut answer usually fails for that reason alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from doctune.core.errors import ConfigError
from doctune.trainer.specs import Generation, ModelSpec

END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")
DEFAULT_MAX_NEW_TOKENS = 1536  # a real exercise's solution is ~2 KB of Zig (~700-900 tokens) plus some prose


class Complete(Protocol):
    """One chat completion from an endpoint: ``(answer text, finish reason)``; raises ``EndpointError`` (or its
    ``AccessError``) when the endpoint cannot answer. Retries are the callee's."""

    def __call__(self, prompt: str, *, model: str, base_url: str, temperature: float,
                 max_tokens: int) -> tuple[str, str]: ...


def parse_spec(label: str, spec: str, cache_dir: Path | None = None) -> ModelSpec:
    """``LABEL=SPEC`` -> ModelSpec; ``cache_dir`` (doctune's cache) holds the converted SmolLM2."""
    from doctune.trainer.hf_backend import resolve_model_path

    if spec.startswith("openai:"):
        model, sep, url = spec[len("openai:"):].partition("@")
        if not model or not sep or not url.startswith(("http://", "https://")):
            raise ConfigError(f"--model {label}={spec}: expected openai:MODEL@http(s)://HOST/v1")
        return ModelSpec(label=label, kind="openai", model=model, base_url=url.rstrip("/"))
    if spec.startswith("answers:"):
        path, _, pick = spec[len("answers:"):].partition("#")
        if not Path(path).is_file():
            raise ConfigError(f"--model {label}={spec}: answers file {path} not found")
        return ModelSpec(label=label, kind="answers", file=path, pick=pick or None)
    if spec in ("smollm2", "smollm2-135m-instruct"):
        return ModelSpec(label=label, kind="local", path=resolve_model_path(spec, cache_dir))
    p = Path(spec)
    if (p / "adapter" / "adapter_config.json").is_file():
        p = p / "adapter"  # a `doctune train` output folder
    if (p / "adapter_config.json").is_file():
        base = json.loads((p / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise ConfigError(f"{p}/adapter_config.json names no base model")
        return ModelSpec(label=label, kind="local", path=resolve_model_path(base, cache_dir), adapter=str(p))
    if (p / "config.json").is_file():
        return ModelSpec(label=label, kind="local", path=str(p))
    if not p.exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", spec):
        return ModelSpec(label=label, kind="local", path=spec)  # a Hub id (needs Hub access or the HF cache)
    raise ConfigError(f"--model {label}={spec}: not an adapter or model folder, 'smollm2', or openai:MODEL@URL")


class LocalGenerator:
    """A transformers model (plus optional LoRA adapter) generating chat answers in batches."""

    def __init__(self, spec: ModelSpec, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, batch_size: int = 16, seed: int = 0):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" bars; the evaluator shows its own progress
        tok_dir = spec.adapter or spec.path
        self.tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        self.tokenizer.padding_side = "left"  # decoder-only batching
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        model = AutoModelForCausalLM.from_pretrained(spec.path, dtype=dtype)
        if spec.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, spec.adapter)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = model.to(self.device).eval()
        self.max_new_tokens, self.batch_size, self.seed = max_new_tokens, batch_size, seed
        self.stop_ids = stop_token_ids(self.tokenizer)

    def generate(self, prompts: Sequence[str], samples: int = 1,
                 on_batch: Callable[[int], None] | None = None) -> list[list[Generation]]:
        import torch

        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths pad less
        out: list[list[Generation]] = [[] for _ in prompts]
        torch.manual_seed(self.seed)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            texts = [self.tokenizer.apply_chat_template([{"role": "user", "content": prompts[i]}], tokenize=False,
                                                        add_generation_prompt=True) for i in idx]
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            sampling: dict[str, Any] = (
                {"do_sample": True, "temperature": 0.8, "top_p": 0.95, "num_return_sequences": samples}
                if samples > 1 else {"do_sample": False}
            )
            with torch.no_grad():
                gen = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, eos_token_id=self.stop_ids,
                                          pad_token_id=self.tokenizer.pad_token_id, **sampling)
            new = gen[:, enc["input_ids"].shape[1]:]
            texts_out = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            for k, text in enumerate(texts_out):
                reason = finish_reason(new[k].tolist(), self.stop_ids, self.max_new_tokens)
                out[idx[k // samples]].append(Generation(text=text.strip(), finish_reason=reason))
            if on_batch:
                on_batch(len(idx))
        return out

    def close(self) -> None:
        del self.model


def finish_reason(new_ids: Sequence[int], stop_ids: Sequence[int], max_new_tokens: int) -> str:
    """``stop`` when the answer reached an end token, ``length`` when it used the whole budget without one.
    (Rows of a batch that stopped early are padded after their end token, so they contain one.)"""
    if any(t in stop_ids for t in new_ids):
        return "stop"
    return "length" if len(new_ids) >= max_new_tokens else "stop"


def stop_token_ids(tokenizer: Any) -> list[int]:
    """End-of-turn and end-of-text ids: generation stops at whichever comes first."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    vocab = tokenizer.get_vocab()
    ids += [vocab[t] for t in END_OF_TURN if t in vocab]
    return sorted(set(ids))


class OpenAIGenerator:
    """Chat completions from an OpenAI-compatible endpoint, one request per sample, through ``complete``."""

    def __init__(self, spec: ModelSpec, complete: Complete, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS):
        self.spec, self.complete, self.max_new_tokens = spec, complete, max_new_tokens

    def _ask(self, prompt: str, temperature: float) -> Generation:
        text, reason = self.complete(prompt, model=self.spec.model or "", base_url=self.spec.base_url or "",
                                     temperature=temperature, max_tokens=self.max_new_tokens)
        return Generation(text=text, finish_reason=reason)

    def generate(self, prompts: Sequence[str], samples: int = 1,
                 on_batch: Callable[[int], None] | None = None) -> list[list[Generation]]:
        temperature = 0.8 if samples > 1 else 0.0
        out = []
        for p in prompts:
            out.append([self._ask(p, temperature) for _ in range(samples)])
            if on_batch:
                on_batch(1)
        return out

    def close(self) -> None:
        """Nothing to release: the HTTP client belongs to whoever gave ``complete``."""


def make_generator(spec: ModelSpec, *, max_new_tokens: int, batch_size: int = 16,
                   task_ids: Sequence[str] = (), complete: Complete | None = None) -> Any:
    """A generator for the spec: ``generate(prompts, samples, on_batch) -> [[Generation]]`` and ``close()``.
    An answers file is read by task id (``task_ids``, in the order of the prompts); an endpoint is asked through
    ``complete``."""
    if spec.kind == "answers":
        from doctune.trainer.answers import FileAnswers

        return FileAnswers(spec, task_ids)
    if spec.kind == "openai":
        if complete is None:
            raise ConfigError(f"--model {spec.label}: an openai: model needs the caller's endpoint client "
                              "(complete=...); `doctune eval` passes one built from settings.llm")
        return OpenAIGenerator(spec, complete, max_new_tokens=max_new_tokens)
    return LocalGenerator(spec, max_new_tokens=max_new_tokens, batch_size=batch_size)

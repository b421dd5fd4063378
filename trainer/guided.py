"""Chat answers from a small local model, free or shaped by a JSON schema (what `doctune serve-llm` serves).

A 135M model asked for JSON mostly writes prose or Python; its answers never parse. So when a request carries a
JSON schema, the model does not write JSON at all: we walk the schema and let it write only the values, as a
plain-text form ("Instruction: ...", "Response: ..."), and we assemble and escape the JSON ourselves. The shape is
then always right; the content is entirely the model's (and the validator judges it).

- string: the model continues after ``Title (description):`` -- up to a blank line, or to its end of turn for the last string
  of an object (a code answer has blank lines in it);
- enum / boolean: the option the model finds most likely after ``Title: ``;
- integer / number: the model's digits (bounded by the schema's minimum/maximum);
- array: ``max(1, minItems)`` items; object: every property in schema order.

Defines ``LocalChatModel`` (``chat(messages, max_tokens=..., temperature=..., schema=None)``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_INT = re.compile(r"-?\d+(\.\d+)?")


@dataclass
class Answer:
    content: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # stop | length


@dataclass
class _Form:
    """The growing text (prompt + the model's form so far) and the token budget left."""

    text: str
    budget: int
    used: int = 0
    cut: bool = False
    fields: list[str] = field(default_factory=list)


class LocalChatModel:
    """A Hugging Face causal LM on the CPU (or a device), greedy or sampled, with schema-shaped answers."""

    def __init__(self, model_dir: Path | str, *, threads: int | None = None, device: str = "cpu"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).to(device).eval()
        self.device = device
        end = [t for t in ("<|im_end|>", "<|eot_id|>", "<|end|>") if t in self.tok.get_vocab()]
        self.eos = sorted({self.tok.eos_token_id, *self.tok.convert_tokens_to_ids(end)} - {None})

    def chat(self, messages: list[dict[str, str]], *, max_tokens: int, temperature: float = 0.0,
             schema: dict[str, Any] | None = None) -> Answer:
        prompt = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        n_prompt = len(self.tok(prompt, add_special_tokens=False)["input_ids"])
        form = _Form(text=prompt, budget=max_tokens)
        if schema is None:
            text, _ = self._continue(form, temperature, stop=None)
            return Answer(text.strip(), n_prompt, form.used, "length" if form.cut else "stop")
        value = self._fill(schema, schema.get("$defs", {}), form, temperature, "answer", last=True)
        return Answer(json.dumps(value, ensure_ascii=False), n_prompt, form.used,
                      "length" if form.cut else "stop")

    # ----------------------------------------------------------------------------------- schema walk
    def _fill(self, s: dict[str, Any], defs: dict[str, Any], form: _Form, temp: float, name: str,
              last: bool) -> Any:
        if "$ref" in s:
            s = defs[s["$ref"].rsplit("/", 1)[-1]]
        if "anyOf" in s:  # Optional[X]: the non-null branch
            s = next((b for b in s["anyOf"] if b.get("type") != "null"), s["anyOf"][0])
        title = s.get("title") or name.replace("_", " ").capitalize()
        kind = s.get("type")
        if "enum" in s:
            return self._choose(form, title, [json.dumps(v) if not isinstance(v, str) else v for v in s["enum"]],
                                s["enum"])
        if kind == "object":
            props = list(s.get("properties", {}).items())
            strings = [k for k, p in props if p.get("type") == "string" and "enum" not in p]
            return {k: self._fill(p, defs, form, temp, k, last=bool(strings) and k == strings[-1])
                    for k, p in props}
        if kind == "array":
            return [self._fill(s.get("items", {"type": "string"}), defs, form, temp, name, last)
                    for _ in range(max(1, int(s.get("minItems", 1))))]
        if kind == "boolean":
            return self._choose(form, title, ["true", "false"], [True, False])
        if kind in ("integer", "number"):
            return self._number(form, title, s, temp)
        hint = s.get("description", "")
        form.text += f"{title} ({hint.rstrip('.')}): " if hint else f"{title}: "
        text, _ = self._continue(form, temp, stop=None if last else ["\n\n"])
        form.text += text + "\n\n"
        return text.strip()

    def _number(self, form: _Form, title: str, s: dict[str, Any], temp: float) -> int | float:
        form.text += f"{title} (a number): "
        text, _ = self._continue(form, 0.0, stop=["\n"], limit=8)
        m = _INT.search(text)
        lo, hi = s.get("minimum"), s.get("maximum")
        if m is None:  # no digits: the model's likeliest of a few round values in range
            lo_i, hi_i = int(lo if lo is not None else 0), int(hi if hi is not None else 10)
            step = max(1, (hi_i - lo_i) // 10)
            opts = [str(v) for v in range(lo_i, hi_i + 1, step)]
            return int(self._choose(form, None, opts, opts))
        value: int | float = float(m.group()) if s.get("type") == "number" else int(float(m.group()))
        value = max(lo, value) if lo is not None else value
        value = min(hi, value) if hi is not None else value
        form.text += f"{text.strip()}\n\n"
        return value

    # ----------------------------------------------------------------------------------- model calls
    def _continue(self, form: _Form, temp: float, stop: list[str] | None, limit: int | None = None
                  ) -> tuple[str, int]:
        """The model's continuation of ``form.text`` up to a stop string, its end of turn or the budget."""
        budget = min(form.budget - form.used, limit or form.budget)
        if budget <= 0:
            form.cut = True
            return "", 0
        ids = self.tok(form.text, return_tensors="pt", add_special_tokens=False).to(self.device)
        kw: dict[str, Any] = {"do_sample": temp > 0, "max_new_tokens": budget, "eos_token_id": self.eos,
                              "pad_token_id": self.tok.pad_token_id or self.eos[0]}
        if temp > 0:
            kw.update(temperature=temp, top_p=0.95)
        if stop:
            kw.update(stop_strings=stop, tokenizer=self.tok)
        with self.torch.no_grad():
            out = self.model.generate(**ids, **kw)
        new = out[0, ids["input_ids"].shape[1]:]
        n = int(new.shape[0])
        form.used += n
        text = self.tok.decode(new, skip_special_tokens=True)
        ended = n > 0 and int(new[-1]) in self.eos
        lead = len(text) - len(text.lstrip())  # a stop string only counts after the first word
        for s in stop or []:
            if s in text[lead:]:
                text, ended = text[: lead + text[lead:].index(s)], True
        if not ended and n >= budget and limit is None:
            form.cut = True
        return text.rstrip(), n

    def _choose(self, form: _Form, title: str | None, labels: list[str], values: list[Any]) -> Any:
        """The option whose text the model finds likeliest after ``Title: `` (mean log-prob per token)."""
        if title:
            form.text += f"{title}: "
        base = self.tok(form.text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        best, best_score = 0, float("-inf")
        for i, label in enumerate(labels):
            opt = self.tok(label, return_tensors="pt", add_special_tokens=False)["input_ids"]
            ids = self.torch.cat([base, opt], dim=1).to(self.device)
            with self.torch.no_grad():
                logp = self.model(ids).logits[0, base.shape[1] - 1 : -1].log_softmax(-1)
            score = logp.gather(1, opt[0].to(self.device)[:, None]).mean().item()
            if score > best_score:
                best, best_score = i, score
        form.text += f"{labels[best]}\n\n"
        return values[best]

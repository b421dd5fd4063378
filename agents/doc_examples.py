"""The offline generator: instruction/response pairs from a section's own Zig examples, no LLM needed.

For each ```zig example the instruction asks for a program or test that does what the surrounding prose and the
heading describe; the response explains briefly and gives the code. Examples the doc marks as failing
(`Expected: fails to compile ...`, `... fails at run time ...`) become "what happens when ..." pairs whose claim the
validator checks (expect = compile_error / runtime_error). Deterministic: same section -> same pairs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from doctune.core.schemas import Expect, Outcome, Pair, Section, sha256

GENERATOR_NAME = "doc-examples"

_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([^\s`]*)")
_EXPECTED = re.compile(r"^Expected:\s*(?P<text>.+)$")
_FILENAME = re.compile(r"^\*\*(?P<name>[\w.\- ]+\.zig)\*\*\s*$")
_TEST_NAME = re.compile(r'^\s*test\s+"(?P<name>[^"]+)"', re.M)
_MAIN = re.compile(r"^\s*pub\s+fn\s+main\s*\(", re.M)
_CONTAINING = re.compile(r"containing:\s*`(?P<msg>.+)`")
_UNSUPPORTED_HINTS = ("target `", "linking libc", "not run on the host")


@dataclass
class Example:
    code: str
    prose: str  # paragraphs before the example (since the previous one)
    name: str | None  # file name from a bold `**name.zig**` line
    expected: str | None  # text of the `Expected:` line after it
    transcript: str | None  # the ```text block with the shell transcript, if any


def parse_examples(markdown: str) -> list[Example]:
    """Find each ```zig block with its prose before and the Expected/transcript lines after it."""
    lines = markdown.splitlines()
    examples: list[Example] = []
    prose: list[str] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            prose.append(lines[i])
            i += 1
            continue
        fence, lang = m.group(1), m.group(2).lower()
        body, i = _read_fence(lines, i + 1, fence)
        if lang != "zig":
            # A ```text block right after an example is its transcript; other code never counts as prose.
            if lang == "text" and examples and examples[-1].transcript is None and not _clean(prose):
                examples[-1].transcript = body
            continue
        name = None
        while prose and not prose[-1].strip():
            prose.pop()
        if prose and (fm := _FILENAME.match(prose[-1].strip())):
            name = fm.group("name")
            prose.pop()
        expected, j = None, i
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j < len(lines) and (em := _EXPECTED.match(lines[j].strip())):
            expected, i = em.group("text").strip(), j + 1
        examples.append(Example(code=body, prose=_clean(prose), name=name, expected=expected, transcript=None))
        prose = []
    return examples


def _read_fence(lines: list[str], i: int, fence: str) -> tuple[str, int]:
    body: list[str] = []
    indent = None
    while i < len(lines):
        s = lines[i].strip()
        if s.startswith(fence) and set(s) == {fence[0]}:
            i += 1
            break
        if indent is None and lines[i].strip():
            indent = len(lines[i]) - len(lines[i].lstrip())
        body.append(lines[i][indent or 0 :] if lines[i][: indent or 0].strip() == "" else lines[i])
        i += 1
    return "\n".join(body).rstrip("\n") + "\n", i


def _clean(lines: list[str]) -> str:
    """Prose as plain sentences: drop list bullets, bold/italic/code markers, empty lines."""
    text = " ".join(ln.strip().lstrip("-*+ ").strip() for ln in lines if ln.strip() and not ln.startswith("#"))
    text = re.sub(r"\*\*|__|(?<!\w)_(?!\w)", "", text)
    return re.sub(r"\s+", " ", text).strip()


_DANGLING = re.compile(r"\b(below|above|following|preceding|this example|the example|here is|as shown)\b", re.I)


def _sentences(text: str, n: int, limit: int = 500) -> str:
    """Up to ``n`` whole sentences that stand on their own: never a cut-off one, none that points at code the
    reader cannot see ("the example below", "... a simpler API:"), none holding a code fence."""
    kept: list[str] = []
    for sent in re.split(r"(?<=[.!?:])\s+(?=[A-Z`])", text):  # ': A...' ends a lead-in to a listing
        sent = sent.strip()
        if not sent or "```" in sent or sent.endswith(":") or _DANGLING.search(sent):
            continue
        if len(" ".join([*kept, sent])) > limit:
            break
        kept.append(sent)
        if len(kept) >= n:
            break
    return " ".join(kept)


def classify_expected(expected: str | None, code: str) -> tuple[str, Outcome, str | None] | None:
    """(mode, outcome, error_contains) from an `Expected:` line; None if the example can't run here."""
    if expected and any(h in expected for h in _UNSUPPORTED_HINTS):
        return None
    has_test, has_main = bool(_TEST_NAME.search(code)), bool(_MAIN.search(code))
    if expected is None and not (has_test or has_main):
        return None  # an unannotated fragment (signature, snippet): nothing the doc promises about it
    contains = (m.group("msg") for m in [_CONTAINING.search(expected or "")] if m)
    msg = next(contains, None)
    if expected is None:
        return ("test" if has_test else "run" if has_main else "obj"), "ok", None
    e = expected.lower()
    if "fails to compile" in e:
        return ("test" if has_test else "run" if has_main else "obj"), "compile_error", msg
    if "fails when the tests run" in e:
        return "test", "runtime_error", msg
    if "fails at run time" in e:
        return "run", "runtime_error", msg
    if "zig test" in e:
        return "test", "ok", None
    if "runs successfully" in e:
        return "run", "ok", None
    if "object file" in e:
        return "obj", "ok", None
    return None


def _first_error(transcript: str | None) -> str | None:
    for line in (transcript or "").splitlines():
        if "the following test command" in line:
            continue  # the build runner's summary, not the test's own message
        if m := re.search(r"\b(error|panic): (?P<msg>.+)$", line):
            return f"{m.group(1)}: {m.group('msg').strip()}"
    return None


def _stdout_of(transcript: str | None) -> str | None:
    """Program output after `$ ./name` in a run transcript (only when the transcript is that simple)."""
    if not transcript:
        return None
    lines = transcript.splitlines()
    for k, line in enumerate(lines):
        if line.startswith("$ ./"):
            rest = lines[k + 1 :]
            return "\n".join(rest) + "\n" if rest and not any(r.startswith("$ ") for r in rest) else None
    return None


_CODE_TEMPLATES = (
    "Write a {what} in Zig 0.14 that demonstrates {topic}.",
    "Using Zig 0.14, show {topic} with a {what}.",
    "In Zig 0.14, how would you demonstrate {topic}? Write a {what}.",
)


def make_pairs(section: Section, max_pairs: int | None = None) -> list[Pair]:
    """Pairs for every usable Zig example of the section (deterministic)."""
    pairs: list[Pair] = []
    topic = section.heading_path or section.source
    for k, ex in enumerate(parse_examples(section.text)):
        cls = classify_expected(ex.expected, ex.code)
        if cls is None:
            continue
        mode, outcome, contains = cls
        context = _sentences(ex.prose, 2)
        if outcome == "ok":
            instruction, response = _code_pair(section, ex, mode, topic, context, k)
            # Transcripts mix stdout and stderr: only trust them for programs that never write to stderr.
            quiet_stderr = not re.search(r"debug\.print|\blog\.|getStdErr", ex.code)
            stdout = _stdout_of(ex.transcript) if mode == "run" and quiet_stderr else None
            expect = Expect(outcome="ok", stdout=stdout)
        else:
            instruction, response = _failure_pair(ex, mode, outcome, topic, context, contains)
            expect = Expect(outcome=outcome, error_contains=contains)
        pid = "p-" + sha256(f"{section.id}|{k}|{ex.code}", 16)
        pairs.append(
            Pair(
                id=pid,
                section_id=section.id,
                heading_path=section.heading_path,
                source=section.source,
                instruction=instruction,
                response=response,
                kind="code",
                generator=GENERATOR_NAME,
                expect=expect,
                meta={"example": ex.name or f"example {k + 1}", "mode": mode},
            )
        )
        if max_pairs is not None and len(pairs) >= max_pairs:
            break
    return pairs


def _topic(heading_path: str) -> str:
    """'Comments > Doc Comments' -> 'doc comments (Comments)': readable inside a sentence."""
    parts = [p.strip() for p in heading_path.split(" > ") if p.strip()]
    if not parts:
        return "this feature"
    last = parts[-1]
    return f"{last} (part of {parts[0]})" if len(parts) > 1 else last


def _code_pair(section: Section, ex: Example, mode: str, topic: str, context: str, k: int) -> tuple[str, str]:
    """The question states the task (the doc's explanation as background, the tests or output to produce); the
    answer gives the code and what running it shows, never the question's explanation again."""
    tests = _TEST_NAME.findall(ex.code)
    if mode == "test":
        names = ", ".join(f'"{t}"' for t in tests[:3])
        what = f"test named {names}" if len(tests) == 1 else f"set of tests ({names})"
    elif mode == "run":
        what = "complete program with `pub fn main`"
    else:
        what = "short declaration example that compiles"
    template = _CODE_TEMPLATES[int(sha256(section.id + str(k), 4), 16) % len(_CODE_TEMPLATES)]
    instruction = template.format(what=what, topic=_topic(topic))
    if context:
        instruction += f" Background: {context}"
    stdout = _stdout_of(ex.transcript) if mode == "run" else None
    if stdout and len(stdout) <= 200 and "`" not in stdout:
        instruction += f" It should print `{stdout.strip()}`." if "\n" not in stdout.strip() else ""
    return instruction.strip(), _code_response(ex, mode, what, topic)


def _code_response(ex: Example, mode: str, what: str, topic: str) -> str:
    name = topic.split(" > ")[-1]
    intro = f"Here is a Zig 0.14 {what.split(' (')[0].split(' named')[0]} for {name}:"
    tests = _TEST_NAME.findall(ex.code)
    if mode == "test":
        n = len(tests)
        which = "the test" if n == 1 else "both tests" if n == 2 else f"all {n} tests"
        after = f"`zig test` runs {which} and {'it passes' if n == 1 else 'they pass'}."
    elif mode == "run":
        out = _stdout_of(ex.transcript)
        shown = out.strip() if out and len(out) <= 300 else None
        after = "`zig run` builds and runs it" + (f"; it prints:\n\n```text\n{shown}\n```" if shown else ".")
    else:
        after = "It compiles as it is (its declarations are type-checked; there is no `main` to run)."
    return f"{intro}\n\n```zig\n{ex.code}```\n\n{after}\n"


def _failure_pair(
    ex: Example, mode: str, outcome: str, topic: str, context: str, contains: str | None
) -> tuple[str, str]:
    how = {"test": "tested with `zig test`", "run": "built and run", "obj": "compiled"}[mode]
    instruction = f"What happens when this Zig 0.14 code about {_topic(topic)} is {how}?\n\n```zig\n{ex.code}```"
    err = contains or _first_error(ex.transcript)
    if outcome == "compile_error":
        verdict = "It does not compile."
        detail = f" The compiler reports: `{err}`." if err else ""
    else:
        verdict = "It compiles, but fails at run time." if mode == "run" else "It compiles, but the test fails."
        detail = f" The output contains: `{err}`." if err else ""
    why = f" {context}" if context else ""
    response = f"{verdict}{detail}{why}\n\n```zig\n{ex.code}```\n"
    return instruction, response

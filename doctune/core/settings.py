"""All of doctune's settings: one pydantic-settings model, read from defaults < $OPENAI_BASE_URL/$OPENAI_API_KEY
< TOML file < DOCTUNE_* env < CLI.

Each stage reads its own part (``settings.split``, ``settings.validator``, ...). Nested env vars use ``__``:
``DOCTUNE_VALIDATOR__CONCURRENCY=4``. Secrets are ``SecretStr`` and never printed.

Everything is resolved when the settings are built (``load_settings``): the standard OpenAI variables fill
``llm.base_url`` / ``llm.api_key`` when nothing else set them, and the cache locations (verdicts, Zig, models)
derive from the one ``cache_dir``. No other module reads doctune's configuration from the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from doctune.core.errors import ConfigError


class _Part(BaseModel):
    """Base of every settings part: an unknown key (a typo in the TOML file or a DOCTUNE_X__Y name) is an error,
    not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class SplitSettings(_Part):
    """Splitter: Markdown/MDX -> sections."""

    max_depth: int = Field(3, ge=1, le=6, description="Deepest heading level that starts a section (3 = ###).")
    min_chars: int = Field(200, ge=0, description="Sections shorter than this are merged into a neighbour.")
    max_chars: int = Field(
        8000, ge=500, description="Sections longer than this are split at paragraph/fence boundaries."
    )
    max_doc_mb: float = Field(
        20.0, gt=0, description="Largest document accepted, in MB (a bigger one is refused before it is read)."
    )


class LLMSettings(_Part):
    """Any OpenAI-compatible chat endpoint (hosted, vLLM, `doctune serve-llm`)."""

    base_url: str | None = Field(None, description="Endpoint base URL; falls back to $OPENAI_BASE_URL.")
    api_key: SecretStr | None = Field(None, description="API key; falls back to $OPENAI_API_KEY. Never printed.")
    model: str = Field("meta-llama/llama-3.1-8b-instruct", description="Model name sent to the endpoint.")
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature (the recipe used 0.7).")
    max_tokens: int = Field(4096, ge=16, description="Max completion tokens per request.")
    structured_output_method: Literal["json_schema", "function_calling", "json_mode"] = Field(
        "function_calling", description="How structured output is requested; providers differ in support."
    )
    timeout_s: float = Field(120.0, gt=0, description="Per-request timeout in seconds.")
    max_retries: int = Field(4, ge=0, description="Retries of transient errors (429, 5xx, timeouts).")
    requests_per_second: float = Field(0.0, ge=0, description="Client-side rate limit; 0 = unlimited.")
    price_input_per_mtok: float = Field(0.0, ge=0, description="USD per 1M input tokens, for cost estimates.")
    price_output_per_mtok: float = Field(0.0, ge=0, description="USD per 1M output tokens, for cost estimates.")


class GeneratorSettings(_Part):
    """QA generation: the offline doc-example generator or the LLM agent."""

    kind: Literal["auto", "doc-examples", "llm"] = Field(
        "auto", description="auto = llm when an endpoint is configured, else doc-examples."
    )
    pairs_per_section: int = Field(3, ge=1, le=10, description="Pairs asked for per section (recipe: 2-3).")
    min_section_chars: int = Field(200, ge=0, description="Skip sections shorter than this (recipe: 200).")
    continuation_chars: int = Field(5000, ge=500, description="Sections longer than this get continuation passes.")
    max_continuations: int = Field(3, ge=0, description="Max extra passes for long sections (recipe: 3).")
    code_share: float = Field(0.7, ge=0, le=1, description="Target share of code tasks vs conceptual questions.")
    require_code: bool = Field(False, description="Drop pairs without a ```zig block.")
    max_repairs: int = Field(2, ge=0, le=10, description="Repair attempts per failing pair.")
    format_retries: int = Field(
        1, ge=0, le=5, description="Re-asks (with the parse error as feedback) after a malformed/truncated/empty answer."
    )
    concurrency: int = Field(8, ge=1, description="LLM requests in flight at once (generation and repair).")
    sections_in_flight: int | None = Field(
        None, ge=1, description="Sections in progress at once (generating, waiting for or in validation, "
        "repairing); bounds memory. Default: max(32, 4 x concurrency), so sections waiting for their code "
        "checks do not keep the LLM idle.",
    )

    def sections_bound(self) -> int:
        """How many sections the graph runs at once (`sections_in_flight`, or its default)."""
        return self.sections_in_flight or max(32, 4 * self.concurrency)


class ValidatorSettings(_Part):
    """Compile-and-run validation of every Zig block."""

    executor: Literal["local", "codapi"] = Field("local", description="local = ziglang wheel in a sandbox.")
    sandbox: Literal["auto", "bwrap", "none"] = Field(
        "auto", description="auto = bubblewrap when available; 'none' requires unsafe_no_sandbox."
    )
    unsafe_no_sandbox: bool = Field(False, description="Run untrusted code without a sandbox (opt-in).")
    compile_timeout_s: float = Field(120.0, gt=0, description="Wall-clock limit for a compile.")
    run_timeout_s: float = Field(10.0, gt=0, description="Wall-clock limit for running a program or tests.")
    memory_mb: int = Field(4096, ge=256, description="Address-space limit for the compiled program.")
    sandbox_memory_mb: int = Field(
        1024, ge=64, description="Total memory of one run sandbox incl. memfd/shm (cgroup; where available)."
    )
    compile_memory_mb: int = Field(
        1536, ge=256, description="Memory of one compile (cgroup; else address-space limit + 1 GiB)."
    )
    output_limit_bytes: int = Field(65536, ge=1024, description="stdout/stderr cap per stream.")
    concurrency: int = Field(default_factory=lambda: os.cpu_count() or 2, ge=1, description="Parallel jobs.")
    cache: bool = Field(True, description="Cache verdicts by (code, mode, zig version, executor) in SQLite.")
    cache_path: Path | None = Field(None, description="Verdict cache file (default: <cache_dir>/verdicts.sqlite).")
    zig_cache_dir: Path | None = Field(
        None, description="Zig compile cache private to doctune (default: <cache_dir>/zig-cache)."
    )
    batch_tests: bool = Field(True, description="Batch test-only blocks into one `zig test` compile.")
    batch_programs: bool = Field(
        True, description="Compile several programs into one binary (each still runs alone in its sandbox)."
    )
    fast_backend: bool = Field(False, description="Compile with -fno-llvm -fno-lld (faster, opt-in).")
    codapi_url: str = Field("http://localhost:1313", description="Codapi server base URL.")
    codapi_sandbox: str = Field("zig", description="Codapi sandbox name.")
    codapi_version: str | None = Field(None, description="Codapi sandbox version, if the server has several.")
    codapi_run_command: str = Field("run", description="Codapi command for programs.")
    codapi_test_command: str = Field("test", description="Codapi command for tests.")
    max_infra_retries: int = Field(3, ge=0, description="Retries of infra errors (sandbox, 429, 5xx).")


class CuratorSettings(_Part):
    """Dedup, decontamination and the optional LLM judge."""

    dedup: bool = Field(True, description="Drop exact and near-duplicate pairs.")
    near_dup_threshold: float = Field(0.85, ge=0, le=1, description="Jaccard similarity that counts as duplicate.")
    decontaminate: bool = Field(True, description="Drop pairs overlapping the eval tasks.")
    decontam_ngram: int = Field(13, ge=3, description="n-gram size for decontamination.")
    judge: bool = Field(False, description="Score each pair 0-100 with the LLM judge.")
    judge_threshold: int = Field(70, ge=0, le=100, description="Minimum judge score to keep a pair.")
    extra_pairs: list[Path] = Field(default_factory=list, description="Hand-written pair files to merge.")
    extra_oversample: int = Field(1, ge=1, description="How many times to repeat extra pairs.")
    min_evidence: Literal["tested", "ran", "compiled", "conceptual"] | None = Field(
        None, description="Keep only pairs with at least this evidence (tested > ran > compiled > conceptual); "
        "unset = keep every accepted pair.",
    )


class DatasetSettings(_Part):
    """Export: JSONL + HF DatasetDict."""

    test_size: float = Field(0.1, ge=0, lt=1, description="Share of sections held out for the test split.")
    seed: int = Field(3407, description="Seed of the section-level split.")
    push_to_hub: str | None = Field(None, description="Hub repo id to push to (needs network + HF token).")
    hub_private: bool = Field(True, description="Push as a private dataset.")


class CheckpointSettings(_Part):
    """Durable runs."""

    url: str | None = Field(
        None, description="postgresql://... for Postgres; default: SQLite at <out>/state.sqlite."
    )


TrainMethod = Literal["sft", "grpo", "sft+grpo"]
TRAIN_METHODS: tuple[str, ...] = get_args(TrainMethod)


class TrainSettings(_Part):
    """Trainer node (off unless enabled)."""

    enabled: bool = Field(False, description="Run the train and evaluate nodes after export.")
    preset: str = Field("cpu-smollm2", description="Named preset: cpu-smollm2 or seed-qwen2.5-3b.")
    backend: Literal["auto", "hf", "unsloth"] = Field("auto", description="auto = preset's backend.")
    max_steps: int | None = Field(None, description="Override the preset's max_steps.")
    method: TrainMethod = Field(
        "sft", description="sft = supervised (default); grpo = reward from the Zig validator (hidden tests, stated "
        "stdout); sft+grpo = SFT, then GRPO from its adapter.",
    )
    overrides: dict[str, Any] = Field(default_factory=dict, description="Per-field overrides of the preset.")


class EvalSettings(_Part):
    """Before/after evaluation."""

    tasks: list[Path] = Field(default_factory=list, description="Eval task files (default: shipped set).")
    max_tasks: int | None = Field(None, description="Evaluate only the first N tasks.")
    samples: int = Field(1, ge=1, description="Samples per task (pass@k).")
    max_new_tokens: int = Field(
        1536, ge=16, description="Answer budget in new tokens (local models and OpenAI max_tokens); a real "
        "exercise's solution is ~2 KB of Zig, and answers cut at the budget are counted in the report.",
    )


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/doctune``, else ``~/.cache/doctune`` (the default of ``cache_dir``)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "doctune"


class Settings(BaseSettings):
    """Root settings object."""

    model_config = SettingsConfigDict(
        env_prefix="DOCTUNE_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    cache_dir: Path = Field(
        default_factory=default_cache_dir, description="doctune's cache: verdicts (verdicts.sqlite), the Zig "
        "compile cache (zig-cache/), converted models (models/). Default: $XDG_CACHE_HOME/doctune or "
        "~/.cache/doctune. A TOML file sets it at the top, before any [section].",
    )

    split: SplitSettings = Field(default_factory=SplitSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    generator: GeneratorSettings = Field(default_factory=GeneratorSettings)
    validator: ValidatorSettings = Field(default_factory=ValidatorSettings)
    curator: CuratorSettings = Field(default_factory=CuratorSettings)
    dataset: DatasetSettings = Field(default_factory=DatasetSettings)
    checkpoint: CheckpointSettings = Field(default_factory=CheckpointSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)

    @field_validator("validator")
    @classmethod
    def _sandbox_opt_in(cls, v: ValidatorSettings) -> ValidatorSettings:
        if v.sandbox == "none" and not v.unsafe_no_sandbox:
            raise ValueError(
                "validator.sandbox='none' runs untrusted code unsandboxed; also set "
                "validator.unsafe_no_sandbox=true (CLI: --unsafe-no-sandbox) to accept that"
            )
        return v

    @model_validator(mode="after")
    def _derive_cache_paths(self) -> Settings:
        """Verdict and Zig caches not set on their own live under ``cache_dir``."""
        v = self.validator
        if v.cache_path is None or v.zig_cache_dir is None:
            self.validator = v.model_copy(update={"cache_path": v.cache_path or self.cache_dir / "verdicts.sqlite",
                                                  "zig_cache_dir": v.zig_cache_dir or self.cache_dir / "zig-cache"})
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        sources.append(_OpenAIEnv(settings_cls))  # last = lowest priority: only what nothing else set
        return tuple(sources)

    def public_dict(self) -> dict[str, Any]:
        """Settings as JSON-able data with secrets masked (for cards, logs, status)."""
        return self.model_dump(mode="json")  # SecretStr dumps as '**********'


class _OpenAIEnv(PydanticBaseSettingsSource):
    """The standard ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` as the lowest-priority source of ``llm.base_url`` /
    ``llm.api_key`` (an empty variable counts as unset)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ builds the whole (nested) value

    def __call__(self) -> dict[str, Any]:
        llm = {k: v for k, v in (("base_url", os.environ.get("OPENAI_BASE_URL")),
                                 ("api_key", os.environ.get("OPENAI_API_KEY"))) if v}
        return {"llm": llm} if llm else {}


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build settings: defaults < TOML ``config_file`` < DOCTUNE_* env < ``overrides`` (nested dicts).

    Raises ConfigError with the field name and the problem on invalid values.
    """
    cls: type[Settings] = Settings
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        cls = type("FileSettings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": path}})
    try:
        return cls(**_drop_none(overrides))
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e)) from None
    except Exception as e:  # TOML syntax errors and the like
        raise ConfigError(f"cannot read settings: {e}") from None


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = _drop_none(v)
            if v:
                out[k] = v
        elif v is not None:
            out[k] = v
    return out


def _format_validation_error(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "settings"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "invalid settings: " + "; ".join(parts)

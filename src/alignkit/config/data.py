"""Configs of the data commands that run a model: Self-Instruct generation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from alignkit.config.parts import ModelConfig, check_non_negative, check_positive
from alignkit.errors import ConfigError

# Self-Instruct's filter (Wang et al. 2022, sec. 2.3): words naming what a language model cannot do.
CANNOT_DO = ["image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps", "draw",
             "plot", "go to", "video", "audio", "music", "flowchart", "diagram"]


@dataclass
class EndpointConfig:
    url: str = ""
    """An OpenAI-compatible base URL (http://127.0.0.1:8000/v1 for `alignkit serve`) used instead of
    model.path: instructions through /completions, answers through /chat/completions."""
    model: str = ""
    """The model name the endpoint expects (`alignkit serve` answers to any)."""
    key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (unset: no key is sent)."""
    concurrency: int = 8
    """Requests in flight at once."""


@dataclass
class SelfInstructConfig:
    """Self-Instruct (Wang et al. 2022) as Alpaca used it: grow a set of instructions from seed tasks,
    keep only the new and well-formed ones, then write an answer to each."""

    seed_tasks: str = ""
    """Seed tasks: Alpaca rows (instruction, input, output), Self-Instruct's seed_tasks.jsonl rows
    (instruction, instances: [{input, output}]), or `world` for the demo world's own seed tasks."""
    output_dir: str = "runs/self-instruct"
    """Where candidates.jsonl (every proposed instruction, kept or why not), data.jsonl (Alpaca rows),
    report.json and state.json go. A run that stopped continues from here when started again."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The model that proposes instructions and answers them (any causal LM; an instruct model's
    chat template is used for the answers)."""
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    """Or a model behind an OpenAI-compatible server."""
    num_instructions: int = 100
    """Stop after the round in which this many new instructions are kept (rounds are whole, so a few
    more may be kept; a resumed run with a larger number goes on from there)."""
    max_rounds: int = 200
    """Stop after this many rounds even if fewer are kept (each round sends batch_size prompts)."""
    batch_size: int = 8
    """Prompts per round, each with its own sample of example tasks, generated together."""
    prompt_tasks: int = 8
    """Example tasks in each prompt (the paper's 8)."""
    prompt_generated: int = 2
    """How many of them are drawn from the instructions generated so far, once there are any (the
    paper's 2; the rest are seed tasks)."""
    rouge_threshold: float = 0.7
    """Keep an instruction only if its ROUGE-L to every seed task and kept instruction is below this."""
    min_words: int = 3
    """Shortest instruction kept, in words."""
    max_words: int = 150
    """Longest instruction kept, in words."""
    blocked_words: list[str] = field(default_factory=lambda: list(CANNOT_DO))
    """Drop an instruction containing any of these words (what a text model cannot do)."""
    safety_rules: str = "default"
    """Drop instructions and answers the safety rules block: `default` (the shipped rules), a rules
    YAML file, or `none`."""
    max_new_tokens: int = 96
    """Tokens generated per prompt when proposing instructions."""
    temperature: float = 1.0
    """Sampling temperature when proposing instructions (Alpaca's 1.0)."""
    top_p: float = 1.0
    """Nucleus sampling when proposing instructions."""
    answers: Literal["chat", "few_shot", "none"] = "chat"
    """How each kept instruction gets its input and output. chat: the model answers the instruction
    through its chat template (an instruct model); few_shot: the paper's way for a plain language
    model, seed tasks with their inputs and outputs as examples, the model continuing with an input
    (or none) and an output; none: instructions only."""
    answer_max_new_tokens: int = 128
    """Longest answer (an answer that reaches it is dropped as cut off)."""
    answer_temperature: float = 0.0
    """Sampling temperature for the answers (0: greedy)."""
    seed: int = 0
    """Seed of the example sampling and of generation (round r uses seed and r, so a resumed run
    proposes exactly what an uninterrupted one would)."""
    progress: bool = True
    """Show a progress bar (kept instructions, rate, ETA)."""

    def validate(self, where: str) -> None:
        if not self.seed_tasks:
            raise ConfigError(f"{where}: seed_tasks is required (a file of seed tasks, or `world`)")
        if bool(self.model.path) == bool(self.endpoint.url):
            raise ConfigError(f"{where}: give exactly one of model.path and endpoint.url")
        if self.endpoint.url and not self.endpoint.model:
            raise ConfigError(f"{where}: endpoint.model is required with endpoint.url")
        for key in ("num_instructions", "max_rounds", "batch_size", "prompt_tasks", "min_words", "max_words",
                    "max_new_tokens", "answer_max_new_tokens", "temperature"):
            check_positive(where, key, getattr(self, key))
        check_non_negative(where, "prompt_generated", self.prompt_generated)
        check_non_negative(where, "answer_temperature", self.answer_temperature)
        if self.prompt_generated > self.prompt_tasks:
            raise ConfigError(f"{where}: prompt_generated ({self.prompt_generated}) must be at most prompt_tasks "
                              f"({self.prompt_tasks})")
        if not 0.0 < self.rouge_threshold <= 1.0:
            raise ConfigError(f"{where}: rouge_threshold must be in (0, 1], got {self.rouge_threshold}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"{where}: top_p must be in (0, 1], got {self.top_p}")
        if self.min_words > self.max_words:
            raise ConfigError(f"{where}: min_words ({self.min_words}) is above max_words ({self.max_words})")

"""Self-Instruct's pieces (Wang et al. 2022, "Self-Instruct: Aligning Language Models with
Self-Generated Instructions", sec. 2): the prompt that asks a model for new tasks, reading its
continuation back into instructions, the filter that keeps only new and well-formed ones, and the
prompts and parsing for their answers. The loop that drives them is alignkit.stages.self_instruct.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignkit.data.records import read_records
from alignkit.data.similarity import RougeIndex
from alignkit.errors import DataError


@dataclass(frozen=True)
class SeedTask:
    instruction: str
    input: str = ""
    output: str = ""


def read_seed_tasks(path: str | Path) -> list[SeedTask]:
    """Alpaca rows (instruction, input, output) or Self-Instruct seed rows (instruction, instances:
    [{input, output}], the first instance used); an instruction is one line (newlines become spaces)."""
    tasks = []
    for r in read_records(path):
        row = r.row
        if not isinstance(row.get("instruction"), str) or not row["instruction"].strip():
            raise DataError(f"{r.where}: expected a non-empty string field 'instruction' (Alpaca or Self-Instruct "
                            f"seed task), got keys {sorted(row)}")
        inst = row.get("instances")
        if isinstance(inst, list) and inst and isinstance(inst[0], dict):
            given, answer = inst[0].get("input", ""), inst[0].get("output", "")
        else:
            given, answer = row.get("input", ""), row.get("output", "")
        if not isinstance(given, str) or not isinstance(answer, str):
            raise DataError(f"{r.where}: 'input' and 'output' must be strings")
        tasks.append(SeedTask(" ".join(row["instruction"].split()), given.strip(), answer.strip()))
    if not tasks:
        raise DataError(f"{path}: no seed tasks")
    return tasks


# ---- proposing instructions -------------------------------------------------------------------

HEADER = "Come up with a series of tasks:\n\n"


def sample_examples(rng: random.Random, seeds: Sequence[str], generated: Sequence[str], k: int,
                    k_generated: int) -> list[str]:
    """k example instructions for one prompt: k_generated from the generated ones (when there are
    enough), the rest from the seeds, in a shuffled order (sec. 2.2: 6 human-written + 2 generated)."""
    from_generated = rng.sample(list(generated), min(k_generated, len(generated)))
    from_seeds = rng.sample(list(seeds), min(k - len(from_generated), len(seeds)))
    examples = from_seeds + from_generated
    rng.shuffle(examples)
    return examples


def instruction_prompt(examples: Sequence[str]) -> str:
    """The paper's prompt (Table 5): the examples numbered as tasks, ending at the next task's number."""
    body = "".join(f"Task {i}: {x}\n" for i, x in enumerate(examples, 1))
    return f"{HEADER}{body}Task {len(examples) + 1}:"


_NEXT_TASK = re.compile(r"\n\s*Task\s*\d+\s*[:.]")


def parse_instructions(continuation: str, cut_off: bool) -> list[tuple[str, bool]]:
    """(instruction, complete) for each task in the model's continuation of instruction_prompt: the
    first runs to the end of its line, later ones follow "Task N:". The last one is incomplete when
    generation stopped at the token limit before the line ended."""
    pieces = _NEXT_TASK.split(continuation)
    out = []
    for n, piece in enumerate(pieces):
        line, newline, _ = piece.strip(" \t").partition("\n")
        complete = not (n == len(pieces) - 1 and cut_off and not newline)  # still being written at the limit
        if line.strip():  # "Task 12:" with nothing after it proposes nothing
            out.append((line.strip(), complete))
    return out


@dataclass
class Verdict:
    reason: str = ""
    """Empty when kept; otherwise why it was dropped."""
    detail: str = ""
    rouge_l: float = 0.0
    """Highest ROUGE-L to a seed task or kept instruction."""
    most_similar: str = ""

    @property
    def kept(self) -> bool:
        return not self.reason


def check_instruction(text: str, complete: bool, index: RougeIndex, *, min_words: int, max_words: int,
                      blocked_words: Sequence[str], rouge_threshold: float, safety_filter: Any = None) -> Verdict:
    """Self-Instruct's filter (sec. 2.3), cheapest test first: cut off, too short or long, a word
    naming what a text model cannot do, not starting with a letter, unsafe, then too similar (ROUGE-L
    >= threshold) to a seed task or an instruction already kept."""
    if not complete:
        return Verdict("cut off", "generation reached max_new_tokens inside the line")
    words = len(text.split())
    if words < min_words:
        return Verdict("too short", f"{words} words < {min_words}")
    if words > max_words:
        return Verdict("too long", f"{words} words > {max_words}")
    lower = text.lower()
    for w in blocked_words:
        if re.search(rf"\b{re.escape(w.lower())}\b", lower):
            return Verdict("names what a text model cannot do", w)
    if not text[0].isascii() or not text[0].isalpha():
        return Verdict("does not start with a letter", text[:1])
    if safety_filter is not None:
        verdict = safety_filter.check_input(text)
        if verdict.blocked:
            return Verdict("unsafe", verdict.category)
    score, similar = index.most_similar(text)
    if score >= rouge_threshold:
        return Verdict("too similar", f"ROUGE-L {score:.3f} >= {rouge_threshold}", score, similar)
    return Verdict(rouge_l=score, most_similar=similar)


# ---- answers --------------------------------------------------------------------------------

ANSWER_HEADER = ("Write an example for each task: an input when the task needs one, then the output.\n\n")


def answer_prompt(examples: Sequence[SeedTask], instruction: str) -> str:
    """Few-shot instance generation (sec. 2.2, for a plain language model): seed tasks with their
    input and output, then the new task; the model continues with "Input:" or "Output:"."""
    blocks = []
    for t in examples:
        given = f"Input: {t.input}\n" if t.input else ""
        blocks.append(f"Task: {t.instruction}\n{given}Output: {t.output}\n\n")
    return f"{ANSWER_HEADER}{''.join(blocks)}Task: {instruction}\n"


def parse_answer(continuation: str, cut_off: bool) -> tuple[str, str, str]:
    """(input, output, reason) from a continuation of answer_prompt; reason is empty when usable."""
    text, found_next, _ = continuation.partition("\nTask:")
    if cut_off and not found_next:
        return "", "", "answer cut off"
    text = text.strip()
    given = ""
    if text.startswith("Input:"):
        given, sep, text = text[len("Input:"):].partition("\nOutput:")
        if not sep:
            return "", "", "no output"
        given, text = given.strip(), "Output:" + text
    if not text.startswith("Output:"):
        return "", "", "no output"
    output = text[len("Output:"):].strip()
    return (given, output, "") if output else (given, "", "empty answer")

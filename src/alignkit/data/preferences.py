"""Preference data: pairwise and ranked rows, normalised to rankings, and rankings to pairs.

Accepted rows:
- pairwise: {"prompt": str | messages, "chosen": str | messages, "rejected": str | messages,
  "margin": number (optional)}. In the chat form without a prompt (HH-RLHF style), chosen and
  rejected are whole conversations that agree up to their last assistant turn; that common part is
  the prompt.
- ranked: {"prompt": str | messages, "responses": [str, ...]} ordered best first; or with
  "ranking": [indices, best first], or "scores" / "ratings": [number per response, higher better].
  Equal scores are ties and give no pair.
- UltraFeedback: {"instruction" | "prompt", "completions": [{"response", "annotations": {aspect:
  {"Rating": "4", ...}}, "overall_score", "fine-grained_score"}]}: rated by one aspect, a score field,
  or the mean of the aspects (`data.rating_aspect`); a response without that rating ("N/A") is left out.
Raw Anthropic HH transcripts ("\n\nHuman: ...\n\nAssistant: ...") are read as the chats they are,
in `prompt` and in prompt-less `chosen` / `rejected`.
An optional "source" field is kept, so accuracy can be reported per source.

A ranking whose responses are all rated alike carries no preference: the row is dropped and counted
(`Dropped`), not an error.

Everything becomes a `Ranking` (prompt messages, responses, a score per response); `rankings_to_pairs`
turns a ranking of k responses into its k(k-1)/2 ordered pairs (or adjacent pairs only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from alignkit.data.formats import is_hh, parse_hh
from alignkit.data.records import Record
from alignkit.errors import DataError


class Dropped(Exception):
    """A row that is well formed but carries nothing to learn; the reason is counted by the loader."""

Messages = tuple[dict[str, str], ...]


@dataclass(frozen=True)
class Ranking:
    """Responses to one prompt with a score each (higher is better); `rated` when scores are ratings
    (their gaps are meaningful as margins) rather than positions in an order."""

    prompt: Messages
    responses: tuple[str, ...]
    scores: tuple[float, ...]
    where: str
    source: str = ""
    rated: bool = False
    margin: float | None = None  # an explicit margin given with a pairwise row


@dataclass(frozen=True)
class Pair:
    prompt: Messages
    chosen: str
    rejected: str
    margin: float | None
    where: str
    source: str = ""


def _messages(value: Any, where: str, name: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: field '{name}' must be a string or a non-empty list of messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: {name}[{i}] must be an object with string fields role and content")
        if m["role"] not in ("system", "user", "assistant"):
            raise DataError(f"{where}: {name}[{i}]: unknown role '{m['role']}'; expected system, user or assistant")
        out.append({"role": m["role"], "content": m["content"]})
    return out


HH_MARKERS = ("\n\nHuman:", "\n\nAssistant:")


def _prompt(value: Any, where: str) -> Messages:
    if isinstance(value, str) and value.startswith("\n\nHuman:"):  # a raw HH transcript
        msgs = parse_hh(value, where, "prompt")
        if msgs and msgs[-1]["role"] == "assistant" and not msgs[-1]["content"]:
            msgs = msgs[:-1]  # "...\n\nAssistant:" ends the prompt, waiting for the answer
        value = msgs
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"{where}: field 'prompt' is empty")
        if any(m in value for m in HH_MARKERS):
            # Trained as one user turn, the transcript's own turns would be learned as text.
            raise DataError(f"{where}: field 'prompt' holds HH-style turn markers ('\\n\\nHuman:' / "
                            "'\\n\\nAssistant:'); give the conversation as a list of messages instead")
        return ({"role": "user", "content": value},)
    msgs = _messages(value, where, "prompt")
    if msgs[-1]["role"] == "assistant":
        raise DataError(f"{where}: field 'prompt' must end with a user turn, not an assistant turn")
    return tuple(msgs)


def _response(value: Any, where: str, name: str) -> str:
    """A response: a string, or a list of messages holding one assistant turn."""
    if isinstance(value, str):
        return value
    msgs = _messages(value, where, name)
    if len(msgs) != 1 or msgs[0]["role"] != "assistant":
        raise DataError(f"{where}: field '{name}' as messages must be a single assistant turn")
    return msgs[0]["content"]


def _split_conversations(chosen: Any, rejected: Any, where: str) -> tuple[Messages, str, str]:
    """HH-RLHF style: two conversations that differ only in their last assistant turn."""
    if isinstance(chosen, str) and isinstance(rejected, str) and is_hh(chosen) and is_hh(rejected):
        chosen, rejected = parse_hh(chosen, where, "chosen"), parse_hh(rejected, where, "rejected")
    if isinstance(chosen, str) or isinstance(rejected, str):
        raw = any(m in str(x) for x in (chosen, rejected) for m in HH_MARKERS)
        raise DataError(f"{where}: 'chosen' and 'rejected' are text but there is no 'prompt' field"
                        + (" (raw HH transcripts with '\\n\\nHuman:' turns are not read: convert them to lists "
                           "of messages)" if raw else "") + "; give 'prompt', or both as lists of messages")
    a, b = _messages(chosen, where, "chosen"), _messages(rejected, where, "rejected")
    if a[-1]["role"] != "assistant" or b[-1]["role"] != "assistant":
        raise DataError(f"{where}: chosen and rejected conversations must end with an assistant turn")
    if a[:-1] != b[:-1]:
        raise DataError(f"{where}: chosen and rejected conversations differ before their last turn, so the "
                        "shared prompt is unclear; give a separate 'prompt' field")
    if not a[:-1]:
        raise DataError(f"{where}: chosen and rejected conversations hold no prompt before the response")
    return tuple(a[:-1]), a[-1]["content"], b[-1]["content"]


def _number(value: Any, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{where}: {name} must be a finite number, got {value!r}")
    return float(value)


ULTRAFEEDBACK_SCORES = ("overall_score", "fine-grained_score")


def _rating(value: Any) -> float | None:
    """A rating as UltraFeedback writes it ("4", 4, or "N/A"); None when there is none."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _ultrafeedback(row: dict[str, Any], where: str, source: str, aspect: str) -> Ranking:
    """A row with `completions` rated per aspect: one aspect's rating, a score field, or the mean of
    the aspects each response has."""
    prompt = _prompt(row.get("prompt", row.get("instruction")), where)
    raw = row["completions"]
    if not isinstance(raw, list):
        raise DataError(f"{where}: field 'completions' must be a list of objects with 'response'")
    responses, scores = [], []
    for i, c in enumerate(raw):
        if not isinstance(c, dict) or not isinstance(c.get("response"), str):
            raise DataError(f"{where}: completions[{i}] must be an object with a string 'response'")
        notes = c.get("annotations") or {}
        if aspect in ULTRAFEEDBACK_SCORES:
            score = _rating(c.get(aspect))
        elif aspect == "mean":
            values = [v for v in (_rating(a.get("Rating")) for a in notes.values() if isinstance(a, dict))
                      if v is not None]
            score = sum(values) / len(values) if values else None
        else:
            if i == 0 and aspect not in notes:
                raise DataError(f"{where}: completions[0] has no rating for aspect '{aspect}' (has "
                                f"{', '.join(sorted(notes)) or 'none'}; or mean, {', '.join(ULTRAFEEDBACK_SCORES)})")
            score = _rating((notes.get(aspect) or {}).get("Rating"))
        if score is not None and c["response"] not in responses:
            responses.append(c["response"])
            scores.append(score)
    if len(set(scores)) < 2:
        raise Dropped(f"all responses tied ({aspect})" if len(scores) >= 2 else "fewer than 2 rated responses")
    return Ranking(prompt, tuple(responses), tuple(scores), where, source, rated=True)


def to_ranking(record: Record, aspect: str = "mean") -> Ranking:
    """Normalise a pairwise, ranked or UltraFeedback row (rated by `aspect`); DataError naming the
    row and what is wrong, or Dropped for a well-formed row with no preference in it."""
    row, where = record.row, record.where
    source = str(row.get("source", "")) if row.get("source") is not None else ""
    if "completions" in row and ("instruction" in row or "prompt" in row):
        return _ultrafeedback(row, where, source, aspect)
    if "chosen" in row or "rejected" in row:
        for name in ("chosen", "rejected"):
            if row.get(name) is None:
                raise DataError(f"{where}: missing field '{name}'")
        if "prompt" in row:
            prompt = _prompt(row["prompt"], where)
            chosen, rejected = _response(row["chosen"], where, "chosen"), _response(row["rejected"], where, "rejected")
            if not chosen.strip():
                raise DataError(f"{where}: field 'chosen' is empty: an empty answer cannot be the preferred one")
        else:
            prompt, chosen, rejected = _split_conversations(row["chosen"], row["rejected"], where)
        margin = _number(row["margin"], where, "field 'margin'") if row.get("margin") is not None else None
        if chosen == rejected:
            raise DataError(f"{where}: chosen and rejected are the same response")
        return Ranking(prompt, (chosen, rejected), (1.0, 0.0), where, source, margin=margin)
    if "responses" in row:
        if "prompt" not in row:
            raise DataError(f"{where}: missing field 'prompt'")
        prompt = _prompt(row["prompt"], where)
        raw = row["responses"]
        if not isinstance(raw, list) or len(raw) < 2:
            raise DataError(f"{where}: field 'responses' must be a list of at least 2 responses")
        responses = tuple(_response(r, where, f"responses[{i}]") for i, r in enumerate(raw))
        if len(set(responses)) != len(responses):
            raise DataError(f"{where}: field 'responses' holds the same response twice")
        k = len(responses)
        order = row.get("ranking")
        score_key = "scores" if "scores" in row else "ratings" if "ratings" in row else None
        scores: tuple[float, ...] | None = None
        if order is not None:
            if (not isinstance(order, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in order)
                    or sorted(order) != list(range(k))):
                raise DataError(f"{where}: field 'ranking' must list each response index 0..{k - 1} once, best "
                                f"first; got {order!r}")
            by_position = [0.0] * k
            for position, index in enumerate(order):
                by_position[index] = float(k - 1 - position)
            scores = tuple(by_position)
        if score_key:
            values = row[score_key]
            if not isinstance(values, list) or len(values) != k:
                raise DataError(f"{where}: field '{score_key}' must hold one number per response ({k})")
            rated = tuple(_number(v, where, f"{score_key}[{i}]") for i, v in enumerate(values))
            if scores is not None and any((a > b) != (x > y) for a, x in zip(scores, rated)
                                          for b, y in zip(scores, rated) if x != y):
                raise DataError(f"{where}: fields 'ranking' and '{score_key}' contradict each other")
            if len(set(rated)) == 1:
                raise Dropped(f"all responses tied ({score_key})")
            return Ranking(prompt, responses, rated, where, source, rated=True)
        return Ranking(prompt, responses, scores or tuple(float(k - 1 - i) for i in range(k)), where, source)
    raise DataError(f"{where}: cannot tell the format from keys {sorted(row)}; expected prompt+chosen+rejected "
                    "(pairwise), chosen+rejected conversations, prompt+responses (ranked), or "
                    "instruction+completions (UltraFeedback)")


def rankings_to_pairs(ranking: Ranking, adjacent_only: bool = False, rating_margin: bool = False) -> list[Pair]:
    """Every ordered pair (better, worse) of a ranking: k(k-1)/2 pairs for k distinct scores.

    adjacent_only keeps the pairs between neighbouring score levels (k - 1 for a strict ranking).
    Ties give no pair. rating_margin sets each pair's margin to its rating gap (rated data only);
    an explicit pairwise margin is always kept.
    """
    levels = sorted(set(ranking.scores), reverse=True)
    pairs = []
    for i, (ri, si) in enumerate(zip(ranking.responses, ranking.scores)):
        for j, (rj, sj) in enumerate(zip(ranking.responses, ranking.scores)):
            if si <= sj:
                continue
            if adjacent_only and levels.index(sj) - levels.index(si) != 1:
                continue
            margin = ranking.margin
            if margin is None and rating_margin and ranking.rated:
                margin = si - sj
            pairs.append(Pair(ranking.prompt, ri, rj, margin, ranking.where, ranking.source))
    return pairs


# For the unpaired (KTO) reader: a prompt and a response read exactly as in preference rows.
parse_prompt = _prompt
parse_response = _response

"""What is in a data set, before anyone trains on it: `alignkit data report DATA`.

Every row is read as SFT data (Alpaca, chat, prompt/completion, text) or preference data (pairwise,
ranked, UltraFeedback), and the report gives, with the rows behind each figure:
- rows by format and by a grouping field (`source` unless told otherwise), and the malformed ones;
- lengths of instructions and responses in words, and in tokens with the model's tokenizer (and the
  rows longer than the training max_length, which training would cut);
- diversity of the instructions: distinct-1/2 (Li et al. 2016: distinct n-grams over all n-grams),
  and the most common leading verbs with their most common objects, as Self-Instruct's Figure 2
  shows them; the verb is the first word once a polite opener is removed ("Please", "Can you",
  "I need to"), questions are counted under their question word, and the object is the next word
  that is not an article or pronoun: a heuristic, not a parser;
- exact duplicates (same conversation) and near-duplicates (MinHash over word shingles,
  alignkit.data.similarity; pairs listed with their Jaccard similarity);
- rows the safety rules flag (alignkit.safety.data_filter.unsafe_reason);
- empty responses, and responses that look cut off (20 words or more without an ending mark);
- for preference data: the share of ties, and the length bias between chosen and rejected (a
  reward model learns to prefer length when chosen answers are mostly the longer ones: Singhal et
  al. 2023, "A Long Way to Go").
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alignkit.data.formats import detect_format, to_sample
from alignkit.data.preferences import Dropped, to_ranking
from alignkit.data.records import Record, read_records
from alignkit.data.similarity import near_duplicate_pairs, rouge_tokens
from alignkit.errors import DataError

PREFERENCE_KEYS = ("chosen", "rejected", "responses", "completions")
OPENERS = re.compile(r"^(?:(?:please|kindly|hey|hi|hello|quick question|help me out|can you help)[,:!.?]?\s+)*"
                     r"(?:(?:can|could|would|will) you(?: please)?\s+|i (?:need|want|would like)(?: you)? to\s+"
                     r"|help me(?: to)?\s+|let'?s\s+)?", re.IGNORECASE)
QUESTION_WORDS = {"what", "which", "who", "whom", "whose", "why", "how", "when", "where", "is", "are", "was", "were",
                  "do", "does", "did", "can", "could", "should", "would", "will", "has", "have"}
NOT_OBJECTS = {"a", "an", "the", "me", "us", "him", "her", "them", "it", "this", "that", "these", "those", "some",
               "my", "your", "our", "their", "its", "his", "following", "given", "each", "all", "any", "one", "of",
               "to", "for", "up", "out", "down", "about", "and", "in", "on", "with", "i", "you", "we", "they",
               "through", "how", "what", "why", "please", "thanks", "thank", "briefly", "again"}
ENDINGS = tuple('.!?"\')]}`*:;') + ("```",)
CUT_OFF_WORDS = 20


def leading_verb(instruction: str) -> tuple[str, str]:
    """(verb, object) of an instruction by the heuristic above; ("", "") when it has no words."""
    text = OPENERS.sub("", instruction.strip(), count=1)
    words = [w for w in re.findall(r"[a-z][a-z'-]*|\d+", text.lower())]
    if not words:
        return "", ""
    verb = words[0].removesuffix("'s")  # "what's" is "what"
    if verb in QUESTION_WORDS:
        return verb, ""
    obj = next((w for w in words[1:5] if w not in NOT_OBJECTS and not w.isdigit()), "")
    return verb, obj


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams of the texts' words (0 when there are none)."""
    grams: Counter = Counter()
    for t in texts:
        w = rouge_tokens(t)
        grams.update(tuple(w[i:i + n]) for i in range(len(w) - n + 1))
    total = sum(grams.values())
    return len(grams) / total if total else 0.0


def looks_cut_off(response: str) -> bool:
    text = response.rstrip()
    return len(text.split()) >= CUT_OFF_WORDS and not text.endswith(ENDINGS)


def _row_texts(record: Record) -> dict[str, Any]:
    """The row read as SFT or preference data: kind, format, instruction, answer (the response, or
    the chosen one; empty for an instruction alone), and for preference rows chosen and rejected."""
    row = record.row
    if any(k in row for k in PREFERENCE_KEYS):
        try:
            r = to_ranking(record)
        except Dropped as exc:
            return {"kind": "preference", "format": "ranked", "tie": True, "why": str(exc)}
        fmt = "ultrafeedback" if "completions" in row else "pairwise" if len(r.responses) == 2 and "responses" not in row \
            else "ranked"
        users = [m["content"] for m in r.prompt if m["role"] == "user"]
        best = max(range(len(r.responses)), key=lambda i: r.scores[i])
        worst = min(range(len(r.responses)), key=lambda i: r.scores[i])
        return {"kind": "preference", "format": fmt, "instruction": users[-1] if users else "",
                "chosen": r.responses[best], "rejected": r.responses[worst], "answer": r.responses[best],
                "tie": len(set(r.scores)) < len(r.scores), "prompt": r.prompt}
    if isinstance(row.get("instruction"), str) and not ({"output", "messages", "conversations", "prompt", "text"} & set(row)):
        # instructions alone (what `alignkit data self-instruct` keeps before answering them)
        return {"kind": "instructions", "format": "instruction only", "instruction": row["instruction"], "answer": ""}
    sample = to_sample(record)
    users = [m["content"] for m in sample.messages if m["role"] == "user"]
    replies = [m["content"] for m in sample.messages[sample.response_from:] if m["role"] == "assistant"]
    return {"kind": "sft", "format": detect_format(row) or "text", "instruction": users[0] if users else "",
            "answer": "\n".join(replies), "sample": sample}


def analyse(path: str | Path, tokenizer: Any = None, max_length: int = 0, group: str = "source",
            near_threshold: float = 0.8, safety_filter: Any = None, top: int = 20, max_pairs: int = 50) -> dict[str, Any]:
    """The report's figures for a data file (see the module docstring); JSON-ready."""
    records = read_records(path)
    rows, malformed = [], []
    for r in records:
        try:
            rows.append({**_row_texts(r), "where": r.where, "group": str(r.row.get(group, "")) if group else ""})
        except DataError as exc:
            malformed.append({"where": r.where, "error": str(exc)})
    out: dict[str, Any] = {"path": str(path), "rows": len(records), "malformed": len(malformed),
                           "malformed_examples": malformed[:10],
                           "by_format": dict(Counter(f"{r['kind']}: {r['format']}" for r in rows).most_common())}
    groups = Counter(r["group"] for r in rows if r["group"])
    if groups:
        out["by_group"] = {"key": group, "counts": dict(groups.most_common())}
    usable = [r for r in rows if "instruction" in r]
    instructions = [r["instruction"] for r in usable]
    answered = [r for r in usable if r["kind"] != "instructions"]
    responses = [r["answer"] for r in answered]
    out["lengths"] = {"instruction_words": _lengths([len(t.split()) for t in instructions]),
                      "response_words": _lengths([len(t.split()) for t in responses])}
    if tokenizer is not None:
        itok = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in instructions]
        rtok = [len(tokenizer(r["answer"], add_special_tokens=False)["input_ids"]) for r in usable]
        out["lengths"]["instruction_tokens"] = _lengths(itok)
        out["lengths"]["response_tokens"] = _lengths([n for r, n in zip(usable, rtok) if r["kind"] != "instructions"])
        if max_length:
            over = [r["where"] for r, a, b in zip(usable, itok, rtok) if a + b > max_length]
            out["longer_than_max_length"] = {"max_length": max_length, "rows": len(over), "examples": over[:10]}
    out["diversity"] = diversity(instructions, top)
    out["duplicates"] = duplicates(usable, near_threshold, max_pairs)
    out["empty_responses"] = _where(answered, lambda r: not r["answer"].strip())
    out["cut_off_responses"] = _where(answered, lambda r: looks_cut_off(r["answer"]))
    if safety_filter is not None:
        out["unsafe"] = unsafe_rows(usable, safety_filter)
    prefs = [r for r in rows if r["kind"] == "preference"]
    if prefs:
        out["preference"] = preference_figures(prefs, tokenizer)
    return out


def _lengths(values: list[int]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "values": []}
    s = sorted(values)
    q = lambda p: s[min(len(s) - 1, int(p * len(s)))]  # noqa: E731
    return {"n": len(s), "mean": sum(s) / len(s), "median": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": s[-1],
            "values": values}


def _where(rows: list[dict[str, Any]], test: Any) -> dict[str, Any]:
    hits = [r["where"] for r in rows if test(r)]
    return {"rows": len(hits), "examples": hits[:10]}


def diversity(instructions: Sequence[str], top: int = 20) -> dict[str, Any]:
    verbs: Counter = Counter()
    objects: dict[str, Counter] = defaultdict(Counter)
    for t in instructions:
        verb, obj = leading_verb(t)
        if verb:
            verbs[verb] += 1
            if obj:
                objects[verb][obj] += 1
    return {"instructions": len(instructions), "unique_instructions": len(set(instructions)),
            "distinct_1": distinct_n(instructions, 1), "distinct_2": distinct_n(instructions, 2),
            "leading_verbs": [{"verb": v, "rows": n, "objects": dict(objects[v].most_common(4))}
                              for v, n in verbs.most_common(top)],
            "distinct_leading_verbs": len(verbs)}


def duplicates(rows: list[dict[str, Any]], threshold: float, max_pairs: int) -> dict[str, Any]:
    texts = [f"{r['instruction']}\n{r['answer']}" for r in rows]
    first: dict[str, int] = {}
    exact = []
    for i, t in enumerate(texts):
        if t in first:
            exact.append({"row": rows[i]["where"], "same_as": rows[first[t]]["where"]})
        else:
            first.setdefault(t, i)
    same_instruction = len(rows) - len({r["instruction"] for r in rows})
    near = [(i, j, s) for i, j, s in near_duplicate_pairs(texts, threshold) if texts[i] != texts[j]]
    in_near = {k for i, j, _ in near for k in (i, j)}
    return {"exact": len(exact), "exact_examples": exact[:10], "same_instruction": same_instruction,
            "near_threshold": threshold, "near_pairs": len(near), "rows_in_near_pairs": len(in_near),
            "near_examples": [{"a": rows[i]["where"], "b": rows[j]["where"], "jaccard": round(s, 3),
                               "text_a": texts[i][:160], "text_b": texts[j][:160]}
                              for i, j, s in sorted(near, key=lambda x: -x[2])[:max_pairs]],
            "near_jaccard": [round(s, 3) for _, _, s in near]}


def unsafe_rows(rows: list[dict[str, Any]], safety_filter: Any) -> dict[str, Any]:
    """SFT rows the training-data filter would drop; preference rows whose chosen answer it blocks."""
    from alignkit.safety.data_filter import unsafe_reason
    from alignkit.safety.refusal import is_refusal

    hits: Counter = Counter()
    examples = []
    for r in rows:
        if "sample" in r:
            found = unsafe_reason(r["sample"], safety_filter)
            reason = found[0] if found else ""
        elif r["kind"] == "instructions":
            v = safety_filter.check_input(r["instruction"])
            reason = f"unsafe request ({v.category})" if v.blocked else ""
        else:
            v = safety_filter.check_output(r["chosen"])
            reason = f"unsafe chosen answer ({v.category})" if v.blocked and not is_refusal(r["chosen"]) else ""
        if reason:
            hits[reason] += 1
            if len(examples) < 10:
                examples.append({"where": r["where"], "reason": reason})
    return {"rows": sum(hits.values()), "by_reason": dict(hits.most_common()), "examples": examples}


def preference_figures(rows: list[dict[str, Any]], tokenizer: Any = None) -> dict[str, Any]:
    ties = [r for r in rows if r.get("tie")]
    pairs = [r for r in rows if "chosen" in r]
    cw = [len(r["chosen"].split()) for r in pairs]
    rw = [len(r["rejected"].split()) for r in pairs]
    out = {"rows": len(rows), "tie_share": len(ties) / len(rows), "ties": len(ties),
           "chosen_longer_share": sum(a > b for a, b in zip(cw, rw)) / len(pairs) if pairs else 0.0,
           "same_length_share": sum(a == b for a, b in zip(cw, rw)) / len(pairs) if pairs else 0.0,
           "mean_chosen_words": sum(cw) / len(cw) if cw else 0.0, "mean_rejected_words": sum(rw) / len(rw) if rw else 0.0,
           "chosen_words": cw, "rejected_words": rw}
    if tokenizer is not None and pairs:
        ct = [len(tokenizer(r["chosen"], add_special_tokens=False)["input_ids"]) for r in pairs]
        rt = [len(tokenizer(r["rejected"], add_special_tokens=False)["input_ids"]) for r in pairs]
        out["chosen_longer_share_tokens"] = sum(a > b for a, b in zip(ct, rt)) / len(pairs)
    return out


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The figures a person reads first, one line each."""
    d, dup = report["diversity"], report["duplicates"]
    lines = [f"{report['path']}: {report['rows']} rows ({', '.join(f'{n} {k}' for k, n in report['by_format'].items())})"
             + (f"; {report['malformed']} malformed" if report["malformed"] else "")]
    li, lr = report["lengths"]["instruction_words"], report["lengths"]["response_words"]
    if li["n"]:
        lines.append(f"lengths (words): instructions median {li['median']} (p90 {li['p90']}, max {li['max']})"
                     + (f"; responses median {lr['median']} (p90 {lr['p90']}, max {lr['max']})" if lr["n"] else ""))
    ti, tr = report["lengths"].get("instruction_tokens"), report["lengths"].get("response_tokens")
    if ti and ti["n"]:
        lines.append(f"  in the model's tokens: instructions median {ti['median']} (p90 {ti['p90']}, max {ti['max']})"
                     + (f", responses median {tr['median']} (p90 {tr['p90']}, max {tr['max']})" if tr and tr["n"] else "")
                     + (f"; {report['longer_than_max_length']['rows']} rows over {report['longer_than_max_length']['max_length']}"
                        if "longer_than_max_length" in report else ""))
    verbs = ", ".join(f"{v['verb']} {v['rows']}" for v in d["leading_verbs"][:8])
    lines.append(f"diversity: {d['unique_instructions']} unique instructions of {d['instructions']}; distinct-1 "
                 f"{d['distinct_1']:.3f}, distinct-2 {d['distinct_2']:.3f}; {d['distinct_leading_verbs']} leading "
                 f"words, top: {verbs}")
    lines.append(f"duplicates: {dup['exact']} exact, {dup['same_instruction']} repeated instructions, "
                 f"{dup['near_pairs']} near-duplicate pairs (Jaccard >= {dup['near_threshold']}) over "
                 f"{dup['rows_in_near_pairs']} rows")
    lines.append(f"responses: {report['empty_responses']['rows']} empty, {report['cut_off_responses']['rows']} look cut off")
    if "unsafe" in report:
        lines.append(f"safety rules flag {report['unsafe']['rows']} rows"
                     + "".join(f"; {n} {k}" for k, n in report["unsafe"]["by_reason"].items()))
    if "preference" in report:
        p = report["preference"]
        lines.append(f"preference: ties {100 * p['tie_share']:.1f}%; chosen longer than rejected in "
                     f"{100 * p['chosen_longer_share']:.1f}% of pairs (mean {p['mean_chosen_words']:.1f} vs "
                     f"{p['mean_rejected_words']:.1f} words)")
    return lines

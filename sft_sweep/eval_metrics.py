"""Answer-level metrics on generated text, as pure functions of (prediction, reference).

- json_valid: the answer parses as JSON; json_keys: ...and has every top-level key of the reference.
- exact_match: for short exact references (a number or a label of at most MAX_EXACT_CHARS characters
  without spaces, or any reference that is itself JSON), the stripped answer equals the reference
  (JSON compared as parsed values).
- usable: the answer is non-empty, ended with the end-of-turn token within max_new_tokens, and is not
  degenerate repetition: no word n-gram (n = 1..4) repeated REPEAT_LIMIT or more times in a row, and
  no more than half of the answer made of copies of one line.
- exact_match_by_tag: per task kind (the rows' tags, e.g. sentiment, arithmetic, zh), the share of
  answers equal to the reference (JSON compared as parsed values), whatever the reference's length.
- answer_diversity: distinct answers / distinct references. A model that gives (nearly) one answer
  to every question scores well on JSON validity and badly here; below COLLAPSED it is flagged.
"""

import json
import re
from collections import Counter, defaultdict

MAX_EXACT_CHARS = 16
REPEAT_LIMIT = 4
COLLAPSED = 0.5


def parse_json(text: str):
    try:
        return json.loads(text.strip()), True
    except (json.JSONDecodeError, ValueError):
        return None, False


def is_json_reference(reference: str) -> bool:
    value, ok = parse_json(reference)
    return ok and isinstance(value, (dict, list))


def json_scores(prediction: str, reference: str) -> tuple[bool, bool]:
    """(parses, parses and has the reference's top-level keys)."""
    value, ok = parse_json(prediction)
    if not ok:
        return False, False
    ref, _ = parse_json(reference)
    if isinstance(ref, dict):
        return True, isinstance(value, dict) and set(ref) <= set(value)
    return True, type(value) is type(ref)


def is_exact_reference(reference: str) -> bool:
    ref = reference.strip()
    return is_json_reference(ref) or (0 < len(ref) <= MAX_EXACT_CHARS and " " not in ref)


def exact_match(prediction: str, reference: str) -> bool:
    if is_json_reference(reference):
        value, ok = parse_json(prediction)
        return ok and value == parse_json(reference)[0]
    return prediction.strip() == reference.strip()


def is_degenerate(text: str) -> bool:
    words = text.split()
    for n in range(1, 5):
        for start in range(len(words) - n * REPEAT_LIMIT + 1):
            gram = words[start:start + n]
            if all(words[start + k * n:start + (k + 1) * n] == gram for k in range(1, REPEAT_LIMIT)):
                return True
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) >= 4:
        _, count = Counter(lines).most_common(1)[0]
        if count * 2 > len(lines):
            return True
    # character-level loops with no spaces (e.g. "abcabcabcabc..." or Chinese text)
    return bool(re.search(r"(.{2,20}?)\1{%d,}" % (REPEAT_LIMIT * 2 - 1), text))


def usable(prediction: str, ended: bool) -> bool:
    return bool(prediction.strip()) and ended and not is_degenerate(prediction)


def answer_diversity(samples: list[dict]) -> dict:
    predictions = Counter(s["prediction"].strip() for s in samples)
    references = {s["reference"].strip() for s in samples}
    top, count = predictions.most_common(1)[0] if predictions else ("", 0)
    diversity = len(predictions) / len(references) if references else None
    return {"answer_diversity": diversity, "distinct_answers": len(predictions), "distinct_references": len(references),
            "top_answer": top, "top_answer_share": count / len(samples) if samples else None,
            "collapsed_answers": diversity is not None and diversity < COLLAPSED}


def exact_match_by_tag(samples: list[dict]) -> dict:
    by_tag = defaultdict(list)
    for s in samples:
        for tag in s.get("tags") or []:
            by_tag[tag].append(exact_match(s["prediction"], s["reference"]))
    return {tag: sum(hits) / len(hits) for tag, hits in sorted(by_tag.items())}


def summarize(samples: list[dict]) -> dict:
    """Rates over generated samples, each {prediction, reference, ended, tags}."""
    json_refs = [s for s in samples if is_json_reference(s["reference"])]
    exact_refs = [s for s in samples if is_exact_reference(s["reference"])]
    scores = [json_scores(s["prediction"], s["reference"]) for s in json_refs]
    return {
        "json_validity": sum(valid for valid, _ in scores) / len(scores) if scores else None,
        "json_key_match": sum(keys for _, keys in scores) / len(scores) if scores else None,
        "exact_match": (sum(exact_match(s["prediction"], s["reference"]) for s in exact_refs) / len(exact_refs)
                        if exact_refs else None),
        "exact_match_by_tag": exact_match_by_tag(samples),
        "usability": sum(usable(s["prediction"], s["ended"]) for s in samples) / len(samples) if samples else None,
        **answer_diversity(samples),
        "n_samples": len(samples), "n_json": len(json_refs), "n_exact": len(exact_refs),
    }

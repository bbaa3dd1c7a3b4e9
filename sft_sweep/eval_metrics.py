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

from sft_sweep import metric_names as names

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
    return {names.ANSWER_DIVERSITY: diversity, names.DISTINCT_ANSWERS: len(predictions),
            names.DISTINCT_REFERENCES: len(references), names.TOP_ANSWER: top,
            names.TOP_ANSWER_SHARE: count / len(samples) if samples else None,
            names.COLLAPSED_ANSWERS: diversity is not None and diversity < COLLAPSED}


def score(sample: dict) -> dict:
    """One answer's scores (metric_names.SAMPLE_SCORES), from {prediction, reference, ended}: computed once,
    kept with the answer in eval_samples.jsonl."""
    prediction, reference = sample["prediction"], sample["reference"]
    json_valid = json_keys = None
    if is_json_reference(reference):
        json_valid, json_keys = json_scores(prediction, reference)
    return {names.EXACT: exact_match(prediction, reference), names.JSON_VALID: json_valid,
            names.JSON_KEYS: json_keys, names.USABLE: usable(prediction, sample.get("ended", True))}


def rate(flags) -> float | None:
    flags = list(flags)
    return sum(flags) / len(flags) if flags else None


def summarize(samples: list[dict]) -> dict:
    """Rates over scored samples (each {prediction, reference, ended, tags} plus `score`'s keys)."""
    json_refs = [s for s in samples if s[names.JSON_VALID] is not None]
    exact_refs = [s for s in samples if is_exact_reference(s["reference"])]
    by_tag = defaultdict(list)
    for s in samples:
        for tag in s.get("tags") or []:
            by_tag[tag].append(s[names.EXACT])
    return {
        names.JSON_VALIDITY: rate(s[names.JSON_VALID] for s in json_refs),
        names.JSON_KEY_MATCH: rate(s[names.JSON_KEYS] for s in json_refs),
        names.EXACT_MATCH: rate(s[names.EXACT] for s in exact_refs),
        names.EXACT_MATCH_BY_TAG: {tag: rate(hits) for tag, hits in sorted(by_tag.items())},
        names.USABILITY: rate(s[names.USABLE] for s in samples),
        **answer_diversity(samples),
        names.N_SAMPLES: len(samples), names.N_JSON: len(json_refs), names.N_EXACT: len(exact_refs),
    }

"""Answer metrics on handcrafted predictions with known answers."""

import pytest

from sft_sweep import metric_names as names
from sft_sweep.eval_metrics import exact_match, is_degenerate, json_scores, score, summarize, usable


def test_json_validity_and_keys():
    ref = '{"sentiment": "positive"}'
    assert json_scores('{"sentiment": "negative"}', ref) == (True, True)
    assert json_scores('{"label": "positive"}', ref) == (True, False)
    assert json_scores('{"sentiment": "positive"', ref) == (False, False)  # unclosed
    assert json_scores("positive", ref) == (False, False)
    assert json_scores(' {"sentiment": "positive", "score": 1}\n', ref) == (True, True)


def test_exact_match():
    assert exact_match(" 42\n", "42") and not exact_match("42.0", "42")
    assert exact_match('{"sentiment":"positive"}', '{"sentiment": "positive"}')  # compared as JSON
    assert not exact_match('{"sentiment": "negative"}', '{"sentiment": "positive"}')


@pytest.mark.parametrize("text, degenerate", [
    ("The answer is 5.", False),
    ("two two two two", True),                       # a word 4 times in a row
    ("two two two", False),
    ("is it is it is it is it", True),               # a bigram 4 times
    ("a b c a b c a b c", False),                    # a trigram only 3 times
    ("a b c a b c a b c a b c", True),
    ("哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈", True),        # a character loop without spaces
    ("line\nline\nline\nother", True),               # most lines the same
    ("小明有5个苹果。", False),
])
def test_degenerate_repetition(text, degenerate):
    assert is_degenerate(text) is degenerate


def test_usable_needs_text_end_token_and_no_loop():
    assert usable("5", ended=True)
    assert not usable("5", ended=False)  # ran out of max_new_tokens
    assert not usable("  ", ended=True)
    assert not usable("go go go go go", ended=True)


def test_summarize_rates():
    samples = [
        {"prediction": '{"sentiment": "positive"}', "reference": '{"sentiment": "positive"}', "ended": True},
        {"prediction": '{"sentiment": "neg', "reference": '{"sentiment": "negative"}', "ended": False},
        {"prediction": "8", "reference": "8", "ended": True},
        {"prediction": "9", "reference": "8", "ended": True},
        {"prediction": "It is 18 degrees in Paris.", "reference": "It is 18 degrees Celsius in Paris.", "ended": True},
    ]
    s = scored_summary(samples)
    assert (s[names.N_JSON], s[names.JSON_VALIDITY], s[names.JSON_KEY_MATCH]) == (2, 0.5, 0.5)
    assert (s[names.N_EXACT], s[names.EXACT_MATCH]) == (4, 0.5)  # 2 JSON + 2 short answers; the sentence is not exact
    assert s[names.USABILITY] == 0.8


def scored_summary(samples):
    return summarize([{**s, **score(s)} for s in samples])


def test_each_answer_keeps_its_own_scores():
    assert score({"prediction": '{"sentiment": "neg', "reference": '{"sentiment": "negative"}', "ended": False}) == {
        names.EXACT: False, names.JSON_VALID: False, names.JSON_KEYS: False, names.USABLE: False}
    assert score({"prediction": "8", "reference": "8", "ended": True}) == {
        names.EXACT: True, names.JSON_VALID: None, names.JSON_KEYS: None, names.USABLE: True}  # not JSON: no score


def sample(prediction, reference, tags=()):
    return {"prediction": prediction, "reference": reference, "ended": True, "tags": list(tags)}


def test_a_constant_answer_is_flagged_even_when_it_is_valid_json():
    labels = [f'{{"sentiment": "{"positive" if i % 2 else "negative"}"}}' for i in range(20)]
    refs = labels + [str(i) for i in range(30)]
    constant = scored_summary([sample('{"sentiment": "negative"}', r, ["sentiment" if "{" in r else "arithmetic"])
                          for r in refs])
    assert constant[names.JSON_VALIDITY] == 1.0  # the old headline looked perfect...
    assert constant[names.COLLAPSED_ANSWERS] and constant[names.ANSWER_DIVERSITY] == 1 / 32  # ...it is one answer
    assert constant[names.TOP_ANSWER] == '{"sentiment": "negative"}' and constant[names.TOP_ANSWER_SHARE] == 1.0
    assert constant[names.EXACT_MATCH_BY_TAG] == {"arithmetic": 0.0, "sentiment": 0.5}
    right = scored_summary([sample(r, r, ["x"]) for r in refs])
    assert not right[names.COLLAPSED_ANSWERS] and right[names.ANSWER_DIVERSITY] == 1.0
    assert right[names.EXACT_MATCH_BY_TAG] == {"x": 1.0}


def test_exact_match_by_tag_counts_every_tag_of_a_sample():
    scores = scored_summary([sample("5", "5", ["arithmetic", "zh"]), sample("6", "7", ["arithmetic"]),
                             sample("It is 18 degrees.", "It is 18 degrees.", ["tool_call"])])
    assert scores[names.EXACT_MATCH_BY_TAG] == {"arithmetic": 0.5, "tool_call": 1.0, "zh": 1.0}

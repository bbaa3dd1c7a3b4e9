"""Answer metrics on handcrafted predictions with known answers."""

import pytest

from sft_sweep.eval_metrics import exact_match, is_degenerate, json_scores, summarize, usable


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
    s = summarize(samples)
    assert (s["n_json"], s["json_validity"], s["json_key_match"]) == (2, 0.5, 0.5)
    assert (s["n_exact"], s["exact_match"]) == (4, 0.5)  # 2 JSON + 2 short answers; the sentence is not exact
    assert s["usability"] == 0.8

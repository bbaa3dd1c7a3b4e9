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


def sample(prediction, reference, tags=()):
    return {"prediction": prediction, "reference": reference, "ended": True, "tags": list(tags)}


def test_a_constant_answer_is_flagged_even_when_it_is_valid_json():
    labels = [f'{{"sentiment": "{"positive" if i % 2 else "negative"}"}}' for i in range(20)]
    refs = labels + [str(i) for i in range(30)]
    constant = summarize([sample('{"sentiment": "negative"}', r, ["sentiment" if "{" in r else "arithmetic"])
                          for r in refs])
    assert constant["json_validity"] == 1.0  # the old headline looked perfect...
    assert constant["collapsed_answers"] and constant["answer_diversity"] == 1 / 32  # ...it is one answer
    assert constant["top_answer"] == '{"sentiment": "negative"}' and constant["top_answer_share"] == 1.0
    assert constant["exact_match_by_tag"] == {"arithmetic": 0.0, "sentiment": 0.5}
    right = summarize([sample(r, r, ["x"]) for r in refs])
    assert not right["collapsed_answers"] and right["answer_diversity"] == 1.0
    assert right["exact_match_by_tag"] == {"x": 1.0}


def test_exact_match_by_tag_counts_every_tag_of_a_sample():
    scores = summarize([sample("5", "5", ["arithmetic", "zh"]), sample("6", "7", ["arithmetic"]),
                        sample("It is 18 degrees.", "It is 18 degrees.", ["tool_call"])])
    assert scores["exact_match_by_tag"] == {"arithmetic": 0.5, "tool_call": 1.0, "zh": 1.0}

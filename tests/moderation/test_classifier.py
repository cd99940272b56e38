"""The classifier: its quality on a labelled table, the fast path against the library, the spam signals."""
from __future__ import annotations

from decimal import Decimal

import pytest

from tasks.moderation import classifier
from tasks.moderation.classifier import MAX_TEXT_CHARS, MODEL, Signals, bounded, link_density_signal, \
    repetition_signal, signals
from tests.moderation import texts


def test_precision_and_recall_on_the_labelled_table():
    assert len(texts.TABLE) >= 40
    assert {label for _, label in texts.TABLE} == {True, False}
    precision, recall = texts.precision_recall()
    print(f"\nmoderation precision={precision:.2f} recall={recall:.2f} "
          f"(threshold {texts.default_threshold()}, {len(texts.TABLE)} texts)")
    assert precision >= 0.6 and recall >= 0.6


def test_words_with_a_profane_substring_are_not_flagged():
    tricky = [t for t in texts.CLEAN if any(w in t for w in ("Scunthorpe", "assessment", "Cocktail", "Middlesex",
                                                             "Essex", "analyst"))]
    assert len(tricky) >= 5
    assert texts.flagged(tricky) == [False] * len(tricky)


def test_precision_recall_reflects_the_threshold():
    # Everything scores at most 1.00: at threshold 1 nothing is flagged; at 0 everything not scoring 0.00 is.
    assert texts.precision_recall(threshold=1.0) == (0.0, 0.0)
    precision, recall = texts.precision_recall(threshold=0.0)
    assert recall == 1.0 and precision < 1.0


def test_the_fast_path_equals_the_library_on_the_table():
    table = [t for t, _ in texts.TABLE]
    fast, library = MODEL.probabilities(table), MODEL.library_probabilities(table)
    assert len(fast) == len(library) == len(table)
    assert fast == pytest.approx(library, abs=1e-9, rel=0)
    assert MODEL._linear is not None      # the fast path really ran, not the fallback
    assert MODEL.probabilities([]) == []


def test_the_fast_path_equals_the_library_one_text_at_a_time():
    for text in (texts.CLEAN[0], texts.OFFENSIVE[0], "", "   ", "🙂 ok"):
        assert MODEL.probabilities([text]) == pytest.approx(MODEL.library_probabilities([text]), abs=1e-9, rel=0)


def test_a_long_text_is_bounded_to_its_head_and_tail():
    clean = "what a lovely day at the park with the family "
    middle = " you stupid fucking bitch " * 40
    long_text = clean * 100 + middle + clean * 40
    assert len(long_text) > MAX_TEXT_CHARS
    capped = bounded(long_text)
    assert len(capped) <= MAX_TEXT_CHARS
    assert capped.startswith(long_text[:3000]) and capped.endswith(long_text[-1000:])
    assert "fucking" not in capped            # the insults sit in the part that is cut
    (fast,) = MODEL.probabilities([long_text])
    (reference,) = MODEL.library_probabilities([capped])
    (unbounded,) = MODEL.library_probabilities([long_text])
    assert fast == pytest.approx(reference, abs=1e-9, rel=0)
    assert abs(fast - unbounded) > 0.1        # so the bound really changed what was scored
    assert bounded(clean) == clean
    exactly = "x" * MAX_TEXT_CHARS
    assert bounded(exactly) == exactly


def test_a_long_text_of_links_is_bounded_before_link_density():
    spam = "https://spam.example/a " * 2000
    assert len(spam) > MAX_TEXT_CHARS
    got = signals(spam, 0)
    assert got.link_density == link_density_signal(bounded(spam)) == 1.0


def test_repetition_signal():
    assert repetition_signal(0) == 0.0
    assert repetition_signal(1) == 0.5
    assert repetition_signal(2) == 0.75
    assert repetition_signal(3) == 0.875
    assert repetition_signal(-1) == 0.0
    values = [repetition_signal(n) for n in range(10)]
    assert values == sorted(values) and all(0 <= v < 1 for v in values)


def test_link_density_signal():
    assert link_density_signal("nice photo, see more at https://example.com/gallery") == 0.0   # one link: ordinary
    assert link_density_signal("no links here at all") == 0.0
    assert link_density_signal("") == 0.0
    # Two links in twelve words: 0.167 links per word, under 0.2.
    assert link_density_signal("read https://a.example and www.b.example before the meeting "
                               "tomorrow morning at nine please") == 0.0
    assert link_density_signal("cheap pills https://x.example https://y.example www.z.example") == 1.0   # 0.6/word
    mid = link_density_signal("buy now https://x.example https://y.example today friends please")  # 2/7 = 0.286
    assert mid == pytest.approx((2 / 7 - 0.2) / 0.3)
    assert link_density_signal("HTTPS://A.EXAMPLE HTTP://B.EXAMPLE") == 1.0


def test_many_links_are_flagged_and_a_single_link_is_not():
    threshold = Decimal("0.8")
    spam = "free money https://a.example https://b.example https://c.example www.d.example"
    assert signals(spam, 0).link_density == 1.0 and signals(spam, 0).score > threshold
    single = "my holiday pictures are up https://photos.example/album"
    assert signals(single, 0).link_density == 0.0 and signals(single, 0).score <= threshold


@pytest.mark.parametrize("text", [t for t, _ in texts.TABLE][::7] + ["", "https://a.b https://c.d"])
@pytest.mark.parametrize("repeats", [0, 1, 3, 50])
def test_the_score_is_in_0_1_with_two_decimals(text, repeats):
    got = signals(text, repeats)
    score = got.score
    assert isinstance(score, Decimal)
    assert Decimal("0") <= score <= Decimal("1")
    assert score.as_tuple().exponent == -2
    expected = 1 - (1 - got.profanity) * (1 - got.repetition) * (1 - got.link_density)
    assert abs(float(score) - expected) <= 0.005 + 1e-12
    assert set(got.as_dict()) == {"profanity", "repetition", "link_density"}


def test_signals_combine_as_independent_evidence():
    assert Signals(0.0, 0.0, 0.0).score == Decimal("0.00")
    assert Signals(1.0, 0.0, 0.0).score == Decimal("1.00")
    assert Signals(0.5, 0.5, 0.0).score == Decimal("0.75")
    assert Signals(0.5, 0.5, 0.5).score == Decimal("0.88")        # 0.875 rounds half up
    assert Signals(0.001, 0.0, 0.0).score == Decimal("0.00")
    assert Signals(0.996, 0.0, 0.0).score == Decimal("1.00")
    # Repetition raises the score of the same text.
    text = texts.CLEAN[3]
    assert signals(text, 0).score < signals(text, 1).score < signals(text, 3).score


def test_the_model_warms_without_error():
    model = classifier.ProfanityModel()
    model.warm()
    assert model._linear is not None

"""A fixed, labelled table of short social-media texts for the moderation classifier.

``OFFENSIVE`` lines carry profanity or insults aimed at someone; ``CLEAN`` lines are
ordinary posts, including words that contain a profane substring ("Scunthorpe",
"assessment", "cocktail") or are merely blunt. ``precision_recall`` scores the whole
table with the production signals and threshold, for the test and for a benchmark.
"""
from __future__ import annotations

CLEAN = (
    "Scunthorpe United won again tonight, what a match!",
    "Just finished my quarterly assessment, feeling good about it",
    "Cocktail hour on the balcony, anyone want to join?",
    "Happy birthday Sarah, hope your day is amazing",
    "The sunset at the beach was absolutely stunning tonight",
    "Can anyone recommend a good book for a long flight?",
    "I passed my driving test on the first try!",
    "Our cat knocked the Christmas tree over again",
    "Thanks everyone for the kind words after the surgery",
    "Does anyone know if the library is open on Sunday?",
    "Homemade lasagna tonight, recipe in the comments",
    "The traffic on the highway this morning was terrible",
    "Middlesex county fair starts this weekend, bring the kids",
    "My grandmother turns ninety today, so proud of her",
    "I disagree with the new parking policy, it hurts small shops",
    "Grapes of Wrath is still the best novel I read in school",
    "The analyst's assessment of the market was spot on",
    "Spent the afternoon hiking in Essex with the dog",
    "Cheers to twenty years of friendship, love you all",
    "Weather looks grim for the game tomorrow, bring umbrellas",
    "New blog post about sourdough starters is up",
    "That documentary about octopuses blew my mind",
)

OFFENSIVE = (
    "you are a fucking idiot and everyone hates you",
    "shut up you stupid bitch",
    "what a load of shit, the mods here are useless assholes",
    "go kill yourself nobody wants you here",
    "this guy is a total dickhead",
    "fuck off and never come back",
    "you absolute moron, learn to read",
    "eat shit loser",
    "what a pathetic piece of crap you are",
    "screw you and your ugly face, you worthless bastard",
    "your mom is a whore",
    "stop posting this bullshit you clown",
    "lol you're such a retard",
    "damn you are one dumb motherfucker",
    "nobody cares about your crappy opinion, dumbass",
    "shut your mouth you filthy slut",
    "get lost you pathetic prick",
    "this post is fucking garbage",
)

TABLE: tuple[tuple[str, bool], ...] = tuple((t, False) for t in CLEAN) + tuple((t, True) for t in OFFENSIVE)


def default_threshold() -> float:
    import settings

    return settings.current().moderation_hide_threshold


def flagged(texts, threshold: float | None = None) -> list[bool]:
    """``score > threshold`` for each text as a first post (no repeats), as ``score_content`` decides."""
    from decimal import Decimal

    from tasks.moderation.classifier import signals

    limit = Decimal(str(default_threshold() if threshold is None else threshold))
    return [signals(text, 0).score > limit for text in texts]


def precision_recall(threshold: float | None = None) -> tuple[float, float]:
    """(precision, recall) of flagging the offensive lines of ``TABLE``."""
    predicted = flagged([text for text, _ in TABLE], threshold)
    labels = [offensive for _, offensive in TABLE]
    true_pos = sum(1 for p, y in zip(predicted, labels) if p and y)
    false_pos = sum(1 for p, y in zip(predicted, labels) if p and not y)
    false_neg = sum(1 for p, y in zip(predicted, labels) if not p and y)
    precision = true_pos / (true_pos + false_pos) if true_pos + false_pos else 0.0
    recall = true_pos / (true_pos + false_neg) if true_pos + false_neg else 0.0
    return precision, recall

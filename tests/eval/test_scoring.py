"""Answer parsing and scoring against hand-worked replies: the option letter in the forms chat models write it, chat
tokens and markdown around it, prose that merely starts with a capital letter, free and numeric answers, and the
agreement rule of the comparison mode."""

import pytest

from videorope_trt.eval.runner import agreement
from videorope_trt.eval.scoring import clean, parse_choice, score

LETTER_REPLIES = [
    ("B", "B"), ("(B)", "B"), ("B.", "B"), ("B. Sky", "B"), ("B) Sky", "B"), ("[B]", "B"), ("**B**", "B"),
    ("The answer is B", "B"), ("The answer is (C).", "C"), ("Answer: D", "D"), ("Option B", "B"),
    ("The correct answer is: B. Sky", "B"), ("I think the answer is A dog", "A"),
    ("B<|im_end|>", "B"), ("<|im_start|>assistant\nC<|im_end|>", "C"), ("Assistant: D", "D"), ("D</s>", "D"),
    ("B\n\nExplanation: the red one is on the left", "B"), ("b", "B"), ("c.", "C"), ("Answer: b", "B"),
    ("It shows a dog (C) near the sea", "C"),
    # no answer: prose opening with a capital letter, a letter that is no option, nothing at all
    ("A dog is shown.", None), ("the answer is a red circle", None), ("E", None), ("(E)", None), ("", None),
    ("<|im_end|>", None), ("I cannot tell.", None),
]


@pytest.mark.parametrize("reply, letter", LETTER_REPLIES)
def test_option_letter_parsed(reply, letter):
    assert parse_choice(reply, 4) == letter


def test_scores_against_hand_worked_answers():
    options = ("Sea", "Sky", "Land", "Outer space")
    assert score("**B**<|im_end|>", "B", options) == {"choice": "B", "correct": True}
    assert score("C", "B", options) == {"choice": "C", "correct": False}
    assert score("Outer space.", "D", options) == {"choice": "D", "correct": True}  # the option's text, whole
    assert score("space", "D", options) == {"choice": None, "correct": False}  # part of it is not an answer
    assert score("(A)", "B", options, lure="A") == {"choice": "A", "correct": False, "lured": True}
    assert score("B", "B", options, lure="A") == {"choice": "B", "correct": True, "lured": False}
    # free answers (LongVA's V-NIAH asks some): the whole reply, cleaned; numbers by value
    assert score("**Red**.", "red") == {"choice": "red", "correct": True}
    assert score("The answer is: iPod<|im_end|>", "iPod") == {"choice": "ipod", "correct": True}
    assert score("Red and green", "red")["correct"] is False
    assert score("Each tablet holds 200 mg.", "200") == {"choice": "200", "correct": True}
    assert score("200.0", "200")["correct"] is True and score("20", "200")["correct"] is False
    assert score("none", "200") == {"choice": None, "correct": False}


def test_clean_strips_chat_formatting():
    assert clean("<|im_start|>assistant\n**B**  <|im_end|>") == "assistant B"
    assert clean("[INST] `C` [/INST]") == "C"


def test_agreement_of_two_replies():
    a = {"choice": "B", "text": "B."}
    assert agreement(a, {"choice": "B", "text": "(B)"}) == {"answer": True, "text": False}
    assert agreement(a, {"choice": None, "text": "B?"}) == {"answer": False, "text": False}
    # neither parses: the same text agrees, different texts do not
    assert agreement({"choice": None, "text": "xyz"}, {"choice": None, "text": "xyz"}) == {"answer": True, "text": True}
    assert agreement({"choice": None, "text": "xyz"}, {"choice": None, "text": "xy"})["answer"] is False

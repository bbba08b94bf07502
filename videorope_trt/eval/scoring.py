"""Answers parsed and scored by exact match.

The papers' code scores a question right when the model's argmax tokens at the answer's positions are exactly the
answer's tokens (the option letter, or a word). Here the model generates freely, and its answer is parsed first: chat
formatting is stripped (special tokens such as <|im_end|>, markdown emphasis, a leading "The answer is"), then the
option letter is taken from the first form that matches (docs/evaluation.md, "Scoring"); the parsed letter must equal
the expected one. Free answers (no options) are compared whole, after the same cleaning, case and end punctuation
ignored; a numeric expected answer takes the first number in the reply.
"""

from __future__ import annotations

import re

#: the option letters of a multiple-choice question, in order
LETTERS = "ABCDEFGHIJ"

_CHAT = re.compile(r"<\|[^|<>]*\|>|</?s>|<eos>|<pad>|\[/?INST\]|<end_of_turn>|<start_of_turn>\w*", re.I)
_MARKUP = re.compile(r"[*_`#]+")
_LEAD = re.compile(r"^\s*(?:assistant\s*[:\n]\s*)?(?:(?:so,?\s*)?(?:the\s+)?(?:best\s+|correct\s+|final\s+)?"
                   r"(?:answer|option|choice)\s*(?:is|would be|:|-)?\s*[:\-]?\s*)", re.I)
_ROLE = re.compile(r"^(?:assistant|model)\s*(?::\s*|$)", re.I)
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def clean(text: str) -> str:
    """The reply without chat tokens and markdown emphasis, whitespace collapsed."""
    text = _MARKUP.sub("", _CHAT.sub(" ", str(text)))
    return " ".join(text.split())


def _lines(text: str) -> list:
    """The reply's non-empty lines, cleaned, chat tokens as line breaks, a chat role line or prefix dropped."""
    lines = (_ROLE.sub("", clean(line)) for line in _CHAT.sub("\n", str(text)).splitlines())
    return [line for line in lines if line]


def parse_choice(text: str, num_options: int) -> str | None:
    """The option letter a reply gives, or None. Accepted, in this order: "The answer is (B)" / "Answer: B" anywhere;
    a first line that opens with the letter alone or followed by . ) : ] or a comma ("B", "(B)", "B. Sky",
    "**B**", "b."); a letter in parentheses anywhere. A letter inside prose ("A dog ...") is not an answer."""
    letters = LETTERS[:num_options]
    lines = _lines(text)
    body = " ".join(lines)
    m = re.search(rf"\b(?:answer|option|choice)\s*(?:is|would be|:|-)?\s*[:\-]?\s*\(?([{letters}])\)?(?![\w'])", body,
                  re.I)
    if m and (m.group(1).isupper() or len(body) <= 12):
        return m.group(1).upper()
    first = lines[0] if lines else ""
    m = re.match(rf"^[\(\[]?([{letters}])(?:[\)\]\.:,]|$)", first)
    m = m or re.fullmatch(rf"[\(\[]?([{letters.lower()}])[\)\]\.]?", first)
    if m:
        return m.group(1).upper()
    m = re.search(rf"\(([{letters}])\)", body)
    return m.group(1) if m else None


def _normal(text: str) -> str:
    return clean(_LEAD.sub("", clean(text))).strip(" .,:;!?\"'()[]").lower()


def parse_option_text(text: str, options) -> str | None:
    """The letter of the one option whose text the reply is (after cleaning), or None."""
    reply = _normal(text)
    hits = [LETTERS[i] for i, o in enumerate(options) if reply and _normal(o) == reply]
    return hits[0] if len(hits) == 1 else None


def score(text: str, answer: str, options=(), lure: str | None = None) -> dict:
    """{"choice": parsed letter or cleaned free answer, "correct": bool, ["lured": bool]} for one reply."""
    if options:
        choice = parse_choice(text, len(options)) or parse_option_text(text, options)
        out = {"choice": choice, "correct": choice == answer}
        if lure is not None:
            out["lured"] = choice == lure
        return out
    expected = _normal(answer)
    if _NUMBER.fullmatch(expected):
        found = _NUMBER.search(clean(text))
        choice = found.group(0) if found else None
        return {"choice": choice, "correct": choice is not None and float(choice) == float(expected)}
    choice = _normal(text)
    return {"choice": choice, "correct": choice == expected}

"""How often can a word splitter that sees only the utterance reproduce the source words a DAMP
pointer checkpoint was trained on? (Groundwork for issue 12.)

DAMP (SALT-NLP) re-spaces each training source so that every token of the gold logical form's
slots stands alone ("for 7pm" -> "for 7 pm" when the slot reads "7 pm"), then points at positions
in the whitespace split of that re-spaced source (``mtop_edge.formats.damp.pointer_target``). At
parse time there is no gold form, so a splitter must guess the same words. This script reports,
per candidate splitter, the share of MTOP rows whose words come out identical.

    python benchmarks/damp_word_agreement.py ../shared/data/mtop/en/train.jsonl ../shared/data/mtop/en/eval.txt
"""

from __future__ import annotations

import re
import sys

from mtop_edge.core.forms import serialize
from mtop_edge.core.pointer import split_words
from mtop_edge.data import read_examples
from mtop_edge.formats.damp import pointer_target
from mtop_edge.formats.damp import split_words as damp_split_words

_DIGIT_LETTER = re.compile(r"(?<=\d)(?=[^\W\d_])|(?<=[^\W\d_])(?=\d)")
_EDGE_PUNCT = re.compile(r"^([^\w]+)|([^\w]+)$")

CANDIDATES = {
    "whitespace": lambda u: u.split(),
    "whitespace + digit/letter": lambda u: _DIGIT_LETTER.sub(" ", u).split(),
    "whitespace + digit/letter + edge punctuation": lambda u: [
        part for word in _DIGIT_LETTER.sub(" ", u).split() for part in _split_edges(word)
    ],
    "mtop-edge split_words": lambda u: [w.text for w in split_words(u)],
    # the best of 64 rule combinations tried: 7pm -> 7 pm (ordinals stay), 7:30 -> 7 : 30,
    # Larry's -> Larry 's, and . , ? ! split off a word's end
    "mtop_edge.formats.damp.split_words (what parsing uses)": lambda u: [w.text for w in damp_split_words(u)],
}


def _split_edges(word: str) -> list[str]:
    """'Paris?' -> Paris, ?; '(mom)' -> (, mom, ); a word of punctuation alone stays whole."""
    match = re.fullmatch(r"([^\w]*)(.*?)([^\w]*)", word)
    if match is None or not match.group(2):
        return [word]
    head, core, tail = match.groups()
    return [*head, core, *tail] if (head or tail) else [core]


def main(paths: list[str]) -> None:
    for path in paths:
        examples = read_examples(path)
        # the source words of DAMP's training input: slot tokens isolated with the gold form, then split
        expected = [pointer_target(e.utterance, serialize(e.tree))[0].split() for e in examples]
        print(f"{path}: {len(examples)} rows")
        for name, split in CANDIDATES.items():
            same = sum(split(e.utterance) == words for e, words in zip(examples, expected, strict=True))
            print(f"  {name:48s} {same / len(examples):.4f} ({same})")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Checkpoints in the DAMP pointer format (SALT-NLP/DAMP: ``pointer_funcs.py``, ``run_parsing.py``).

Such a checkpoint is an mT5 fine-tune whose Hugging Face tokenizer has *added tokens* for every
``[IN:LABEL``, ``[SL:LABEL`` and ``<pt-N>`` seen in training; targets read
``[IN:CREATE_ALARM [SL:DATE_TIME <pt-3> <pt-4> ] ]``, N indexing the whitespace words of the
source. Its tokenizer writes a space piece (``▁``) between consecutive added tokens, and `` ]``
as sentencepiece reads it (``▁]``, or ``▁`` + ``]``): the spec records both, and the grammar
follows them.

The source was re-spaced in training so that each gold slot token stood alone ("for 7pm" ->
"for 7 pm"); at parse time there is no gold form, so ``split_words`` re-spaces by rules that
reproduce that spacing as often as they can (see ``benchmarks/damp_word_agreement.py``).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from mtop_edge.core.forms import CLOSE, serialize
from mtop_edge.core.pointer import Word
from mtop_edge.core.spec import TOKENIZER_FILE, PointerSpec, SourceFormat
from mtop_edge.core.vocab import TargetVocab
from mtop_edge.data import Example
from mtop_edge.errors import ModelError
from mtop_edge.formats.tokenizer_json import load_tokenizer

WORDS = "damp"
POINTER = re.compile(r"<pt-(\d+)>")
MAX_SOURCE_TOKENS = 1024  # run_parsing.py's max_source_length
MAX_TARGET_TOKENS = 128  # run_parsing.py's max_target_length

_AM_PM = re.compile(r"(?<=\d)(?=(?:am|pm|AM|PM|a\.m\.|p\.m\.)\b)")
_CLOCK = re.compile(r"(?<=\d):(?=\d)")
_CLITIC = re.compile(r"(?<=\w)(?:'s|\u2019s)\b")
_TRAILING = ".,?!"


def split_words(utterance: str) -> list[Word]:
    """Whitespace words, further cut where DAMP's re-spacing most often cut: 7pm -> 7 pm,
    7:30 -> 7 : 30, Larry's -> Larry 's, and . , ? ! off a word's end. Offsets index ``utterance``."""
    words: list[Word] = []
    for match in re.finditer(r"\S+", utterance):
        token, base = match.group(), match.start()
        cuts = {m.start() for m in _AM_PM.finditer(token)} | {m.start() for m in _CLITIC.finditer(token)}
        for m in _CLOCK.finditer(token):
            cuts.update((m.start(), m.end()))
        bounds = [0, *sorted(c for c in cuts if 0 < c < len(token)), len(token)]
        for start, end in itertools.pairwise(bounds):
            tail = end
            while tail - start > 1 and token[tail - 1] in _TRAILING:
                tail -= 1
            words.append(Word(token[start:tail], base + start, base + tail))
            words.extend(Word(token[i], base + i, base + i + 1) for i in range(tail, end))
    return words


def is_damp_checkpoint(directory: Path) -> bool:
    """A tokenizer.json whose added tokens include ``<pt-0>``."""
    path = directory / TOKENIZER_FILE
    if not path.is_file():
        return False
    try:
        added = json.loads(path.read_text()).get("added_tokens", [])
    except (OSError, ValueError, AttributeError):
        return False
    return any(isinstance(t, dict) and t.get("content") == "<pt-0>" for t in added)


class SpacedPieces:
    """`SourceFormat.SPACED`: the checkpoint's tokenizer over ``source_prefix`` + the words joined by
    spaces (the words as the checkpoint was trained on them), EOS ensured."""

    def __init__(self, tokenizer, spec: PointerSpec) -> None:
        self.tokenizer, self.prefix, self.eos_id = tokenizer, spec.source_prefix, spec.eos_id
        self.vocab_size = tokenizer.get_vocab_size()

    def __call__(self, utterance: str, words: list[Word]) -> tuple[list[int], None]:
        ids = self.tokenizer.encode(self.prefix + " ".join(w.text for w in words)).ids
        return (ids if ids and ids[-1] == self.eos_id else [*ids, self.eos_id]), None


def derive_spec(directory: Path) -> PointerSpec:
    """The pointer spec of a DAMP checkpoint, from its tokenizer's added tokens and config.

    Raises:
        ModelError: no intents or pointers among the added tokens, or a tokenization of `` ]``
        this runtime cannot follow.
    """
    tokenizer = load_tokenizer(directory / TOKENIZER_FILE)
    config = _read_json(directory / "config.json")
    added = {token.content: i for i, token in tokenizer.get_added_tokens_decoder().items()}
    intents = sorted(t[1:] for t in added if t.startswith("[IN:"))
    slots = sorted(t[1:] for t in added if t.startswith("[SL:"))
    pointers = sorted(int(m.group(1)) for t in added if (m := POINTER.fullmatch(t)))
    where = directory / TOKENIZER_FILE
    if not intents or not pointers:
        raise ModelError(f"{where}: no [IN:...] or <pt-N> added tokens (not a DAMP pointer checkpoint)")
    # DAMP adds the pointers seen in training: the run from <pt-0> up to the first gap is what a
    # slot (consecutive words) can use; a pointer past a gap could only ever be a slot's first word
    count = next((n for n, p in enumerate(pointers) if p != n), len(pointers))
    vocab = TargetVocab(intents=tuple(intents), slots=tuple(slots), max_pointers=count)
    separator, close, close_needs_separator = _close_pieces(tokenizer, added["[" + intents[0]], added["<pt-0>"], where)
    symbol_ids = []
    for symbol in vocab.symbols:
        if symbol == CLOSE:
            symbol_ids.append(close)
        elif symbol.startswith("@ptr"):
            symbol_ids.append(added[f"<pt-{symbol[4:]}>"])
        else:
            symbol_ids.append(added[symbol])
    pad = int(config.get("pad_token_id", 0))
    return PointerSpec(
        vocab=vocab,
        symbol_ids=tuple(symbol_ids),
        pad_id=pad,
        eos_id=int(config.get("eos_token_id", 1)),
        unk_id=tokenizer.token_to_id("<unk>") if tokenizer.token_to_id("<unk>") is not None else 2,
        decoder_start_id=int(config.get("decoder_start_token_id", pad)),
        source_format=SourceFormat.SPACED,
        max_source_tokens=MAX_SOURCE_TOKENS,
        max_target_tokens=MAX_TARGET_TOKENS,
        words=WORDS,
        tokenizer=TOKENIZER_FILE,
        separator_id=separator,
        close_needs_separator=close_needs_separator,
    )


def _close_pieces(tokenizer, intent: int, pointer: int, where: Path) -> tuple[int, int, bool]:
    """(separator id, ``]`` id, whether ``]`` needs the separator) from how the tokenizer reads a target."""
    ids = tokenizer.encode(
        "[IN:X <pt-0> ] ]".replace("[IN:X", tokenizer.id_to_token(intent)), add_special_tokens=False
    ).ids
    if len(ids) >= 4 and ids[0] == intent and ids[2] == pointer:
        separator, rest = ids[1], ids[3:]
        if len(rest) == 2 and rest[0] == rest[1] and rest[0] != separator:
            return separator, rest[0], False  # ' ]' is one piece, space included
        if len(rest) == 4 and rest[0] == rest[2] == separator and rest[1] == rest[3]:
            return separator, rest[1], True  # ' ]' is the separator then ']'
    pieces = [tokenizer.id_to_token(i) for i in ids]
    raise ModelError(
        f"{where}: unsupported target tokenization {pieces} (expected label, space, pointer, then ' ]' twice)"
    )


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path}: missing") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: corrupt ({exc})") from None


def pointer_target(utterance: str, logical_form: str) -> tuple[str, str]:
    """DAMP's training pair for a gold row: the re-spaced source and the pointer target string
    (each slot token isolated in the source, then replaced by ``<pt-N>``, N its first unused
    occurrence among the source's whitespace words). For the string exact match DAMP reports."""
    source, previous = utterance, 0
    tokens = logical_form.split()
    for token in tokens:
        if token.startswith(("[", "]")):
            continue
        found = source.find(token, previous)
        offset = found if found >= 0 else source.find(token)
        if offset < 0:
            continue
        source = source[:offset] + " " + token + " " + source[offset + len(token) :]
        previous = offset + len(token) + 2
    positions: dict[str, list[int]] = {}
    for position, word in enumerate(source.split()):
        positions.setdefault(word, []).append(position)
    out = []
    for token in tokens:
        if not token.startswith(("[", "]")) and positions.get(token):
            out.append(f"<pt-{positions[token].pop(0)}>")
        else:
            out.append(token)
    return " ".join(source.split()), " ".join(out)


def string_exact_match(
    generate: Callable[[list[list[int]], list[int]], list[list[int]]],
    spec: PointerSpec,
    tokenizer,
    examples: Sequence[Example],
    *,
    gold_spacing: bool,
    batch_size: int = 32,
) -> float:
    """DAMP's own metric: the decoded output string equals the decoded gold pointer target.

    ``generate(sources, n_words)`` returns each row's output ids (checkpoint ids). With
    ``gold_spacing`` the sources are re-spaced with the gold form, as DAMP evaluated (its
    published 0.7445); otherwise with ``split_words``, as parsing must.
    """
    sources, n_words, golds = [], [], []
    for example in examples:
        gold_source, gold_target = pointer_target(example.utterance, serialize(example.tree))
        text = gold_source if gold_spacing else " ".join(w.text for w in split_words(example.utterance))
        sources.append(tokenizer.encode(spec.source_prefix + text).ids)
        n_words.append(len(text.split()))
        golds.append(tokenizer.decode(tokenizer.encode(gold_target).ids, skip_special_tokens=True).strip())
    hits = 0
    for i in range(0, len(sources), batch_size):
        outputs = generate(sources[i : i + batch_size], n_words[i : i + batch_size])
        for ids, gold in zip(outputs, golds[i : i + batch_size], strict=True):
            hits += tokenizer.decode(ids, skip_special_tokens=True).strip() == gold
    return hits / max(len(examples), 1)

"""An offline CLIP tokenizer for the synthetic world's captions.

The paper world uses SD-2.1's own tokenizer (loaded from its folder). The synthetic world
builds a `transformers.CLIPTokenizer` from a vocabulary and BPE merges generated here from
the captions: every character (alone and word-final, `</w>`) is in the vocabulary, and each
caption word gets the chain of merges that builds it left to right, so known words are one
token and unknown words still tokenise (into characters).
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

SPECIALS = ("<|startoftext|>", "<|endoftext|>")
CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.,:;!?'-"
WORD = re.compile(r"[a-z]+|[0-9]|[^\sa-z0-9]")  # words, digits, punctuation (as CLIP's pre-split)


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one word: repeatedly merge the adjacent pair of lowest rank."""
    pieces = list(word[:-1]) + [word[-1] + "</w>"]
    while len(pieces) > 1:
        pairs = [(ranks.get(p, 1 << 30), i) for i, p in enumerate(zip(pieces, pieces[1:]))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        pieces[i:i + 2] = [pieces[i] + pieces[i + 1]]
    return pieces


def build_vocab(captions: list[str], min_count: int = 1) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges covering every word seen at least `min_count` times.

    Each word gets merges appended until BPE (which applies the lowest-ranked merge first)
    turns it into one token: a merge added for one word can pre-empt another word's chain
    (e.g. "an" from "and" splitting "orange" into or|an|g|e), so every word is checked
    against all merges so far, and merges appended later never split a finished word."""
    counts = Counter(w for c in captions for w in WORD.findall(c.lower()))
    vocab: dict[str, int] = {}
    for tok in (*SPECIALS, *CHARS, *(c + "</w>" for c in CHARS)):
        vocab.setdefault(tok, len(vocab))
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in sorted(w for w, n in counts.items() if n >= min_count and len(w) > 1):
        pieces = _bpe(word, ranks)
        while len(pieces) > 1:  # join what BPE left, left to right, with new (last-ranked) merges
            pair = (pieces[0], pieces[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            vocab.setdefault(pair[0] + pair[1], len(vocab))
            pieces = [pair[0] + pair[1]] + pieces[2:]
    return vocab, merges


def build_tokenizer(captions: list[str], max_length: int = 32, save_to: str | Path | None = None):
    """A CLIPTokenizer for `captions` (saved with save_pretrained if `save_to` is given)."""
    from transformers import CLIPTokenizer

    vocab, merges = build_vocab(captions)
    # transformers 5: pass the objects; the vocab_file= keyword would be silently ignored
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
    if save_to is not None:
        tok.save_pretrained(str(save_to))
    return tok

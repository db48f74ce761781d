"""The offline CLIP tokenizer built from the captions."""
from __future__ import annotations

from transformers import CLIPTokenizer

from neuropictor.models.tokenizer import build_tokenizer


def test_known_words_are_single_tokens_and_round_trip(tmp_path):
    caps = ["a large red circle in the top left", "two objects: a blue ring, a green cross"]
    tok = build_tokenizer(caps, max_length=16, save_to=tmp_path)
    ids = tok("A red circle, a blue ring", padding="max_length", max_length=16).input_ids
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens[:8] == ["<|startoftext|>", "a</w>", "red</w>", "circle</w>", ",</w>", "a</w>", "blue</w>",
                          "ring</w>"]
    assert tokens[8] == "<|endoftext|>" and len(ids) == 16
    again = CLIPTokenizer.from_pretrained(tmp_path)  # what a diffusers pipeline folder loads
    assert again("a red circle").input_ids == tok("a red circle").input_ids
    assert again.model_max_length == 16


def test_unknown_words_fall_back_to_characters():
    tok = build_tokenizer(["a red circle"])
    pieces = tok.convert_ids_to_tokens(tok("zebra").input_ids)[1:-1]
    assert "".join(pieces).replace("</w>", "") == "zebra" and len(pieces) == 5
    assert tok.unk_token_id not in tok("zebra").input_ids[1:-1]


def test_every_caption_word_is_one_token_whatever_the_merge_order():
    """'and' creates the merge a+n, which used to split 'orange' into or|an|g|e."""
    from neuropictor.data.stimuli import BACKGROUNDS, COLOURS, SHAPES, SIZES

    words = ["and", "background", "bottom", "objects", "picture", *SHAPES, *COLOURS, *SIZES, *BACKGROUNDS]
    tok = build_tokenizer([" ".join(words), "a medium orange circle and a small green ring"], max_length=64)
    for w in words:
        assert tok.tokenize(w) == [w + "</w>"], w

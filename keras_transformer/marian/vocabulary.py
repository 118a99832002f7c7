"""Marian's shared vocabulary in the package's id order.

A Hugging Face Marian folder numbers its tokens with `vocab.json`: `</s>`
is usually 0, `<unk>` 1 and `<pad>` the last id. The package reserves
ids 0-3 for `[PAD] [UNK] [START] [END]` in every runtime, so an imported
model's rows are permuted once, at import:

    package id   0      1       2        3      4, 5, ...
    Marian id    <pad>  <unk>   <pad>    </s>   the others, in Marian order

Marian's decoder starts from the `<pad>` row, so that row serves both
`[PAD]` and `[START]`: the imported vocabulary is one entry longer than
Marian's. Pure Python.
"""

from keras_transformer.checks import check_int
from keras_transformer.text.special_tokens import RESERVED_TOKENS


def marian_order(vocab: dict[str, int], pad_id: int, eos_id: int,
                 unk_token: str = "<unk>") -> list[int]:
    """The Marian id of each package id (see the module's table).

    Args:
        vocab: `vocab.json`, token string -> Marian id; ids must be
            0 .. len(vocab) - 1, each once.
        pad_id: Marian's pad (and decoder start) id, `pad_token_id`.
        eos_id: Marian's end-of-sequence id, `eos_token_id`.
        unk_token: the unknown token's string in `vocab`.

    Returns:
        list of len(vocab) + 1 Marian ids: entry i is the Marian row of
        package id i.
    """
    ids = sorted(vocab.values())
    if ids != list(range(len(vocab))):
        raise ValueError(
            "`vocab` must number its tokens 0 .. len(vocab) - 1, each "
            f"once. Received: vocab with {len(vocab)} tokens and ids from "
            f"{ids[0] if ids else None} to {ids[-1] if ids else None}")
    if unk_token not in vocab:
        raise ValueError(
            f"`vocab` must hold the unknown token. Received: unk_token="
            f"{unk_token!r}, absent from vocab")
    for name, value in (("pad_id", pad_id), ("eos_id", eos_id)):
        check_int(name, value, 0)
        if value >= len(vocab):
            raise ValueError(
                f"`{name}` must be an id of `vocab` (0 .. {len(vocab) - 1})."
                f" Received: {name}={value}")
    unk_id = vocab[unk_token]
    if len({pad_id, eos_id, unk_id}) != 3:
        raise ValueError(
            "`pad_id`, `eos_id` and the unknown token's id must differ. "
            f"Received: pad_id={pad_id}, eos_id={eos_id}, "
            f"unk id={unk_id}")
    reserved = (pad_id, unk_id, pad_id, eos_id)
    rest = [i for i in range(len(vocab)) if i not in reserved]
    return [*reserved, *rest]


def package_vocabulary(vocab: dict[str, int], order: list[int]) -> list[str]:
    """The token strings in package id order: the reserved tokens
    (`RESERVED_TOKENS`), then Marian's tokens in `order`.

    Args:
        vocab: `vocab.json`.
        order: `marian_order(vocab, ...)`.

    Returns:
        list of len(order) token strings.
    """
    tokens = {marian_id: token for token, marian_id in vocab.items()}
    return [*RESERVED_TOKENS, *(tokens[i] for i in order[4:])]

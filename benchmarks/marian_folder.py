"""Random Hugging Face Marian folders, made locally: the import's tests
(tiny) and its benchmark (OPUS-MT's shapes).

`make_marian_folder` learns two SentencePiece models (SentencePiece's
default special pieces, as OPUS-MT's are) on the bundled corpus, builds a
shared `vocab.json` as Hugging Face's converter lays it out (`</s>` 0,
`<unk>` 1, the pieces, `<pad>` last) with a few source pieces left out (so
that "pieces missing from the vocabulary" occur), and saves a random
`MarianMTModel` with `save_pretrained` (config.json,
generation_config.json, model.safetensors) beside them. Nothing is
downloaded. Needs transformers and torch.
"""

import io
import json
import os

import sentencepiece as spm

from keras_transformer.data import load_corpus
from keras_transformer.data.debian import debian_corpus

# Source pieces left out of vocab.json: tokenizing a word that uses one
# gives Marian's <unk>.
DROPPED_PIECES = 3


def _learn(texts, vocab_size):
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model,
        vocab_size=vocab_size, model_type="unigram",
        character_coverage=1.0, num_threads=1, minloglevel=2,
        hard_vocab_limit=False)
    return model.getvalue()


def _pieces(proto):
    processor = spm.SentencePieceProcessor(model_proto=proto)
    return [processor.id_to_piece(i) for i in range(
        processor.get_piece_size()) if not (
            processor.is_control(i) or processor.is_unknown(i))]


def marian_vocab(source_proto, target_proto, dropped=DROPPED_PIECES):
    """vocab.json's mapping and the source pieces left out of it."""
    source = _pieces(source_proto)
    # Leave out long (rare) source pieces that the target side lacks.
    target = set(_pieces(target_proto))
    candidates = [p for p in source if p not in target and len(p) > 3]
    left_out = candidates[:dropped]
    tokens = ["</s>", "<unk>"]
    for piece in source + _pieces(target_proto):
        if piece not in tokens and piece not in left_out:
            tokens.append(piece)
    tokens.append("<pad>")
    return {token: i for i, token in enumerate(tokens)}, left_out


def make_marian_folder(path, *, d_model=32, layers=2, heads=4, d_ff=64,
                       vocab_size=300, activation="swish",
                       scale_embedding=True, seed=0, config_overrides=None,
                       total_vocab=None, max_positions=128,
                       randomize=True):
    """Writes a random Marian folder at `path`; returns (path, info).

    `vocab_size` is each SentencePiece model's; `total_vocab` pads
    vocab.json with unused filler tokens to that many entries (OPUS-MT's
    en-de has 58,101), None keeps the pieces only. With `seed` the folder
    is the same every time. `randomize` replaces Hugging Face's
    initialization (biases and LayerNorms constant) by random values
    everywhere, so that every tensor's mapping counts in a test.
    """
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    # English package descriptions as sources, German number words as
    # targets: varied enough for a few hundred pieces per side.
    sources = list(debian_corpus("validation").sources)[:600]
    targets = list(load_corpus("bundled", split="train").targets)[:3000]
    sources += ["我喜欢猫。", "مرحبا بالعالم", "Café naïve Größe 🎉"]
    targets += ["我喜欢狗。", "שלום עולם", "Straße über Ähre 🎉"]
    source_proto = _learn(sources, vocab_size)
    target_proto = _learn(targets, vocab_size)
    vocab, left_out = marian_vocab(source_proto, target_proto)
    if total_vocab is not None:
        del vocab["<pad>"]
        for index in range(total_vocab - 1 - len(vocab)):
            vocab[f"<filler_{index}>"] = len(vocab)
        vocab["<pad>"] = len(vocab)
    os.makedirs(path, exist_ok=True)
    for name, proto in (("source.spm", source_proto),
                        ("target.spm", target_proto)):
        with open(os.path.join(path, name), "wb") as file:
            file.write(proto)
    with open(os.path.join(path, "vocab.json"), "w",
              encoding="utf-8") as file:
        json.dump(vocab, file, ensure_ascii=False)
    tokenizer = MarianTokenizer(os.path.join(path, "source.spm"),
                                os.path.join(path, "target.spm"),
                                os.path.join(path, "vocab.json"))
    tokenizer.save_pretrained(path)
    pad = vocab["<pad>"]
    values = dict(
        vocab_size=len(vocab), decoder_vocab_size=len(vocab),
        d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=heads, decoder_attention_heads=heads,
        encoder_ffn_dim=d_ff, decoder_ffn_dim=d_ff,
        max_position_embeddings=max_positions,
        activation_function=activation,
        scale_embedding=scale_embedding, pad_token_id=pad,
        decoder_start_token_id=pad, eos_token_id=0, forced_eos_token_id=0,
        bad_words_ids=[[pad]], dropout=0.1, attention_dropout=0.0)
    values.update(config_overrides or {})
    torch.manual_seed(seed)
    model = MarianMTModel(MarianConfig(**values))
    # Hugging Face initializes biases, LayerNorms and final_logits_bias to
    # constants; random values make every one of them count in the tests.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in (model.named_parameters() if randomize
                                else ()):
            if "embed_positions" in name:
                continue
            noise = torch.randn(parameter.shape, generator=generator)
            if "layer_norm" in name and name.endswith("weight"):
                parameter.copy_(1.0 + 0.1 * noise)
            else:
                parameter.copy_(0.3 * noise)
        # Marian's pad row (the decoder's start) is zero, as in OPUS-MT
        # checkpoints; CTranslate2's converter relies on it.
        model.model.shared.weight[pad].zero_()
        if randomize:
            model.final_logits_bias.copy_(
                torch.randn(model.final_logits_bias.shape,
                            generator=generator))
    model.generation_config.bad_words_ids = [[pad]]
    model.save_pretrained(path)
    return path, {"vocab": vocab, "left_out": left_out}

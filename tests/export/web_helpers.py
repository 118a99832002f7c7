"""Shared pieces of the web export tests: tools, cases, expected answers.

The web tests need Node.js, the npm packages (`npm ci` in export/web)
and, for the browser tier, Debian's `chromium` and Playwright. Where one
is missing they are skipped with a message naming it, unless
KERAS_TRANSFORMER_REQUIRE_WEB=1 (`.ci/run` sets it after installing
them): then they fail.
"""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

REQUIRE_ENV = "KERAS_TRANSFORMER_REQUIRE_WEB"
# Sentences of the held-out set per batch: the output limit follows the
# longest source of a batch, so both sides translate the same batches.
BATCH = 25
# Texts the tokenizers must read alike: NFKC ligatures and full-width
# letters, accents, emoji, CJK, a NUL, whitespace of every kind.
PROBES = ["\ufb01ve \uff34\uff37\uff2f caf\u00e9 na\u00efve",
          "\U0001F600 \u4e00\u4e8c", "one\u0000two",
          "\u00a0one\u2003two\u3000three\t\n",
          "z\u0301ero  \u00a0 nine"]


def require(*, browser: bool = False) -> None:
    """Skips (or fails, under REQUIRE_ENV) when a web tool is missing."""
    from keras_transformer.export.web.export import (
        install_command,
        runtime_files,
    )

    missing = []
    if shutil.which("node") is None:
        missing.append("Node.js (`node`)")
    try:
        runtime_files()
    except FileNotFoundError:
        missing.append(f"the npm packages (`{install_command()}`)")
    if browser:
        if shutil.which("chromium") is None:
            missing.append("Debian's chromium (`apt-get install chromium`)")
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing.append("Playwright (the `test` extra)")
    if missing:
        message = "The web export tests need " + ", ".join(missing)
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(message)
        pytest.skip(message)


def batches(texts: list[str]) -> list[list[str]]:
    return [texts[i:i + BATCH] for i in range(0, len(texts), BATCH)]


def rule_batches(texts: list[str], source_limit: int) -> dict:
    """Name -> a batch for each input rule (`keras_transformer.contract`)."""
    long_text = " ".join(texts[:1] * (source_limit + 5))
    return {"empty and whitespace texts": ["", texts[0],
                                           " \t\u3000\n\u00a0"],
            "longer than max_source_tokens": [long_text, texts[1]],
            "tokenizer probes": PROBES,
            "empty batch": []}


# Bad input: request -> (error name, text the message must hold).
BAD_REQUESTS = [
    ({"texts": "one two", "beam": True}, "TypeError", "`texts`"),
    ({"texts": [3], "beam": True}, "TypeError", "texts[0]"),
    ({"texts": ["one", None], "beam": False}, "TypeError", "texts[1]"),
    ({"texts": ["one \ud800"], "beam": True}, "TypeError", "lone surrogate"),
    ({"texts": ["one " * 30000], "beam": True}, "RangeError",
     "maxTextLength"),
    ({"texts": ["one"], "beam": "yes"}, "TypeError", "`beam`"),
]


def expected(translator, texts: list[str], beam: bool) -> dict:
    """The Translator's answer in translator.js' shape (ids, strings)."""
    if not texts:
        return {"sourceIds": [], "targetIds": [], "translations": [],
                "scores": []}
    source_ids = translator.source_ids(tf.constant(texts, tf.string))
    search = (translator.translate_tokens if beam
              else translator.translate_tokens_greedy)
    tokens = search(source_ids)
    pairs = translator(texts, beam_size=None if beam else 1)
    return {"sourceIds": source_ids.numpy().tolist(),
            "targetIds": tokens["target_ids"].numpy().tolist(),
            "translations": [t for t, _ in pairs],
            "scores": [s for _, s in pairs]}


def identical_rows(got: dict, want: dict, tolerance: float = 1e-3) -> int:
    """Rows with the same ids and strings and scores within `tolerance`;
    asserts that every row is such a row."""
    assert "error" not in got, got
    rows = len(want["translations"])
    assert len(got["translations"]) == rows
    same = 0
    for row in range(rows):
        assert got["sourceIds"][row] == want["sourceIds"][row], row
        assert got["targetIds"][row] == want["targetIds"][row], row
        assert got["translations"][row] == want["translations"][row], row
        np.testing.assert_allclose(got["scores"][row], want["scores"][row],
                                   atol=tolerance)
        same += 1
    return same

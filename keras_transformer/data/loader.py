"""`load_corpus`: one string names a corpus (as the CLI takes it).

The one module that knows every kind of corpus: it imports the readers
(`corpora`, `numbers`, `debian`, `tfds_reader`), and none of them imports it
back.
"""

import os

from keras_transformer.data import debian, numbers, tfds_reader
from keras_transformer.data.corpora import (
    ParallelCorpus,
    read_aligned,
    read_jsonl,
    read_tsv,
)

_JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")


def load_corpus(spec: str, *, split: str = "train",
                data_dir: str | None = None,
                source_field: str | None = None,
                target_field: str | None = None) -> ParallelCorpus:
    """Loads a corpus from a one-string specification (as the CLI takes).

    Specifications:

    - `"bundled"`, `"bundled:de"` or `"bundled:fr"`: the bundled English to
      German (default) or French number corpus, split `split`.
    - `"bundled:debian"`: the bundled Debian package-description
      summarization corpus (see `debian`), split `split`.
    - `"tfds:NAME"`, e.g. `"tfds:ted_hrlr_translate/pt_to_en"` or
      `"tfds:cnn_dailymail"`: a TFDS translation or summarization dataset,
      split `split`, stored under `data_dir`.
    - a path ending in ".jsonl" or ".jsonl.gz": one JSON object per line,
      read with `read_jsonl` using `source_field` and `target_field`.
    - `"SOURCE_PATH,TARGET_PATH"`: two aligned plain-text files.
    - any other string: a TSV file of `source<TAB>target` lines.

    A file holds one split, so `split` is ignored for file specifications.
    An existing file whose name contains a comma is read as TSV (or JSONL).

    Args:
        spec: str, the specification.
        split: str, the split for bundled and TFDS corpora.
        data_dir: str or None, the TFDS data directory.
        source_field: str or None, the source field: required for JSONL,
            the source feature for TFDS (its default if None), and not
            allowed for other specifications.
        target_field: str or None, the target field, as `source_field`.

    Returns:
        A `ParallelCorpus`.

    Raises:
        FileNotFoundError: if a named file does not exist.
        ValueError: for a malformed specification, a missing or unexpected
            field, or an empty corpus.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(
            f"`spec` must be a non-empty string. Received: spec={spec!r}"
        )
    fields = {"source_field": source_field, "target_field": target_field}
    if spec.startswith("tfds:"):
        if (source_field is None) != (target_field is None):
            missing = "target_field" if target_field is None else (
                "source_field")
            raise ValueError(
                f"`{missing}` must be given with the other field to choose "
                f"the features of {spec!r}. Received: {missing}=None"
            )
        return tfds_reader.load_tfds(spec[len("tfds:"):], split,
                                     data_dir=data_dir,
                                     source_key=source_field,
                                     target_key=target_field)
    if spec.endswith(_JSONL_SUFFIXES):
        for argument, value in fields.items():
            if value is None:
                raise ValueError(
                    f"`{argument}` is required to read the JSONL file "
                    f"{spec!r}. Received: {argument}=None"
                )
        return read_jsonl(spec, source_field=source_field,
                          target_field=target_field)
    for argument, value in fields.items():
        if value is not None:
            raise ValueError(
                f"`{argument}` applies only to JSONL files (.jsonl, "
                f".jsonl.gz) and tfds: specifications, not spec={spec!r}. "
                f"Received: {argument}={value!r}"
            )
    if spec == "bundled:debian":
        return debian.debian_corpus(split)
    if spec == "bundled" or spec.startswith("bundled:"):
        language = spec.partition(":")[2] or "de"
        return numbers.bundled_corpus(language=language, split=split)
    if "," in spec and not os.path.exists(spec):
        paths = spec.split(",")
        if len(paths) != 2 or not all(p.strip() for p in paths):
            raise ValueError(
                "`spec` for aligned files must be 'SOURCE_PATH,TARGET_PATH'. "
                f"Received: spec={spec!r}"
            )
        return read_aligned(paths[0].strip(), paths[1].strip())
    return read_tsv(spec)

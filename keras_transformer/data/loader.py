"""`load_corpus`: one string names a corpus (as the CLI takes it).

The one module that knows every kind of corpus: it imports the readers
(`corpora`, `bundled`, `tfds_reader`), and none of them imports it back.
"""

import os

from keras_transformer.data import bundled, tfds_reader
from keras_transformer.data.corpora import (
    ParallelCorpus,
    read_aligned,
    read_tsv,
)


def load_corpus(spec: str, *, split: str = "train",
                data_dir: str | None = None) -> ParallelCorpus:
    """Loads a corpus from a one-string specification (as the CLI takes).

    Specifications:

    - `"bundled"`, `"bundled:de"` or `"bundled:fr"`: the bundled English to
      German (default) or French number corpus, split `split`.
    - `"tfds:NAME"`, e.g. `"tfds:ted_hrlr_translate/pt_to_en"`: a TFDS
      translation dataset, split `split`, stored under `data_dir`.
    - `"SOURCE_PATH,TARGET_PATH"`: two aligned plain-text files.
    - any other string: a TSV file of `source<TAB>target` lines.

    A file holds one split, so `split` is ignored for file specifications.
    An existing file whose name contains a comma is read as TSV.

    Args:
        spec: str, the specification.
        split: str, the split for bundled and TFDS corpora.
        data_dir: str or None, the TFDS data directory.

    Returns:
        A `ParallelCorpus`.

    Raises:
        FileNotFoundError: if a named file does not exist.
        ValueError: for a malformed specification or an empty corpus.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(
            f"`spec` must be a non-empty string. Received: spec={spec!r}"
        )
    if spec == "bundled" or spec.startswith("bundled:"):
        language = spec.partition(":")[2] or "de"
        return bundled.bundled_corpus(language=language, split=split)
    if spec.startswith("tfds:"):
        return tfds_reader.load_tfds(spec[len("tfds:"):], split,
                                     data_dir=data_dir)
    if "," in spec and not os.path.exists(spec):
        paths = spec.split(",")
        if len(paths) != 2 or not all(p.strip() for p in paths):
            raise ValueError(
                "`spec` for aligned files must be 'SOURCE_PATH,TARGET_PATH'. "
                f"Received: spec={spec!r}"
            )
        return read_aligned(paths[0].strip(), paths[1].strip())
    return read_tsv(spec)

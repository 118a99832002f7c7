"""The bundled summarization corpus: Debian package descriptions.

Each pair is the extended description of a Debian bookworm package (source,
one line of plain English) and its one-line synopsis (target), e.g. "ext4magic
is a file carver ... original filename, owner and group, ..." -> "recover
deleted files from ext3 or ext4 partitions". The splits are made by Debian
source package, so no package's descriptions are in two splits. The files
ship with the package in `keras_transformer/data/debian_descriptions/`;
its README.md says where they come from, their terms, and how
`examples/build_debian_corpus.py` built them.
"""

import importlib.resources
import lzma

from keras_transformer.data.corpora import ParallelCorpus, corpus_from_pairs
from keras_transformer.data.numbers import SPLITS

NAME = "debian-descriptions"


def debian_corpus(split: str = "train") -> ParallelCorpus:
    """Returns one split of the Debian package-description corpus.

    Args:
        split: str, "train", "validation" or "test". Defaults to "train".

    Returns:
        A `ParallelCorpus` of (description, synopsis) pairs, named
        "debian-descriptions[SPLIT]", with both languages "en".

    Raises:
        ValueError: for an unknown `split`.

    Example:

    >>> corpus = debian_corpus("test")
    >>> corpus.source_language, corpus.target_language
    ('en', 'en')
    """
    if split not in SPLITS:
        raise ValueError(
            f"`split` must be one of {SPLITS}. Received: split={split!r}"
        )
    resource = importlib.resources.files(__package__).joinpath(
        "debian_descriptions", f"{split}.tsv.xz"
    )
    text = lzma.decompress(resource.read_bytes()).decode("utf-8")
    # The builder writes exactly one tab per line and no other tab or line
    # break, so a plain split is exact.
    pairs = [tuple(line.split("\t")) for line in text.split("\n") if line]
    corpus = corpus_from_pairs(pairs, name=f"{NAME}[{split}]")
    return ParallelCorpus(corpus.sources, corpus.targets, corpus.stats,
                          corpus.name, "en", "en")

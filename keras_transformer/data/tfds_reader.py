"""Corpora from TensorFlow Datasets (the optional `tfds` extra).

Example: `load_tfds("ted_hrlr_translate/pt_to_en", "train")`. The source and
target are, unless given: the (document, summary) features listed in
`SUMMARIZATION_FEATURES` for the summarization datasets named there (with
any config or version, e.g. "cnn_dailymail:3.4.0"), else the dataset's
supervised keys. Examples with an undecodable or empty side are skipped and
counted as in `corpora`.
"""

from keras_transformer.data.corpora import (
    UNDECODABLE,
    ParallelCorpus,
    _Collector,
)

_READ_BATCH = 1024

# (document, summary) features of summarization datasets, by builder name.
# Listed rather than read from the supervised keys so that the choice is
# explicit, reviewed, and independent of how a TFDS release declares them.
SUMMARIZATION_FEATURES = {
    "billsum": ("text", "summary"),
    "cnn_dailymail": ("article", "highlights"),
    "gigaword": ("document", "summary"),
    "samsum": ("dialogue", "summary"),
    "xsum": ("document", "summary"),
}


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "Loading a TFDS corpus needs tensorflow-datasets. Install it "
            "with: pip install 'keras-seq2seq-transformer[tfds]'"
        ) from error
    return tfds


def _feature_keys(info, source_key, target_key) -> tuple[str, str]:
    """Picks the source and target feature keys of a dataset."""
    available = list(info.features.keys())
    if source_key is None and target_key is None:
        keys = SUMMARIZATION_FEATURES.get(info.name, info.supervised_keys)
        if not (isinstance(keys, tuple) and len(keys) == 2
                and all(isinstance(k, str) for k in keys)):
            raise ValueError(
                f"The TFDS dataset {info.full_name} has no (source, target) "
                "supervised keys; pass `source_key` and `target_key` among "
                f"{available}. Received: supervised_keys={keys!r}"
            )
        source_key, target_key = keys
    for argument, key in (("source_key", source_key),
                          ("target_key", target_key)):
        if key not in available:
            raise ValueError(
                f"`{argument}` must be one of the features {available} of "
                f"{info.full_name}. Received: {argument}={key!r}"
            )
    return source_key, target_key


def load_tfds(
    name: str,
    split: str = "train",
    *,
    source_key: str | None = None,
    target_key: str | None = None,
    data_dir: str | None = None,
    download: bool = True,
    max_examples: int | None = None,
) -> ParallelCorpus:
    """Loads a translation or summarization dataset from TFDS.

    Args:
        name: str, a TFDS name, e.g. "ted_hrlr_translate/pt_to_en" or
            "cnn_dailymail:3.4.0".
        split: str, e.g. "train", "validation", "test" or "train[:10%]".
        source_key: str or None, the source feature; defaults to the
            document feature for the datasets in `SUMMARIZATION_FEATURES`,
            else to the first of the dataset's supervised keys. Give both
            keys to choose other features or reverse the direction.
        target_key: str or None, the target feature; defaults to the
            summary feature or the second supervised key.
        data_dir: str or None, where TFDS stores data; TFDS' default if None.
        download: bool, whether to download and prepare the data if absent.
        max_examples: int or None, read at most this many examples.

    Returns:
        A `ParallelCorpus` with the languages set to the feature keys.

    Raises:
        ImportError: if tensorflow-datasets is not installed (install the
            `tfds` extra).
        ValueError: for an unknown dataset name or feature key, or if no
            example holds a valid pair.
    """
    tfds = _import_tfds()
    if max_examples is not None and (
            not isinstance(max_examples, int) or max_examples < 1):
        raise ValueError(
            "`max_examples` must be a positive int or None. "
            f"Received: max_examples={max_examples!r}"
        )
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError as error:
        raise ValueError(
            f"`name` is not a known TFDS dataset. Received: name={name!r}"
        ) from error
    source_key, target_key = _feature_keys(
        builder.info, source_key, target_key
    )
    if download:
        builder.download_and_prepare()
    dataset = builder.as_dataset(split=split)
    if max_examples is not None:
        dataset = dataset.take(max_examples)
    dataset = dataset.batch(_READ_BATCH)
    collector = _Collector()
    for batch in tfds.as_numpy(dataset):
        for source, target in zip(batch[source_key], batch[target_key]):
            collector.lines_read += 1
            try:
                source = source.decode("utf-8", errors="strict")
                target = target.decode("utf-8", errors="strict")
            except UnicodeDecodeError:
                collector.skip(UNDECODABLE, collector.lines_read)
                continue
            collector.add(source, target, collector.lines_read)
    return collector.corpus(f"tfds:{name}[{split}]", source_key, target_key)

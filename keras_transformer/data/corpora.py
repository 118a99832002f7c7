"""Parallel corpora: TSV, JSONL and aligned text files, TFDS, bundled sets.

Every reader returns a `ParallelCorpus`: the kept (source, target) pairs and
a `CorpusStats` that counts the lines read, the pairs kept and, per reason,
the lines skipped. Nothing is dropped without being counted, and nothing is
rewritten except the whitespace stripped from both ends of each side.

Skip reasons (the keys of `CorpusStats.skipped`):

- `"blank"`: the line is empty or only whitespace (on both sides, for
  aligned files).
- `"missing_tab"`: a TSV line without a tab.
- `"extra_columns"`: a TSV line with more than one tab (unless
  `allow_extra_columns=True`, which keeps the first two columns).
- `"empty_side"`: the source or the target is empty after stripping.
- `"undecodable"`: the line is not valid UTF-8 (decoded strictly, never
  replaced).
- `"invalid_json"`: a JSONL line that is not a JSON object.
- `"missing_field"`: a JSONL object without the source or target field.
- `"non_string_field"`: a JSONL object whose source or target is not a
  string (a number, null, a list...).
"""

import dataclasses
import gzip
import json
import os
import pathlib
from collections.abc import Iterable, Iterator, Mapping

BLANK = "blank"
MISSING_TAB = "missing_tab"
EXTRA_COLUMNS = "extra_columns"
EMPTY_SIDE = "empty_side"
UNDECODABLE = "undecodable"
INVALID_JSON = "invalid_json"
MISSING_FIELD = "missing_field"
NON_STRING_FIELD = "non_string_field"

# Line numbers kept per skip reason, to point users at bad lines.
_MAX_EXAMPLE_LINES = 5


@dataclasses.dataclass(frozen=True)
class CorpusStats:
    """Counts from reading a corpus.

    Args:
        lines_read: int, lines (or examples) read.
        kept: int, pairs kept.
        skipped: mapping from skip reason to the number of lines skipped for
            it; only reasons that occurred appear.
        example_lines: mapping from skip reason to the first few (1-based)
            line numbers skipped for it.
    """

    lines_read: int
    kept: int
    skipped: Mapping[str, int] = dataclasses.field(default_factory=dict)
    example_lines: Mapping[str, tuple[int, ...]] = dataclasses.field(
        default_factory=dict
    )

    def __post_init__(self):
        if self.kept + self.num_skipped != self.lines_read:
            raise ValueError(
                "`lines_read` must equal `kept` plus the skipped lines. "
                f"Received: lines_read={self.lines_read}, kept={self.kept}, "
                f"skipped={dict(self.skipped)}"
            )

    @property
    def num_skipped(self) -> int:
        """Total number of skipped lines."""
        return sum(self.skipped.values())

    def summary(self) -> str:
        """One line for logs, e.g. "read 10, kept 8, skipped 2 (blank=2)"."""
        text = f"read {self.lines_read}, kept {self.kept}"
        if self.skipped:
            reasons = ", ".join(f"{k}={v}" for k, v in self.skipped.items())
            text += f", skipped {self.num_skipped} ({reasons})"
        return text


@dataclasses.dataclass(frozen=True)
class ParallelCorpus:
    """Aligned source and target sentences.

    Args:
        sources: list of str, source sentences.
        targets: list of str, target sentences, `targets[i]` translating
            `sources[i]`.
        stats: `CorpusStats`; defaults to "every line kept".
        name: str, where the corpus came from (for logs).
        source_language: str or None, e.g. "en".
        target_language: str or None, e.g. "de".

    Example:

    >>> corpus = ParallelCorpus(["one"], ["eins"])
    >>> len(corpus), corpus.pairs()
    (1, [('one', 'eins')])
    """

    sources: list[str]
    targets: list[str]
    stats: CorpusStats | None = None
    name: str = ""
    source_language: str | None = None
    target_language: str | None = None

    def __post_init__(self):
        if len(self.sources) != len(self.targets):
            raise ValueError(
                "`sources` and `targets` must have the same length. "
                f"Received: len(sources)={len(self.sources)}, "
                f"len(targets)={len(self.targets)}"
            )
        if self.stats is None:
            n = len(self.sources)
            object.__setattr__(self, "stats", CorpusStats(n, n))

    def __len__(self) -> int:
        return len(self.sources)

    def pairs(self) -> list[tuple[str, str]]:
        """Returns the (source, target) pairs."""
        return list(zip(self.sources, self.targets))


class _Collector:
    """Accumulates kept pairs and skip counts while reading."""

    def __init__(self):
        self.sources, self.targets = [], []
        self.lines_read = 0
        self.skipped: dict[str, int] = {}
        self.example_lines: dict[str, list[int]] = {}

    def skip(self, reason: str, line_number: int):
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        lines = self.example_lines.setdefault(reason, [])
        if len(lines) < _MAX_EXAMPLE_LINES:
            lines.append(line_number)

    def add(self, source: str, target: str, line_number: int):
        source, target = source.strip(), target.strip()
        if not source and not target:
            self.skip(BLANK, line_number)
        elif not source or not target:
            self.skip(EMPTY_SIDE, line_number)
        else:
            self.sources.append(source)
            self.targets.append(target)

    def corpus(self, name, source_language=None, target_language=None):
        stats = CorpusStats(
            lines_read=self.lines_read,
            kept=len(self.sources),
            skipped=dict(self.skipped),
            example_lines={k: tuple(v) for k, v in self.example_lines.items()},
        )
        if not self.sources:
            raise ValueError(
                f"The corpus {name} has no valid pair: {stats.summary()}. "
                f"First skipped lines per reason: {stats.example_lines}"
            )
        return ParallelCorpus(
            self.sources, self.targets, stats, name, source_language,
            target_language,
        )


def _check_file(path, argument: str) -> pathlib.Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"`{argument}` must be a path. Received: {argument}={path!r}"
        )
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"`{argument}` is not an existing file. Received: "
            f"{argument}={str(path)!r}"
        )
    return path


def _decoded_lines(path: pathlib.Path,
                   gzipped: bool = False) -> Iterator[str | None]:
    """Yields each line decoded as strict UTF-8, or None if undecodable.

    Lines are split on "\\n" only (with a trailing "\\r" removed), not on the
    other Unicode line breaks, so that aligned files stay aligned.
    """
    with (gzip.open(path, "rb") if gzipped else path.open("rb")) as f:
        for i, raw in enumerate(f):
            raw = raw.rstrip(b"\n").rstrip(b"\r")
            if i == 0 and raw.startswith(b"\xef\xbb\xbf"):  # UTF-8 BOM
                raw = raw[3:]
            try:
                yield raw.decode("utf-8", errors="strict")
            except UnicodeDecodeError:
                yield None


def read_tsv(path, *, allow_extra_columns: bool = False) -> ParallelCorpus:
    """Reads `source<TAB>target` lines from a UTF-8 file.

    Malformed lines are skipped and counted per reason (see the module
    docstring); each side is stripped of surrounding whitespace.

    Args:
        path: str or path-like, the TSV file.
        allow_extra_columns: bool, whether to keep lines with more than two
            columns, using the first two (as in Tatoeba exports that end with
            an attribution column). Defaults to False: such lines are
            skipped as `"extra_columns"`.

    Returns:
        A `ParallelCorpus`.

    Raises:
        FileNotFoundError: if `path` is not a file.
        ValueError: if no line holds a valid pair.
    """
    path = _check_file(path, "path")
    collector = _Collector()
    for line_number, text in enumerate(_decoded_lines(path), start=1):
        collector.lines_read += 1
        if text is None:
            collector.skip(UNDECODABLE, line_number)
            continue
        fields = text.split("\t")
        if not text.strip():
            collector.skip(BLANK, line_number)
        elif len(fields) < 2:
            collector.skip(MISSING_TAB, line_number)
        elif len(fields) > 2 and not allow_extra_columns:
            collector.skip(EXTRA_COLUMNS, line_number)
        else:
            collector.add(fields[0], fields[1], line_number)
    return collector.corpus(str(path))


def _check_field(value, argument: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(
            f"`{argument}` must be a non-empty string naming a JSON field. "
            f"Received: {argument}={value!r}"
        )
    return value


def read_jsonl(path, *, source_field: str,
               target_field: str) -> ParallelCorpus:
    """Reads one JSON object per line, taking two string fields as a pair.

    Bad lines are treated as `read_tsv` treats them: skipped and counted per
    reason (`"blank"`, `"undecodable"`, `"invalid_json"`,
    `"missing_field"`, `"non_string_field"`, `"empty_side"`; see the module
    docstring), and each side is stripped of surrounding whitespace. Other
    fields are ignored. A file ending in ".gz" is read through gzip.

    Args:
        path: str or path-like, the JSONL file.
        source_field: str, the field holding the source text, e.g.
            "document".
        target_field: str, the field holding the target text, e.g.
            "summary".

    Returns:
        A `ParallelCorpus`.

    Raises:
        FileNotFoundError: if `path` is not a file.
        ValueError: if a field name is empty or not a string, if no object
            has `source_field` (or `target_field`), naming the fields of the
            first object, or if no line holds a valid pair.

    Example:

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp(), "d.jsonl")
    >>> _ = path.write_text('{"text": "long", "title": "short"}\\n')
    >>> read_jsonl(path, source_field="text", target_field="title").pairs()
    [('long', 'short')]
    """
    path = _check_file(path, "path")
    fields = {"source_field": _check_field(source_field, "source_field"),
              "target_field": _check_field(target_field, "target_field")}
    collector = _Collector()
    first_keys, found = None, {argument: 0 for argument in fields}
    for line_number, text in enumerate(
            _decoded_lines(path, path.suffix == ".gz"), start=1):
        collector.lines_read += 1
        if text is None:
            collector.skip(UNDECODABLE, line_number)
            continue
        if not text.strip():
            collector.skip(BLANK, line_number)
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            collector.skip(INVALID_JSON, line_number)
            continue
        if first_keys is None:
            first_keys = sorted(record)
        for argument, field in fields.items():
            found[argument] += field in record
        source, target = record.get(source_field), record.get(target_field)
        if source_field not in record or target_field not in record:
            collector.skip(MISSING_FIELD, line_number)
        elif not isinstance(source, str) or not isinstance(target, str):
            collector.skip(NON_STRING_FIELD, line_number)
        else:
            collector.add(source, target, line_number)
    if not collector.sources and first_keys is not None:
        for argument, field in fields.items():
            if not found[argument]:
                raise ValueError(
                    f"`{argument}` names a field that no object of "
                    f"{str(path)!r} has; the first object has the fields "
                    f"{first_keys}. Received: {argument}={field!r}"
                )
    return collector.corpus(str(path))


def read_aligned(source_path, target_path) -> ParallelCorpus:
    """Reads two plain-text files where line i of one translates line i.

    Args:
        source_path: str or path-like, the source sentences.
        target_path: str or path-like, the target sentences.

    Returns:
        A `ParallelCorpus`; pairs with an undecodable or empty side are
        skipped and counted.

    Raises:
        FileNotFoundError: if either path is not a file.
        ValueError: if the files have different numbers of lines, or no
            line holds a valid pair.
    """
    source_path = _check_file(source_path, "source_path")
    target_path = _check_file(target_path, "target_path")
    sources = list(_decoded_lines(source_path))
    targets = list(_decoded_lines(target_path))
    if len(sources) != len(targets):
        raise ValueError(
            "`source_path` and `target_path` must have the same number of "
            f"lines. Received: {len(sources)} lines in "
            f"source_path={str(source_path)!r} and {len(targets)} lines in "
            f"target_path={str(target_path)!r}"
        )
    collector = _Collector()
    for line_number, (source, target) in enumerate(zip(sources, targets), 1):
        collector.lines_read += 1
        if source is None or target is None:
            collector.skip(UNDECODABLE, line_number)
        else:
            collector.add(source, target, line_number)
    return collector.corpus(f"{source_path},{target_path}")


def corpus_from_pairs(pairs: Iterable[tuple[str, str]],
                      name: str = "pairs") -> ParallelCorpus:
    """Builds a `ParallelCorpus` from (source, target) string pairs as is."""
    sources, targets = [], []
    for i, pair in enumerate(pairs):
        if (not isinstance(pair, (tuple, list)) or len(pair) != 2
                or not all(isinstance(s, str) for s in pair)):
            raise TypeError(
                "`pairs` must hold (source, target) pairs of str. "
                f"Received: pairs[{i}]={pair!r}"
            )
        sources.append(pair[0])
        targets.append(pair[1])
    return ParallelCorpus(sources, targets, name=name)

"""Builds the bundled Debian package-description summarization corpus.

Each pair is (extended description, synopsis) of one Debian binary package:
the source is the long `Description-en` text from Debian's `Translation-en`
file, flattened to one line; the target is its first line, the one-line
synopsis. Descriptions are joined to the `Packages` file by (Package,
Description-md5) to learn each binary package's source package, and the
train/validation/test split is made by source package, so that no source
package has pairs in two splits.

Flattening the long description (`flatten_description`):

- the one leading space of each continuation line is removed, and the lines
  are joined with spaces; a " ." line (a paragraph break) becomes a space;
- a bullet marker ("*", "-", "+", "o", "•") followed by a space at the start
  of a line is dropped, keeping the item's text;
- every run of whitespace (tabs and Unicode line breaks included) becomes
  one space, so no field holds a tab or a newline.

Pairs are dropped, and counted per reason, when the description has no match
in `Packages`, the synopsis is empty, or the flattened description has fewer
than `--min-words` words. Pairs with the same flattened description are kept
once (the first in (source package, package) order), so no description
appears in two splits. The split is a keyed BLAKE2b hash of the source
package name, the same on every platform; the shipped training split keeps
the `--max-train-pairs` pairs of lowest hash.

Standard library only. Example (the command that built the shipped files):

    python examples/build_debian_corpus.py \\
        --out keras_transformer/data/debian_descriptions
"""

import argparse
import collections
import hashlib
import lzma
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import urllib.request

MIRROR = "http://deb.debian.org/debian/dists/bookworm/main"
TRANSLATION_URL = f"{MIRROR}/i18n/Translation-en.xz"
PACKAGES_URL = f"{MIRROR}/binary-amd64/Packages.xz"
LOCAL_PACKAGES = pathlib.Path(
    "/var/lib/apt/lists/"
    "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4"
)
SPLITS = ("train", "validation", "test")
# Fractions of the hash space for the test and validation splits; the rest
# is training.
TEST_FRACTION = 0.05
VALIDATION_FRACTION = 0.05
HASH_KEY = b"keras_transformer.debian"
DEFAULT_MIN_WORDS = 12
DEFAULT_MAX_TRAIN_PAIRS = 32_000

_STAT_NAMES = ("read", "joined", "dropped_not_in_packages",
               "dropped_empty_synopsis", "dropped_short_description",
               "duplicates", "kept")
_BULLET = re.compile(r"^[*\-+o\u2022]\s+")


def read_text(path) -> str:
    """Returns a file's text: .xz, .lz4 (through `lz4cat`) or plain UTF-8."""
    path = pathlib.Path(path)
    if path.suffix == ".xz":
        data = lzma.decompress(path.read_bytes())
    elif path.suffix == ".lz4":
        data = subprocess.run(["lz4cat", str(path)], check=True,
                              stdout=subprocess.PIPE).stdout
    else:
        data = path.read_bytes()
    return data.decode("utf-8")


def parse_stanzas(text: str):
    """Yields each deb822 stanza as a dict; continuation lines keep "\\n"."""
    stanza, field = {}, None
    for line in text.split("\n"):
        if not line.strip():
            if stanza:
                yield stanza
            stanza, field = {}, None
        elif line[0] in " \t":
            if field is not None:
                stanza[field] += "\n" + line
        else:
            field, _, value = line.partition(":")
            stanza[field] = value.strip()
    if stanza:
        yield stanza


def source_package(stanza: dict) -> str:
    """The source package of a `Packages` stanza, without its version."""
    source = stanza.get("Source") or stanza["Package"]
    return source.split(" (", 1)[0].strip()


def package_sources(text: str) -> dict:
    """Maps (Package, Description-md5) to the source package name."""
    sources = {}
    for stanza in parse_stanzas(text):
        if "Package" in stanza:
            md5 = stanza.get("Description-md5", "")
            sources[stanza["Package"], md5] = source_package(stanza)
    return sources


def flatten_description(lines) -> str:
    """Joins the continuation lines of a long description into one line."""
    words = []
    for line in lines:
        line = line[1:] if line.startswith(" ") else line
        if line.strip() == ".":
            continue  # A paragraph break: the join already adds a space.
        words.extend(_BULLET.sub("", line.strip()).split())
    return " ".join(words)


def split_description(value: str) -> tuple[str, str]:
    """Returns (synopsis, flattened long description) of `Description-en`."""
    first, *rest = value.split("\n")
    return " ".join(first.split()), flatten_description(rest)


def split_of(source: str) -> str:
    """The split of a source package, from a keyed hash of its name."""
    return _split_for_fraction(_hash_fraction(source))


def _hash_fraction(source: str) -> float:
    digest = hashlib.blake2b(source.encode("utf-8"), digest_size=8,
                             key=HASH_KEY).digest()
    return int.from_bytes(digest, "big") / 2**64


def _split_for_fraction(fraction: float) -> str:
    if fraction < TEST_FRACTION:
        return "test"
    if fraction < TEST_FRACTION + VALIDATION_FRACTION:
        return "validation"
    return "train"


def build_pairs(translation_text: str, sources: dict,
                min_words: int = DEFAULT_MIN_WORDS):
    """Returns ({split: [(source_package, description, synopsis)]}, stats).

    Pairs of each split are sorted by hash of their source package, then by
    source package and description, so a prefix is a deterministic sample.
    """
    stats = collections.Counter(dict.fromkeys(_STAT_NAMES, 0))
    candidates = []
    for stanza in parse_stanzas(translation_text):
        if "Description-en" not in stanza:
            continue
        stats["read"] += 1
        key = (stanza.get("Package"), stanza.get("Description-md5"))
        if key not in sources:
            stats["dropped_not_in_packages"] += 1
            continue
        stats["joined"] += 1
        synopsis, description = split_description(stanza["Description-en"])
        if not synopsis:
            stats["dropped_empty_synopsis"] += 1
        elif len(description.split()) < min_words:
            stats["dropped_short_description"] += 1
        else:
            candidates.append((sources[key], key[0], description, synopsis))
    splits = {name: [] for name in SPLITS}
    seen = set()
    for source, _, description, synopsis in sorted(candidates):
        if description in seen:
            stats["duplicates"] += 1
            continue
        seen.add(description)
        stats["kept"] += 1
        splits[split_of(source)].append((source, description, synopsis))
    for pairs in splits.values():
        pairs.sort(key=lambda p: (_hash_fraction(p[0]), p))
    return splits, stats


def write_split(pairs, path) -> int:
    """Writes `description<TAB>synopsis` lines, xz-compressed; returns size."""
    lines = "".join(f"{d}\t{s}\n" for _, d, s in pairs)
    path = pathlib.Path(path)
    path.write_bytes(lzma.compress(lines.encode("utf-8"),
                                   preset=9 | lzma.PRESET_EXTREME))
    return path.stat().st_size


def _download(url: str, directory: str) -> pathlib.Path:
    path = pathlib.Path(directory) / url.rsplit("/", 1)[1]
    print(f"downloading {url}", file=sys.stderr)
    urllib.request.urlretrieve(url, path)
    return path


def _mean_words(texts) -> float:
    texts = list(texts)
    return sum(len(t.split()) for t in texts) / max(len(texts), 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--translation", help="a Translation-en file (.xz "
                        f"or plain); default: download {TRANSLATION_URL}")
    parser.add_argument("--packages", help="a Packages file (.lz4, .xz or "
                        f"plain); default: {LOCAL_PACKAGES} if present, "
                        f"else download {PACKAGES_URL}")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--min-words", type=int, default=DEFAULT_MIN_WORDS)
    parser.add_argument("--max-train-pairs", type=int,
                        default=DEFAULT_MAX_TRAIN_PAIRS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        translation = args.translation or _download(TRANSLATION_URL, tmp)
        packages = args.packages or (
            LOCAL_PACKAGES if LOCAL_PACKAGES.is_file()
            else _download(PACKAGES_URL, tmp))
        sources = package_sources(read_text(packages))
        splits, stats = build_pairs(read_text(translation), sources,
                                    args.min_words)
    stats["train_before_cap"] = len(splits["train"])
    splits["train"] = splits["train"][:args.max_train_pairs]
    os.makedirs(args.out, exist_ok=True)
    for name, value in stats.items():
        print(f"{name}: {value}")
    total = 0
    for name in SPLITS:
        pairs = splits[name]
        size = write_split(pairs, pathlib.Path(args.out, f"{name}.tsv.xz"))
        total += size
        print(f"{name}: {len(pairs)} pairs, "
              f"{len({p[0] for p in pairs})} source packages, {size} bytes, "
              f"mean words {_mean_words(p[1] for p in pairs):.1f} "
              f"(description) / {_mean_words(p[2] for p in pairs):.1f} "
              "(synopsis)")
    print(f"total compressed: {total} bytes")


if __name__ == "__main__":
    main()

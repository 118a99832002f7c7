"""A/B of the ONNX search graph's rewrites (`export.onnx.fuse`), one process.

    python -m keras_transformer.benchmarks.onnx_fusion [--rounds 15]

builds the harness's model ("small": 3 + 3 layers, d_model 256, 8,000 ids,
random weights, the [END] logit pinned so every search runs to 64 tokens),
converts its greedy and beam searches once, and from each makes the graph
before this module's rewrites ("lean", as shipped before), the standard-
ops graph ("standard": `where_selects`, what
`export_onnx(operators="standard")` writes) and onnxruntime's fused graph
("onnxruntime", the default export: also `MultiHeadAttention`), and that
graph with `fuse.fuse_skip_layer_norms` too (measured, not shipped). Every
variant must give the ids of "lean"; then they are timed interleaved (one
call of each in turn per round) at batch 1 and 32, sources of 16 tokens,
with one intra-op thread or the default threads (`--threads`). Prints a
Markdown table of medians (min-max) and each variant's ratio to "lean"."""

import argparse
import statistics
import time
from unittest import mock

import numpy as np

from keras_transformer.benchmarks import ours
from keras_transformer.benchmarks.harness import _small_config

SOURCE_LENGTH, OUTPUT_LENGTH, BEAM = 16, 64, 4


def _variants(model):
    import onnx

    from keras_transformer.export.onnx import fuse
    from keras_transformer.export.onnx.graph import graphs, scoped_constants

    def copy():
        other = onnx.ModelProto()
        other.CopyFrom(model)
        return other

    def full(contrib, skip_layer_norms=False):
        def apply():
            graph = copy()
            fuse.fuse_search(graph, contrib=contrib)
            if skip_layer_norms:
                for sub, parents in graphs(graph.graph):
                    fuse.fuse_skip_layer_norms(
                        sub, scoped_constants(sub, parents))
                    fuse.drop_dead_nodes(sub)
            return graph
        return apply

    return {"lean": copy, "standard": full(False),
            "onnxruntime": full(True),
            "onnxruntime + SkipLayerNormalization": full(True, True)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, nargs="+", default=[0],
                        help="onnxruntime intra-op threads, 0 its default "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import tensorflow as tf

    from keras_transformer.config import TransformerConfig
    from keras_transformer.export.onnx.convert import convert_search
    from keras_transformer.export.onnx.graph import graphs
    from keras_transformer.text.special_tokens import END_ID

    config = TransformerConfig.from_dict(_small_config())
    tokenizer = ours.synthetic_tokenizer(config.target_vocab_size)
    model = ours.build_model(config)
    ours.suppress_token(model, END_ID)
    translator = ours.make_translator(
        model, tokenizer, extra_length=OUTPUT_LENGTH - SOURCE_LENGTH)
    rng = np.random.default_rng(1)
    sources = {}
    for batch in (1, 32):
        source = ours.random_ids(rng, batch, SOURCE_LENGTH,
                                 config.source_vocab_size)
        source[:, -1] = END_ID
        sources[batch] = source
    print(f"onnxruntime {ort.__version__}, tensorflow {tf.__version__}; "
          f"{args.rounds} interleaved rounds\n")
    print("| mode | threads | batch | variant | body nodes | ms median "
          "(min-max) | lean / variant |")
    print("|---|---|---:|---|---:|---|---:|")
    for mode in ("greedy", "beam"):
        # The graph as converted before `export.onnx.fuse` existed.
        with mock.patch("keras_transformer.export.onnx.convert.fuse_search",
                        lambda model, contrib: {}):
            converted = convert_search(translator, mode)
        variants = {name: make() for name, make in
                    _variants(converted).items()}
        nodes = {}
        for name, graph in variants.items():
            loop = next(n for n in graph.graph.node if n.op_type == "Loop")
            body = next(a.g for a in loop.attribute if a.name == "body")
            nodes[name] = sum(len(g.node) for g, _ in graphs(body))
        for threads in args.threads:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            sessions = {name: ort.InferenceSession(
                graph.SerializeToString(), options,
                providers=["CPUExecutionProvider"])
                for name, graph in variants.items()}
            for batch, source in sources.items():
                ids = {}
                for name, session in sessions.items():
                    names = [o.name for o in session.get_outputs()]
                    out = dict(zip(names, session.run(
                        None, {"source_ids": source})))
                    ids[name] = out["target_ids"]
                for name in ids:
                    if not np.array_equal(ids[name], ids["lean"]):
                        raise AssertionError(f"{mode} {name}: other ids")
                times = {name: [] for name in sessions}
                for _ in range(args.rounds):
                    for name, session in sessions.items():
                        start = time.perf_counter()
                        session.run(None, {"source_ids": source})
                        times[name].append(time.perf_counter() - start)
                base = statistics.median(times["lean"])
                for name, values in times.items():
                    median = statistics.median(values)
                    print(f"| {mode} | {threads or 'default'} | {batch} | "
                          f"{name} | {nodes[name]} | {1000 * median:.2f} "
                          f"({1000 * min(values):.2f}-"
                          f"{1000 * max(values):.2f}) | "
                          f"{base / median:.2f} |", flush=True)


if __name__ == "__main__":
    main()

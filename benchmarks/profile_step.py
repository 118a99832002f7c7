"""Where a training step goes: our model against the tutorial-style one.

Builds "ours" and "tutorial" (float32, no XLA) exactly as the training-speed
benchmark does (`train_speed._build`, the sizes of `harness.full_settings`),
feeds both the same token-budget batches (`train_speed.training_batches`),
warms each up, then:

1. times passes over the batches without the profiler (steps per second,
   median of `--passes`; the peers' passes alternate, so a change of load on
   the machine hits both);
2. traces `--steps` calls of `train_on_batch` with the TensorFlow profiler
   (`tf.profiler.experimental.start/stop`) into `--logdir/<peer>`;
3. reads the `.xplane.pb` it wrote (the "/host:CPU" plane: one event per
   executed TensorFlow op, named "scope/op_name:OpType") and sums each op
   type's *self* time (its duration less that of ops nested in it) over the
   traced steps, and also by model part (forward / backward, encoder,
   decoder, loss, optimizer, ...).

It prints markdown tables: op type | ours ms/step | share | tutorial
ms/step | share (top `--top` of ours), the same by model part, and the
steps per second of both.

    python -m benchmarks.profile_step                       # both peers
    python -m benchmarks.profile_step --batches 0,2,4,6,8 --peers ours \
        --save /tmp/ours.json                               # one peer ...
    python -m benchmarks.profile_step --merge /tmp/ours.json /tmp/tut.json

`--batches` picks some of the benchmark's batches (indices into its list,
or "all"); `--quick` uses the harness's tiny smoke-test sizes. Op times
are wall-clock times of the op on its executor thread (its intra-op
parallel work included); two inter-op threads can run ops at once, so the
ops' sum per step can exceed the step's wall time.
"""

import argparse
import collections
import contextlib
import gc
import glob
import json
import os
import re
import statistics
import sys
import time
import warnings

PEERS = ("ours", "tutorial")
# "scope/name:OpType"; the executor's own events ("ExecutorState::Process")
# and eager events ("EagerLocalExecute: X") do not match.
_OP_EVENT = re.compile(r"^([^\s:]+):([A-Za-z_][A-Za-z0-9_]*)$")
_INDEX_SUFFIX = re.compile(r"(_\d+)+$")
_LAYER_SCOPE = re.compile(r"^(encoder|decoder)_layer$")
_STEP_EVENT = "profiled_train_step"


# -- batches and models -------------------------------------------------------

def _settings(quick: bool) -> dict:
    from keras_transformer.benchmarks import harness

    return harness.quick_settings() if quick else harness.full_settings()


def _select(batches: list, spec: str) -> tuple[list, list]:
    """The batches `spec` names ("all", or indices "0,2,4") and their indices.
    """
    if spec == "all":
        indices = list(range(len(batches)))
    else:
        indices = [int(part) for part in spec.split(",") if part.strip()]
        for index in indices:
            if not 0 <= index < len(batches):
                raise SystemExit(f"--batches: no batch {index} (the "
                                 f"benchmark has {len(batches)})")
    return [batches[i] for i in indices], indices


def _load_batches(config, settings: dict, cache: str | None) -> list:
    """`training_batches(config, settings)`, kept in `cache` (.npz) if given.
    """
    import numpy as np

    from keras_transformer.benchmarks.train_speed import training_batches

    # The cache holds the settings it was made with; others remake it.
    key = json.dumps([config.to_dict(), settings["train_batch_tokens"],
                      settings["train_batches"],
                      settings.get("train_max_length")], sort_keys=True)
    if cache and os.path.exists(cache):
        with np.load(cache) as stored:
            if "key" in stored.files and str(stored["key"]) == key:
                count = (len(stored.files) - 1) // 3
                return [tuple(stored[f"{kind}{i}"] for kind in "sdl")
                        for i in range(count)]
    batches = training_batches(config, settings)
    if cache:
        np.savez(cache, key=np.array(key),
                 **{f"{kind}{i}": array
                    for i, batch in enumerate(batches)
                    for kind, array in zip("sdl", batch)})
    return batches


class Peer:
    """One compiled model and its feeds (inputs, labels) in batch order."""

    def __init__(self, name: str, config, batches: list):
        import keras

        from keras_transformer.benchmarks import train_speed

        self.name = name
        keras.utils.set_random_seed(0)
        keras.config.set_dtype_policy("float32")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model, kind = train_speed._build(name, config, False)
        self.feeds = train_speed._feeds(batches, kind)
        self.parameters = int(self.model.count_params())

    def step(self, index: int):
        inputs, labels = self.feeds[index % len(self.feeds)]
        return self.model.train_on_batch(inputs, labels)

    def one_pass(self):
        for index in range(len(self.feeds)):
            self.step(index)


# -- timing and tracing -------------------------------------------------------

@contextlib.contextmanager
def _no_gc():
    """Collects first, then keeps Python's collector out of the timing."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _timed(fn) -> dict:
    """Runs fn(); its wall seconds and the cores other processes took."""
    from keras_transformer.benchmarks import timing

    with _no_gc():
        busy, own = timing.machine_busy_seconds(), timing.own_cpu_seconds()
        start = time.perf_counter()
        fn()
        wall = time.perf_counter() - start
    others = None
    if busy is not None:
        others = ((timing.machine_busy_seconds() - busy)
                  - (timing.own_cpu_seconds() - own)) / wall
    return {"seconds": wall, "other_cores": others}


def time_passes(peers: list, passes: int) -> dict:
    """Passes over each peer's batches, alternating peers and their order.
    """
    samples = {peer.name: [] for peer in peers}
    for number in range(passes):
        order = peers if number % 2 == 0 else peers[::-1]
        for peer in order:
            samples[peer.name].append(_timed(peer.one_pass))
    result = {}
    for peer in peers:
        seconds = [s["seconds"] for s in samples[peer.name]]
        median = statistics.median(seconds)
        others = [s["other_cores"] for s in samples[peer.name]
                  if s["other_cores"] is not None]
        result[peer.name] = {
            "pass_seconds": seconds,
            "median_pass_seconds": median,
            "steps_per_second": len(peer.feeds) / median,
            "ms_per_step": 1000 * median / len(peer.feeds),
            "other_processes_cores": (statistics.mean(others)
                                      if others else None),
        }
    return result


def trace(peer: Peer, steps: int, logdir: str) -> tuple[str, float]:
    """Profiles `steps` train_on_batch calls; the .xplane.pb and wall s."""
    import tensorflow as tf

    directory = os.path.join(logdir, peer.name)
    before = set(glob.glob(os.path.join(directory, "plugins", "profile",
                                        "*", "*.xplane.pb")))
    options = tf.profiler.experimental.ProfilerOptions(
        host_tracer_level=2, python_tracer_level=0, device_tracer_level=0)
    with _no_gc():
        tf.profiler.experimental.start(directory, options=options)
        start = time.perf_counter()
        try:
            for index in range(steps):
                with tf.profiler.experimental.Trace(_STEP_EVENT,
                                                    step_num=index, _r=1):
                    peer.step(index)
        finally:
            wall = time.perf_counter() - start
            tf.profiler.experimental.stop()
    written = set(glob.glob(os.path.join(directory, "plugins", "profile",
                                         "*", "*.xplane.pb"))) - before
    if not written:
        raise RuntimeError(f"The profiler wrote no .xplane.pb under "
                           f"{directory}")
    return max(written, key=os.path.getmtime), wall


# -- reading the trace --------------------------------------------------------

# Ops that build masks and shapes rather than compute on activations.
_MASK_OPS = frozenset((
    "Range", "GreaterEqual", "LogicalAnd", "ExpandDims", "BroadcastTo",
    "Shape", "StridedSlice", "Pack", "NotEqual", "Cast", "Reshape"))
_ATTENTION = {"self_attention": "self-attention",
              "global_self_attention": "self-attention",
              "causal_self_attention": "self-attention",
              "cross_attention": "cross-attention"}


def _scope_part(op_name: str, op_type: str = "") -> str:
    """The model part an op belongs to, from its name scope; one vocabulary
    for both models.

    "gradient_tape/transformer_1/decoder_1/decoder_layer_0_1/
    self_attention_1/..." -> "bwd decoder self-attention"; "adam/..." ->
    "optimizer (Adam)"; "compile_loss/..." -> "fwd loss". The tutorial's
    residual Add and LayerNorm live inside its attention / feed-forward
    scopes; they are told apart by their own scope names. Our decoder
    layer calls its cross-attention's `compute_key_value` and `attend`
    directly, so those ops carry the decoder layer's scope: they count
    as cross-attention here, except mask and shape ops ("layer-level
    masks").
    """
    parts = op_name.split("/")
    direction = "fwd"
    if parts[0] == "gradient_tape":
        direction, parts = "bwd", parts[1:]
    names = [_INDEX_SUFFIX.sub("", part) for part in parts[:-1]]
    if not names:
        return "top level (metric, counters)"
    head = names[0]
    if head in ("adam", "Adam"):
        return "optimizer (Adam)"
    if head == "compile_loss":
        return f"{direction} loss"
    if head == "compile_metrics":
        return f"{direction} metric"
    if head.startswith("AddN"):
        return "gradient sums (AddN)"
    if head not in ("transformer", "tutorial_transformer"):
        return f"{direction} {head}"
    inner = names[1:]
    if not inner:
        return f"{direction} model top level"
    first, rest = inner[0], inner[1:]
    if first in ("encoder", "decoder"):
        in_layer = any(_LAYER_SCOPE.match(n) for n in rest)
        rest = [n for n in rest if not _LAYER_SCOPE.match(n)]
        if not in_layer and (not rest or rest[0] in (
                "dropout", "positional_embedding")):
            return f"{direction} embeddings + positions + dropout"
        sub = rest[0] if rest else None
        known = sub is not None and (
            sub in _ATTENTION or sub == "feed_forward"
            or sub.endswith("_residual"))
        if not known:
            # Ours: the cross-attention's projections and its softmax run
            # at the decoder layer's scope (besides the layer's masks).
            if op_type in _MASK_OPS:
                return f"{direction} {first} layer-level masks"
            if first == "decoder":
                return f"{direction} decoder cross-attention"
            return f"{direction} {first} layer-level"
        if sub.endswith("_residual") or (
                len(rest) > 1 and rest[1] in ("layer_normalization", "add")):
            return f"{direction} {first} residual + LayerNorm"
        if sub == "feed_forward":
            return f"{direction} {first} feed-forward"
        if sub in _ATTENTION:
            return f"{direction} {first} {_ATTENTION[sub]}"
        return f"{direction} {first} {sub}"
    if first == "target_embedding" and any(
            n in ("Tensordot", "transpose", "MatMul") for n in rest):
        return f"{direction} output projection"
    if first in ("source_embedding", "target_embedding",
                 "positional_encoding", "encoder_dropout",
                 "decoder_dropout"):
        return f"{direction} embeddings + positions + dropout"
    if first == "dense":
        return f"{direction} output projection"
    return f"{direction} {first}"


def read_xplane(path: str, steps: int) -> dict:
    """Per-op-type and per-part self time (ms per step) from one trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(path, "rb") as handle:
        space.ParseFromString(handle.read())
    planes = [p for p in space.planes if p.name == "/host:CPU"]
    if not planes:
        raise RuntimeError(f"No /host:CPU plane in {path}")
    plane = planes[0]
    by_type = collections.Counter()
    by_part = collections.Counter()
    by_type_part = collections.defaultdict(collections.Counter)
    counts = collections.Counter()
    step_ps, function_ps = [], []
    for line in plane.lines:
        ops = []
        for event in line.events:
            name = plane.event_metadata[event.metadata_id].name
            if name == _STEP_EVENT:
                step_ps.append(event.duration_ps)
                continue
            if name.startswith("EagerLocalExecute: __inference_"):
                function_ps.append(event.duration_ps)
                continue
            match = _OP_EVENT.match(name)
            if match:
                ops.append((event.offset_ps, event.duration_ps,
                            match.group(1), match.group(2)))
        # Self time: a nested op's time belongs to it, not to its parent.
        ops.sort(key=lambda op: (op[0], -op[1]))
        self_ps = [duration for _, duration, _, _ in ops]
        stack = []  # indices of open ops
        for index, (start, duration, _, _) in enumerate(ops):
            while stack and ops[stack[-1]][0] + ops[stack[-1]][1] <= start:
                stack.pop()
            if stack:
                self_ps[stack[-1]] -= duration
            stack.append(index)
        for (_, _, op_name, op_type), own in zip(ops, self_ps):
            part = _scope_part(op_name, op_type)
            by_type[op_type] += own
            by_part[part] += own
            by_type_part[op_type][part] += own
            counts[op_type] += 1

    def per_step_ms(counter):
        return {key: value / 1e9 / steps for key, value in counter.items()}

    return {
        "xplane": path,
        "steps": steps,
        "op_ms_per_step": per_step_ms(by_type),
        "part_ms_per_step": per_step_ms(by_part),
        "op_part_ms_per_step": {op: per_step_ms(parts)
                                for op, parts in by_type_part.items()},
        "op_count_per_step": {op: n / steps for op, n in counts.items()},
        "total_op_ms_per_step": sum(by_type.values()) / 1e9 / steps,
        "traced_step_ms": [ps / 1e9 for ps in step_ps],
        # The train function's run (the graph) against the whole
        # train_on_batch call: the rest is host-side Python / input work.
        "function_run_ms": [ps / 1e9 for ps in function_ps],
    }


# -- report --------------------------------------------------------------------

def _ms(value) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _share(value, total) -> str:
    return "-" if value is None or not total else f"{100 * value / total:.1f}%"


def _table(title: str, key: str, results: dict, top: int) -> list[str]:
    """Markdown rows: ours' top `top` keys, then "other" and the total."""
    ours, tutorial = results.get("ours"), results.get("tutorial")
    first = ours or tutorial
    ranked = sorted(first[key], key=first[key].get, reverse=True)
    shown = ranked[:top]
    if ours and tutorial:
        # The tutorial's own heavy rows, if ours' top misses them.
        extra = sorted(tutorial[key], key=tutorial[key].get, reverse=True)
        shown += [k for k in extra[:5] if k not in shown]
    lines = [f"| {title} | ours ms/step | share | tutorial ms/step | share "
             "| ours - tutorial ms |", "|---|---:|---:|---:|---:|---:|"]
    totals = {name: (r["total_op_ms_per_step"] if r else None)
              for name, r in (("ours", ours), ("tutorial", tutorial))}

    def cell(result, name, k):
        return result[key].get(k, 0.0) if result else None

    for k in shown:
        a, b = cell(ours, "ours", k), cell(tutorial, "tutorial", k)
        diff = "-" if a is None or b is None else f"{a - b:+,.1f}"
        lines.append(f"| {k} | {_ms(a)} | {_share(a, totals['ours'])} | "
                     f"{_ms(b)} | {_share(b, totals['tutorial'])} | {diff} |")
    rest = {}
    for name, result in (("ours", ours), ("tutorial", tutorial)):
        rest[name] = (None if result is None else
                      sum(v for k, v in result[key].items()
                          if k not in shown))
    diff = ("-" if None in rest.values()
            else f"{rest['ours'] - rest['tutorial']:+,.1f}")
    lines.append(f"| (other) | {_ms(rest['ours'])} | "
                 f"{_share(rest['ours'], totals['ours'])} | "
                 f"{_ms(rest['tutorial'])} | "
                 f"{_share(rest['tutorial'], totals['tutorial'])} | {diff} |")
    diff = ("-" if None in totals.values()
            else f"{totals['ours'] - totals['tutorial']:+,.1f}")
    lines.append(f"| **total op self time** | **{_ms(totals['ours'])}** | "
                 f"100% | **{_ms(totals['tutorial'])}** | 100% | {diff} |")
    return lines


def _difference_rows(results: dict, count: int = 10) -> list[str]:
    """The op types ours spends most extra time in, and in which parts."""
    ours, tutorial = results["ours"], results["tutorial"]
    types = set(ours["op_ms_per_step"]) | set(tutorial["op_ms_per_step"])

    def diff(op):
        return (ours["op_ms_per_step"].get(op, 0.0)
                - tutorial["op_ms_per_step"].get(op, 0.0))

    def where(result, op):
        parts = result["op_part_ms_per_step"].get(op, {})
        ranked = sorted(parts.items(), key=lambda kv: kv[1], reverse=True)
        return "; ".join(f"{part} {ms:.1f}" for part, ms in ranked[:3]
                         if ms >= 0.05) or "-"

    lines = ["| op type (largest ours - tutorial) | ms/step | ops/step "
             "ours / tutorial | ours: where (ms/step) | tutorial: where "
             "(ms/step) |", "|---|---:|---:|---|---|"]
    for op in sorted(types, key=lambda op: abs(diff(op)),
                     reverse=True)[:count]:
        lines.append(
            f"| {op} | {diff(op):+,.1f} | "
            f"{ours['op_count_per_step'].get(op, 0):,.0f} / "
            f"{tutorial['op_count_per_step'].get(op, 0):,.0f} | "
            f"{where(ours, op)} | {where(tutorial, op)} |")
    return lines


def _outside_graph(result: dict) -> str:
    """ms per step of train_on_batch outside the train function's run."""
    steps, runs = result.get("traced_step_ms"), result.get("function_run_ms")
    if not steps or not runs or len(steps) != len(runs):
        return "-"
    return f"{(sum(steps) - sum(runs)) / len(steps):,.1f}"


def render(results: dict, top: int) -> str:
    lines = []
    any_result = next(iter(results.values()))
    lines.append(f"Batches {any_result['batch_indices']} of the benchmark's "
                 f"`training_batches` (pairs, source, target): "
                 f"{any_result['batch_shapes']}; {any_result['steps']} "
                 "profiled steps per model (ms/step = sum over them / "
                 "steps).")
    lines.append("")
    lines.extend(_table("op type", "op_ms_per_step", results, top))
    lines.append("")
    lines.extend(_table("model part (name scope)", "part_ms_per_step",
                        results, top))
    if "ours" in results and "tutorial" in results:
        lines.append("")
        lines.extend(_difference_rows(results))
    lines.append("")
    lines.append("| model | parameters | steps/s (no profiler) | ms/step "
                 "| passes (s) | other processes (cores) | profiled ms/step "
                 "(wall) | of which outside the graph (ms/step) |")
    lines.append("|---|---:|---:|---:|---|---:|---:|---:|")
    for name in PEERS:
        r = results.get(name)
        if not r:
            continue
        t = r["timing"]
        others = t["other_processes_cores"]
        lines.append(
            f"| {name} | {r['parameters']:,} | {t['steps_per_second']:.3f} "
            f"| {t['ms_per_step']:,.1f} | "
            f"{', '.join(f'{s:.2f}' for s in t['pass_seconds'])} | "
            f"{'-' if others is None else f'{others:.2f}'} | "
            f"{1000 * r['profiled_wall_seconds'] / r['steps']:,.1f} | "
            f"{_outside_graph(r)} |")
    if "ours" in results and "tutorial" in results:
        a = results["ours"]["timing"]["steps_per_second"]
        b = results["tutorial"]["timing"]["steps_per_second"]
        same = (results["ours"].get("process")
                == results["tutorial"].get("process"))
        lines.append("")
        lines.append(f"Steps/s ratio ours / tutorial: **{a / b:.3f}** "
                     + ("(same process, alternating passes)." if same else
                        "(separate processes: compare with care)."))
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------

def run(args) -> dict:
    from keras_transformer.benchmarks.train_speed import _config

    settings = _settings(args.quick)
    config = _config(settings)
    batches, indices = _select(_load_batches(config, settings, args.cache),
                               args.batches)
    shapes = [[int(source.shape[0]), int(source.shape[1]),
               int(labels.shape[1])] for source, _, labels in batches]
    steps = args.steps or len(batches)
    # Every model is built (each after `set_random_seed(0)`) before any
    # is warmed up: a new global seed makes tf.function retrace, so
    # building the second model after the first one's warm-up would
    # retrace the first one's train function in its timed passes.
    peers = [Peer(name, config, batches) for name in args.peers]
    for peer in peers:
        started = time.perf_counter()
        # Traces every batch shape, then a few more steps.
        peer.one_pass()
        for index in range(args.warmup):
            peer.step(index)
        print(f"[{peer.name}] warmed up in "
              f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
    timings = time_passes(peers, args.passes)
    results = {}
    for peer in peers:
        path, wall = trace(peer, steps, args.logdir)
        result = read_xplane(path, steps)
        result.update({
            "peer": peer.name, "parameters": peer.parameters,
            "batch_indices": indices, "batch_shapes": shapes,
            "profiled_wall_seconds": wall, "timing": timings[peer.name],
            "process": os.getpid(), "quick": args.quick,
        })
        results[peer.name] = result
        print(f"[{peer.name}] traced {steps} steps in {wall:.1f} s: {path}",
              file=sys.stderr)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile_step",
        description="Profile train_on_batch of ours and the tutorial-style "
                    "model; per-op-type self time per step.")
    parser.add_argument("--peers", nargs="+", default=list(PEERS),
                        choices=PEERS)
    parser.add_argument("--batches", default="all",
                        help='"all" or indices into the benchmark\'s '
                             'batches, e.g. "0,2,4,6,8"')
    parser.add_argument("--steps", type=int, default=0,
                        help="profiled steps (default: one pass)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="steps after the first (tracing) pass")
    parser.add_argument("--passes", type=int, default=3,
                        help="timed passes without the profiler")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--logdir", default="/tmp/profile_step")
    parser.add_argument("--cache", default=None,
                        help="an .npz to keep the batches in")
    parser.add_argument("--save", default=None, help="write results JSON")
    parser.add_argument("--merge", nargs="+", default=None,
                        help="JSON files of earlier --save runs to report")
    parser.add_argument("--quick", action="store_true",
                        help="the harness's tiny smoke-test sizes")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.merge:
        results = {}
        for path in args.merge:
            with open(path, encoding="utf-8") as handle:
                results.update(json.load(handle))
        for result in results.values():
            # Re-read the traces where they still exist (the op and part
            # tables then follow this file's current rules).
            if os.path.exists(result["xplane"]):
                result.update(read_xplane(result["xplane"], result["steps"]))
    else:
        results = run(args)
        if args.save:
            with open(args.save, "w", encoding="utf-8") as handle:
                json.dump(results, handle, indent=1)
    print(render(results, args.top))


if __name__ == "__main__":
    main()

"""Repeated timing with disturbance detection, and a description of the machine.

Every figure of the benchmarks is the median of several repeats taken after
warm-up calls. A repeat is *disturbed* when other processes used the CPU
while it ran: on Linux the busy CPU time of the whole machine
(`/proc/stat`) minus this process's own CPU time (`os.times()`) must stay
below `DISTURBANCE_SHARE` of the repeat's wall time (plus two clock ticks of
slack). Disturbed repeats, and clean repeats slower than `OUTLIER_RATIO`
times the median of the others, are run again (up to `max_attempts`
repeats in all, by default twice `repeats`) and never reported. When too
few clean repeats remain, the figure is reported from what there is and
flagged as noisy.
"""

import dataclasses
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable

DISTURBANCE_SHARE = 0.10
OUTLIER_RATIO = 1.5
_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw",
          "avx512vl", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile",
          "amx_bf16", "amx_int8")


@dataclasses.dataclass
class Measurement:
    """Seconds per call: median, min and max over the clean repeats."""

    median: float
    minimum: float
    maximum: float
    repeats: int
    discarded: int
    calls_per_repeat: int
    noisy: bool

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _clock_tick() -> float:
    try:
        return 1.0 / os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 0.01


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes have been busy since boot (None if unknown).

    Busy means user, nice, system, irq, softirq and steal time of
    /proc/stat's "cpu" line; idle and iowait are not busy.
    """
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:9]]
    busy = sum(values[i] for i in (0, 1, 2, 5, 6, 7))
    return busy * _clock_tick()


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class DisturbanceProbe:
    """Measures how much CPU other processes used between start and stop."""

    def start(self):
        self._busy = machine_busy_seconds()
        self._own = own_cpu_seconds()
        self._wall = time.perf_counter()

    def stop(self) -> tuple[float, bool]:
        """Returns (wall seconds, disturbed)."""
        wall = time.perf_counter() - self._wall
        busy = machine_busy_seconds()
        if busy is None or self._busy is None:
            return wall, False
        others = (busy - self._busy) - (own_cpu_seconds() - self._own)
        return wall, others > DISTURBANCE_SHARE * wall + 2 * _clock_tick()


def measure(fn: Callable[[], object], repeats: int = 5, warmup: int = 1,
            min_repeat_seconds: float = 0.3,
            max_attempts: int | None = None) -> Measurement:
    """Times `fn()` after `warmup` calls; returns seconds per call.

    Each repeat calls `fn` enough times to last about `min_repeat_seconds`
    (calibrated on the last warm-up call), so that the disturbance check
    has a few clock ticks to work with.
    """
    if repeats < 1 or warmup < 1:
        raise ValueError(
            "`repeats` and `warmup` must be >= 1. Received: "
            f"repeats={repeats}, warmup={warmup}")
    max_attempts = max_attempts or 2 * repeats
    single = 0.0
    for _ in range(warmup):
        start = time.perf_counter()
        fn()
        single = time.perf_counter() - start
    calls = max(1, int(min_repeat_seconds / max(single, 1e-6)))
    probe = DisturbanceProbe()
    clean, disturbed, discarded, attempts = [], [], 0, 0
    while len(clean) < repeats and attempts < max_attempts:
        attempts += 1
        probe.start()
        for _ in range(calls):
            fn()
        wall, was_disturbed = probe.stop()
        if was_disturbed:
            disturbed.append(wall / calls)
            discarded += 1
            continue
        clean.append(wall / calls)
        if len(clean) >= 3:
            kept = [t for t in clean
                    if t <= OUTLIER_RATIO * statistics.median(clean)]
            discarded += len(clean) - len(kept)
            clean = kept
    noisy = len(clean) < repeats
    samples = clean if clean else disturbed
    if noisy and len(clean) < repeats:
        samples = clean + sorted(disturbed)[:repeats - len(clean)]
    return Measurement(
        median=statistics.median(samples), minimum=min(samples),
        maximum=max(samples), repeats=len(samples), discarded=discarded,
        calls_per_repeat=calls, noisy=noisy)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if platform.system() == "Darwin" else peak * 1024


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def machine_info() -> dict:
    """Date, CPU model, cores, SIMD instruction sets, memory, load."""
    info = {"date": datetime.datetime.now().astimezone().strftime(
                "%Y-%m-%d %H:%M %Z"),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "flags": [], "memory_gib": None}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            text = cpuinfo.read()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name":
            info["cpu"] = value
        elif key == "cpu MHz" and "mhz" not in info:
            info["mhz"] = float(value)
        elif key == "flags" and not info["flags"]:
            present = set(value.split())
            info["flags"] = [flag for flag in _FLAGS if flag in present]
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            kib = int(meminfo.readline().split()[1])
        info["memory_gib"] = round(kib / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return info


def library_versions() -> dict:
    """Versions of the libraries the benchmarks use (None if missing)."""
    from importlib import metadata

    names = ("tensorflow", "keras", "keras-hub", "ctranslate2",
             "onnxruntime", "tf2onnx", "onnx", "numpy", "tensorflow-text")
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions

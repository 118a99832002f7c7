"""Tests for keras_transformer.training.distribute.

Strategies over several devices or processes run in subprocesses: devices
must be configured before TensorFlow initializes.
"""

import json
import os
import socket
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from keras_transformer.training.distribute import (
    get_strategy,
    global_sum,
    is_chief,
    worker_run_dir,
)
from tests import reference_training as reference

SCRIPT = os.path.join(os.path.dirname(__file__), "training_script.py")
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def test_default_strategy():
    strategy = get_strategy("default")
    assert strategy is tf.distribute.get_strategy()
    assert strategy.num_replicas_in_sync == 1
    assert is_chief(strategy)
    assert worker_run_dir("runs/a", strategy) == "runs/a"
    assert float(global_sum(tf.constant(3.0))) == 3.0


@pytest.mark.parametrize("kwargs,error,name", [
    (dict(name="tpu"), ValueError, "name"),
    (dict(name="default", devices=["/cpu:0"]), ValueError, "devices"),
    (dict(name="mirrored", devices="/cpu:0"), TypeError, "devices"),
    (dict(name="mirrored", devices=[]), TypeError, "devices"),
])
def test_get_strategy_rejects_bad_arguments(kwargs, error, name):
    with pytest.raises(error, match=f"`{name}`"):
        get_strategy(**kwargs)


@pytest.mark.parametrize("value", [None, "{not json", '{"task": {}}'])
def test_multi_worker_needs_a_valid_tf_config(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(ValueError, match="`TF_CONFIG`"):
        get_strategy("multi_worker")


def fake_strategy(task_type, task_id, cluster):
    resolver = types.SimpleNamespace(
        task_type=task_type, task_id=task_id,
        cluster_spec=lambda: tf.train.ClusterSpec(cluster))
    return types.SimpleNamespace(cluster_resolver=resolver)


@pytest.mark.parametrize("task_type,task_id,with_chief,expected", [
    ("worker", 0, False, True), ("worker", 1, False, False),
    ("chief", 0, True, True), ("worker", 0, True, False),
])
def test_is_chief(task_type, task_id, with_chief, expected):
    cluster = {"worker": ["a:1", "b:1"]}
    if with_chief:
        cluster["chief"] = ["c:1"]
    strategy = fake_strategy(task_type, task_id, cluster)
    assert is_chief(strategy) is expected
    expected_dir = "run" if expected else os.path.join(
        "run", "workers", f"{task_type}-{task_id}")
    assert worker_run_dir("run", strategy) == expected_dir


@pytest.mark.slow
def test_mirrored_on_two_cpus_trains_with_the_global_token_average(
        tmp_path):
    out = str(tmp_path / "out.json")
    result = subprocess.run([sys.executable, SCRIPT, "mirrored", out],
                            env=ENV, capture_output=True, timeout=240)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    with open(out, encoding="utf-8") as file:
        report = json.load(file)
    assert report["replicas"] == 2
    losses = report["history"]["loss"]
    assert len(losses) == 4 and np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    # One batch split over the replicas as 10 and 2 real tokens: the
    # logged loss is the token average of the whole batch, not the mean of
    # the two replicas' averages.
    logits = np.array(report["logits"])
    labels = np.array(report["labels"])
    expected = reference.masked_loss(labels, logits, 0.1)
    np.testing.assert_allclose(report["loss"], expected, rtol=1e-5)
    halves = [reference.masked_loss(labels[i:i + 2], logits[i:i + 2], 0.1)
              for i in (0, 2)]
    assert abs(np.mean(halves) - expected) > 1e-3
    np.testing.assert_allclose(
        report["accuracy"], reference.masked_accuracy(labels, logits),
        rtol=1e-6)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.mark.slow
def test_multi_worker_two_processes_agree(tmp_path):
    run_dir = str(tmp_path / "run")
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers},
                     "task": {"type": "worker", "index": index}}
        processes.append(subprocess.Popen(
            [sys.executable, SCRIPT, "multi_worker", run_dir,
             str(tmp_path / f"out{index}.json")],
            env=dict(ENV, TF_CONFIG=json.dumps(tf_config)),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    try:
        errors = [process.communicate(timeout=240)[1]
                  for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, error in zip(processes, errors):
        assert process.returncode == 0, error.decode()[-3000:]
    reports = []
    for index in range(2):
        with open(tmp_path / f"out{index}.json", encoding="utf-8") as file:
            reports.append(json.load(file))
    assert [r["chief"] for r in reports] == [True, False]
    assert [r["replicas"] for r in reports] == [2, 2]
    assert len(reports[0]["history"]["loss"]) == 2
    assert reports[0]["history"] == reports[1]["history"]
    # Each worker saw its own shard of the data; only synchronized
    # updates leave them with the same weights.
    for first, second in zip(reports[0]["weights"], reports[1]["weights"]):
        np.testing.assert_allclose(first, second, rtol=1e-6, atol=1e-7)
    assert os.path.exists(os.path.join(run_dir, "model.keras"))
    assert os.path.exists(
        os.path.join(run_dir, "workers", "worker-1", "model.keras"))

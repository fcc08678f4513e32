"""The pieces of training-time optimization that need no training: which worker a step goes to, the legacy-Keras
worker's environment, and sparsity measured from a file."""
from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest

from modelmake.contracts import DataJob, SourceJob, TrainJob
from modelmake.errors import StepError
from modelmake.plan import Dataset, Pruning, Source, Training
from modelmake.steps import worker
from modelmake.steps._sparsity import measured_sparsity


def _source(framework: str) -> Source:
    return Source(kind="recipe", path="r.py", function="build_model", framework=framework)


def test_only_the_source_and_train_steps_of_tf_keras_recipes_go_to_the_legacy_keras_worker():
    data = DataJob(Dataset(role="evaluation", path="r.py", from_recipe=True, function="load_data", split="test"), "out.npz")
    train = TrainJob("m.v", _source("tf-keras"), "s.json", "m.keras", Training("qat"), None, "out", "out/source.json")
    assert worker.keras_flavour(SourceJob(_source("tf-keras"), "out", "s.json")) == worker.TF_KERAS
    assert worker.keras_flavour(train) == worker.TF_KERAS
    assert worker.keras_flavour(SourceJob(_source("keras"), "out", "s.json")) == worker.KERAS
    assert worker.keras_flavour(data) == worker.KERAS


RECIPE = textwrap.dedent(
    """\
    import os

    import numpy as np


    def load_data(split):
        if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
            raise RuntimeError("TF_USE_LEGACY_KERAS is " + repr(os.environ.get("TF_USE_LEGACY_KERAS")))
        return np.zeros((2, 3), np.float32), np.zeros(2, np.int64)
    """
)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    (tmp_path / "recipe.py").write_text(RECIPE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    yield tmp_path
    worker.shutdown()


def test_the_legacy_keras_worker_has_the_variable_from_its_start_and_the_build_process_does_not(workspace):
    job = DataJob(Dataset(role="evaluation", path="recipe.py", from_recipe=True, function="load_data", split="test"), "out.npz")
    legacy = worker._Worker(worker.LEGACY_KERAS_ENVIRONMENT)
    try:
        assert "2 samples" in legacy.run("data.materialize", job, str(workspace / "legacy.log"), 120)
    finally:
        legacy.stop()
    assert "TF_USE_LEGACY_KERAS" not in os.environ
    plain = worker._Worker()
    try:
        with pytest.raises(StepError, match="TF_USE_LEGACY_KERAS is None"):
            plain.run("data.materialize", job, str(workspace / "plain.log"), 120)
    finally:
        plain.stop()


def test_sparsity_is_measured_from_an_onnx_files_weight_tensors(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    kernel = np.arange(1, 33, dtype=np.float32).reshape(4, 8)
    kernel[:, ::2] = 0  # half of the kernel
    bias = np.zeros(8, np.float32)  # rank 1: not a weight tensor, its zeros do not count
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(kernel, "w"), numpy_helper.from_array(bias, "b")],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert measured_sparsity("onnx", path) == {"sparsity": 0.5, "weights": 32, "sparse_tensors": 0}


def test_a_pruning_plan_and_a_training_plan_are_plain_hashable_data():
    assert hash(Pruning(0.5)) == hash(Pruning(0.5, "polynomial"))
    assert Training("qat").function == "fine_tune"


ENVIRONMENT_RECIPE = textwrap.dedent(
    """\
    import os

    import numpy as np


    def load_data(split):
        seen = {name: os.environ.get(name) for name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_")}
        if seen != {"TF_NUM_INTRAOP_THREADS": "1", "OMP_NUM_THREADS": "1", "MALLOC_TRIM_THRESHOLD_": None}:
            raise RuntimeError(f"the step process saw {seen}")
        return np.zeros((2, 3), np.float32), np.zeros(2, np.int64)
    """
)


def test_a_step_process_computes_on_one_thread_each_with_the_allocators_defaults_whatever_its_parent_has(workspace, monkeypatch):
    """A Dask worker's nanny sets OMP_NUM_THREADS and MALLOC_TRIM_THRESHOLD_; a developer's shell may set others."""
    (workspace / "recipe.py").write_text(ENVIRONMENT_RECIPE, encoding="utf-8")
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    job = DataJob(Dataset(role="evaluation", path="recipe.py", from_recipe=True, function="load_data", split="test"), "out.npz")
    assert "2 samples" in worker.run("data.materialize", job, str(workspace / "data.log"), 120)
    assert (os.environ["OMP_NUM_THREADS"], os.environ["MALLOC_TRIM_THRESHOLD_"]) == ("8", "65536")

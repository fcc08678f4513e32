"""io by name: each input and output of a model declared by its name in the model file, state pairs, and the jobs they compile to.

As in test_spec.py, each bad spec is paired with the full text of the problem reported; the
line numbers are those of STREAM_SPEC below (line 11 is ``      inputs:``).
"""
from __future__ import annotations

import textwrap

import pytest

from modelmake import metrics
from modelmake.contracts import DataJob, DataLabels, DeclaredInput, DeclaredIo, SourceJob
from modelmake.graph import plan_tasks
from modelmake.kinds import OutputKind, Precision
from modelmake.plan import CustomMetrics, InputSpec, OutputSpec
from modelmake.spec import load_plan

from tests.support.spec_workspace import VALID_SPEC, edit, make_workspace, spec_problems

# A voice-activity model: an audio chunk, its sample rate and a recurrent state in; a probability and the next state out.
STREAM_SPEC = textwrap.dedent(
    """\
    format: 1
    bundle:
      name: acme-audio
      version: "1.0.0"
    models:
      vad:
        source: {recipe: recipes/vad.py}
        data:
          evaluation: {recipe: recipes/vad.py, split: test}
        io:
          inputs:
            audio: {layout: NC, shape: [1, 512], scale: 1/32768}
            sr: {dtype: int64, shape: [1]}
            state: {dtype: float32}
          outputs:
            speech: {kind: tensor}
            next_state: {state: state}
          metrics: {recipe: recipes/vad_metrics.py, function: score, names: [speech_recall]}
        variants:
          fp32: {}
          fp16: {quantize: fp16}
        targets:
          pixel-8: [fp32, fp16]
        budgets: {max_size_kb: 2000, min_speech_recall: 0.9}
    """
)
STREAM_FILES = {
    "recipes/vad.py": "def build_model():\n    raise NotImplementedError\n",
    "recipes/vad_metrics.py": "def score(outputs, data):\n    return {}\n",
    "recipes/digits_labels.txt": "".join(f"{digit}\n" for digit in range(10)),
}

# A face detector: boxes and scores, and a classes head; each bound by the figures its kind has.
DETECTOR_IO = """\
    io:
      input: {layout: NHWC, scale: 1/16}
      outputs:
        boxes: {kind: boxes}
        scores: {kind: scores}
"""
SINGLE_IO = """\
    io:
      input: {layout: NHWC, scale: 1/16}
      output: {labels: recipes/digits_labels.txt, top_k: 3}
"""


def _stream(*replacements: tuple[str, str]) -> str:
    return edit(STREAM_SPEC, *replacements)


def _stream_problems(tmp_path, *replacements: tuple[str, str]) -> list[str]:
    return spec_problems(make_workspace(tmp_path, _stream(*replacements), files=STREAM_FILES))


def _detector(tmp_path, budgets: str = "max_size_kb: 200", io: str = DETECTOR_IO):
    spec = edit(VALID_SPEC, (SINGLE_IO, io), ("max_size_kb: 200, max_accuracy_drop: 0.005", budgets))
    return make_workspace(tmp_path, spec)


def _jobs(plan, workspace) -> dict:
    """Each task's job by task name (kind:name)."""
    return {f"{task['basename']}:{task['name']}": task["actions"][0][1][2] for task in plan_tasks(plan, workspace) if task.get("actions")}


# ------------------------------------------------------------------ what a valid spec compiles to


def test_inputs_and_outputs_by_name_with_a_state_pair(tmp_path):
    (model,) = load_plan(make_workspace(tmp_path, STREAM_SPEC, files=STREAM_FILES), environ={}).models

    assert model.inputs == (
        InputSpec(name="audio", layout="NC", scale="1/32768", shape=(1, 512)),
        InputSpec(name="sr", dtype="int64", shape=(1,)),
        InputSpec(name="state", dtype="float32"),
    )
    # An output that feeds a state input is a tensor unless it says otherwise.
    assert model.outputs == (
        OutputSpec(name="speech", kind=OutputKind.TENSOR),
        OutputSpec(name="next_state", kind=OutputKind.TENSOR, state="state"),
    )
    assert model.stateful
    # Declared under io -> metrics, the function receives every output by name.
    assert model.metrics == CustomMetrics(recipe="recipes/vad_metrics.py", function="score", names=("speech_recall",), by_name=True)
    fp16 = next(a for a in model.artifacts if a.precision is Precision.FP16)
    assert {b.key: b.limit for b in fp16.budgets} == {"min_cosine_similarity": 0.999, "max_size_kb": 2000.0, "min_speech_recall": 0.9}


def test_a_stateful_model_compiles_to_jobs_that_name_every_array_and_state_pair(tmp_path):
    workspace = make_workspace(tmp_path, STREAM_SPEC, files=STREAM_FILES)
    plan = load_plan(workspace, environ={})
    (model,) = plan.models
    jobs = _jobs(plan, workspace)

    source = jobs["source:vad"]
    assert isinstance(source, SourceJob)
    assert source.io == DeclaredIo(
        key="models.yaml: models -> vad -> io",
        inputs=(
            DeclaredInput(name="audio", key="models.yaml: models -> vad -> io -> inputs -> audio", layout="NC", shapes=((None, (1, 512)),)),
            DeclaredInput(
                name="sr", key="models.yaml: models -> vad -> io -> inputs -> sr", layout="NHWC", dtype="int64", shapes=((None, (1,)),)
            ),
            DeclaredInput(name="state", key="models.yaml: models -> vad -> io -> inputs -> state", layout="NHWC", dtype="float32"),
        ),
        outputs=("speech", "next_state"),
        states=(("next_state", "state"),),
    )
    data = jobs["data:vad.evaluation"]
    assert isinstance(data, DataJob)
    assert (data.inputs, data.sequences, data.optional_inputs, data.keep_arrays) == (("audio", "sr", "state"), True, ("state",), True)
    assert data.labels == (
        DataLabels("y_speech", "speech", OutputKind.TENSOR),
        DataLabels("y_next_state", "next_state", OutputKind.TENSOR),
    )
    reference = jobs["reference:vad"]
    assert (reference.inputs, reference.outputs, reference.custom_metrics) == (model.inputs, model.outputs, model.metrics)
    for artifact in model.artifacts:
        convert, evaluate = jobs[f"convert:{artifact.id}"], jobs[f"evaluate:{artifact.id}"]
        assert convert.inputs == model.inputs
        assert (evaluate.inputs, evaluate.outputs, evaluate.custom_metrics) == (model.inputs, model.outputs, model.metrics)
    (bundled,) = jobs["package:acme-audio"].inputs.models
    assert (bundled.inputs, bundled.outputs, bundled.metrics) == (model.inputs, model.outputs, model.metrics)


def test_a_model_with_one_input_and_one_output_keeps_todays_arrays(tmp_path):
    workspace = make_workspace(tmp_path, edit(VALID_SPEC, ("scale: 1/16", "mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]")))
    jobs = _jobs(load_plan(workspace, environ={}), workspace)

    assert jobs["source:digits"].io == DeclaredIo(
        key="models.yaml: models -> digits -> io",
        inputs=(DeclaredInput(name="", key="models.yaml: models -> digits -> io -> input", layout="NHWC", channels=3),),
        outputs=("",),
    )
    data = jobs["data:digits.evaluation"]
    assert (data.inputs, data.labels, data.sequences, data.optional_inputs, data.keep_arrays) == (
        ("x",), (DataLabels("y", "", OutputKind.CLASSES),), False, (), False
    )
    assert jobs["data:digits.calibration"].labels == data.labels


def test_a_shape_on_the_only_input(tmp_path):
    (model,) = load_plan(make_workspace(tmp_path, edit(VALID_SPEC, ("scale: 1/16", "scale: 1/16, shape: [1, 8, 8, 1]"))), environ={}).models
    assert model.inputs[0].shape == (1, 8, 8, 1)


def test_a_shape_per_target_reaches_only_that_targets_artifacts(tmp_path):
    spec = edit(VALID_SPEC, ("scale: 1/16", "scale: 1/16, shape: {snapdragon-8-gen-3: [1, 8, 8, 1]}"))
    workspace = make_workspace(tmp_path, spec)
    plan = load_plan(workspace, environ={})
    (model,) = plan.models
    assert model.inputs[0].shape is None and model.inputs[0].target_shapes == (("snapdragon-8-gen-3", (1, 8, 8, 1)),)
    jobs = _jobs(plan, workspace)

    shapes = {name: job.inputs[0].shape for name, job in jobs.items() if name.startswith(("convert:", "evaluate:"))}
    assert {name for name, shape in shapes.items() if shape == (1, 8, 8, 1)} == {
        f"{kind}:digits.int8.{fmt}@snapdragon-8-gen-3" for kind in ("convert", "evaluate") for fmt in ("tflite", "onnx")
    }
    assert {shape for name, shape in shapes.items() if "@pixel-8" in name} == {None}
    # The source model runs with its own shape, and its source task checks the shape against the model file.
    assert jobs["reference:digits"].inputs[0].shape is None and jobs["reference:digits"].inputs[0].target_shapes == ()
    assert jobs["source:digits"].io.inputs[0].shapes == (("snapdragon-8-gen-3", (1, 8, 8, 1)),)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        (
            "{pixel-9: [1, 8, 8, 1]}",
            "models.yaml:12:50: models -> digits -> io -> input -> shape -> pixel-9: 'pixel-9' is not a target of this model "
            "(its targets: pixel-8, snapdragon-8-gen-3): name one of them, or give one shape for every target as a list",
        ),
        (
            "{pixel-8: [1, 8, 8]}",
            "models.yaml:12:59: models -> digits -> io -> input -> shape -> pixel-8: [1, 8, 8] has 3 dimensions and the layout "
            "NHWC has 4 (batch, height, width, channels): give every dimension, batch first, or set io -> input -> layout "
            "to the input's",
        ),
    ],
    ids=["unknown-target", "rank-of-one-target"],
)
def test_shape_per_target_mistakes(tmp_path, shape, expected):
    spec = edit(VALID_SPEC, ("scale: 1/16", f"scale: 1/16, shape: {shape}"))
    assert spec_problems(make_workspace(tmp_path, spec)) == [expected]


def test_a_detector_has_parity_figures_only_and_the_custom_metric_gets_every_output(tmp_path):
    io = DETECTOR_IO + "      metrics: {recipe: recipes/digits.py, function: detections, names: [map50]}\n"
    (model,) = load_plan(_detector(tmp_path, "max_size_kb: 200, min_map50: 0.5, min_snr_db: 30", io), environ={}).models

    assert [(o.name, o.kind) for o in model.outputs] == [("boxes", OutputKind.BOXES), ("scores", OutputKind.SCORES)]
    assert model.metrics is not None and model.metrics.by_name
    int8 = next(a for a in model.artifacts if a.precision is Precision.INT8)
    assert {b.key: b.limit for b in int8.budgets} == {
        "min_cosine_similarity": 0.98, "max_size_kb": 200.0, "min_map50": 0.5, "min_snr_db": 30, "max_latency_ms": 33
    }


def test_a_model_level_metric_on_a_model_with_one_output(tmp_path):
    io = SINGLE_IO + "      metrics: {recipe: recipes/digits.py, names: [calibration_error]}\n"
    (model,) = load_plan(_detector(tmp_path, "max_size_kb: 200, max_calibration_error: 0.1", io), environ={}).models
    assert model.metrics == CustomMetrics(recipe="recipes/digits.py", names=("calibration_error",), by_name=True)


# ------------------------------------------------------------------ the model's figures from its outputs'


def test_a_model_with_several_kinds_measures_the_union_of_their_figures():
    assert metrics.available_metrics(
        has_evaluation_data=True, top_k=[3], kind=[OutputKind.CLASSES, OutputKind.BOXES, OutputKind.EMBEDDING], custom=["map50"]
    ) == [
        "size_kb", "latency_ms", "top1", "top3", "accuracy_drop", "max_abs_error", "cosine_similarity", "top1_agreement",
        "snr_db", "worst_cosine_similarity", "map50", "accelerator_coverage",
    ]
    # One kind gives today's list.
    assert metrics.available_metrics(has_evaluation_data=True, top_k=1, kind=[OutputKind.SCORES]) == metrics.available_metrics(
        has_evaluation_data=True, top_k=1, kind=OutputKind.TENSOR
    )


def test_budgets_bound_the_worst_output():
    figures = metrics.model_figures(
        {
            "boxes": {"max_abs_error": 0.02, "cosine_similarity": 0.999, "snr_db": 41.0},
            "scores": {"max_abs_error": 0.01, "cosine_similarity": 0.97, "snr_db": 28.0},
            "label": {"max_abs_error": 0.5, "cosine_similarity": 0.99, "top1_agreement": 0.96, "top1": 0.9, "accuracy_drop": 0.01},
        }
    )
    assert figures == {
        "max_abs_error": 0.5, "cosine_similarity": 0.97, "snr_db": 28.0, "top1_agreement": 0.96, "top1": 0.9, "accuracy_drop": 0.01,
    }


def test_tolerances_of_several_kinds_are_the_union_of_each_kinds():
    assert metrics.default_tolerances([OutputKind.BOXES, OutputKind.CLASSES], Precision.INT8) == {
        "min_cosine_similarity": 0.98, "min_top1_agreement": 0.95,
    }


# ------------------------------------------------------------------ mistakes, each with the message a user sees

STREAM_MEASURED = "size_kb, quantized_share, latency_ms, max_abs_error, cosine_similarity, snr_db, speech_recall, accelerator_coverage"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            "    io:\n",
            "    io:\n      input: {layout: NC}\n",
            "models.yaml:12:7: models -> vad -> io -> inputs: io -> input and io -> inputs cannot both be given: declare a model's "
            "only input under input, or every input of the model by its name under inputs",
            id="input-and-inputs",
        ),
        pytest.param(
            "      outputs:\n",
            "      output: {kind: tensor}\n      outputs:\n",
            "models.yaml:16:7: models -> vad -> io -> outputs: io -> output and io -> outputs cannot both be given: declare a model's "
            "only output under output, or every output of the model by its name under outputs",
            id="output-and-outputs",
        ),
        pytest.param(
            "{state: state}",
            "{state: stat}",
            "models.yaml:17:29: models -> vad -> io -> outputs -> next_state -> state: state names input 'stat', which is not "
            "declared under io -> inputs (audio, sr, state): did you mean 'state'? name the input this output feeds at the next step",
            id="state-of-an-undeclared-input",
        ),
        pytest.param(
            "speech: {kind: tensor}",
            "speech: {state: state}",
            "models.yaml:17:29: models -> vad -> io -> outputs -> next_state -> state: outputs speech and next_state both feed "
            "input 'state': give each state input one output",
            id="two-outputs-feed-one-input",
        ),
        pytest.param(
            "{state: state}",
            "{state: state, kind: embedding}",
            "models.yaml:17:42: models -> vad -> io -> outputs -> next_state -> kind: this output feeds input 'state' at the next step, "
            "which carries it as it is: its kind is tensor (the default for an output with state), not embedding: "
            "remove kind or set it to tensor",
            id="state-output-not-a-tensor",
        ),
        pytest.param(
            "speech: {kind: tensor}",
            "speech: {kind: tensor, top_k: 2}",
            "models.yaml:16:32: models -> vad -> io -> outputs -> speech -> top_k: top_k applies to classes outputs only "
            "and this output's kind is tensor: remove it",
            id="key-of-another-kind",
        ),
        pytest.param(
            "split: test}",
            "split: test, conditions: {noise: 0.1}}",
            "models.yaml:9:57: models -> vad -> data -> evaluation -> conditions: conditions perturb images, and vad runs over "
            "streams (output next_state feeds input state at the next step), where they would break what each step carries to "
            "the next: remove conditions",
            id="conditions-on-a-stateful-model",
        ),
        pytest.param(
            "shape: [1, 512]",
            "shape: [1, 512, 1]",
            "models.yaml:12:36: models -> vad -> io -> inputs -> audio -> shape: [1, 512, 1] has 3 dimensions and the layout NC "
            "has 2 (batch, values): give every dimension, batch first, or set io -> inputs -> audio -> layout to the input's",
            id="shape-against-layout",
        ),
        pytest.param(
            "shape: [1, 512]",
            "shape: [1, 0]",
            "models.yaml:12:40: models -> vad -> io -> inputs -> audio -> shape -> 1: expected at least 1, got 0 (the size of one "
            "dimension: every dimension is fixed, a dynamic one included, such as 1 for the batch)",
            id="shape-of-zero",
        ),
        pytest.param(
            "{dtype: int64, shape: [1]}",
            "{dtype: int64, shape: [1], offset: -1}",
            "models.yaml:13:40: models -> vad -> io -> inputs -> sr -> offset: offset applies to float inputs, and this input's "
            "dtype is int64, which the app feeds as it is: remove offset, or set dtype to float32",
            id="preprocessing-an-integer-input",
        ),
        pytest.param(
            "{dtype: int64, shape: [1]}",
            "{dtype: int65, shape: [1]}",
            "models.yaml:13:21: models -> vad -> io -> inputs -> sr -> dtype: 'int65' is not one of: float32, float16, int8, uint8, "
            "int16, int32, int64, bool; did you mean 'int64'?",
            id="unknown-dtype",
        ),
        pytest.param(
            "state: {dtype: float32}",
            "state: {dtype: float32, scale: 2}",
            "models.yaml:14:33: models -> vad -> io -> inputs -> state -> scale: scale does not apply to a state input: output "
            "next_state feeds 'state' its values as they are at the next step: remove it",
            id="preprocessing-a-state-input",
        ),
        pytest.param(
            "min_speech_recall: 0.9",
            "min_speech_recall: 0.9, min_top1: 0.9",
            "models.yaml:24:58: models -> vad -> budgets -> min_top1: no metric 'top1' to budget; this model measures: "
            f"{STREAM_MEASURED}; top1 is measured for classes outputs and this model's outputs are speech (tensor), "
            "next_state (tensor) (models -> vad -> io -> outputs): bound one of the metrics they measure",
            id="metric-no-output-measures",
        ),
        pytest.param(
            "min_speech_recall: 0.9",
            "min_speech_recall: 0.9, max_false_alarms: 2",
            "models.yaml:24:58: models -> vad -> budgets -> max_false_alarms: no metric 'false_alarms' to budget; this model measures: "
            f"{STREAM_MEASURED}; to bound a figure of your own, name it in models -> vad -> io -> metrics -> names",
            id="undeclared-custom-metric",
        ),
        pytest.param(
            "fp16: {quantize: fp16}",
            "fp16: {quantize: int8}",
            "models.yaml:21:24: models -> vad -> variants -> fp16 -> quantize: full int8 needs calibration over streams, which "
            "modelmake does not do for a stateful model (vad feeds an output back as state): use dynamic_int8, or fp16",
            id="full-int8-on-a-stream",
        ),
        pytest.param(
            "speech: {kind: tensor}",
            "speech: {kind: tensor, metrics: {recipe: recipes/vad_metrics.py, names: [x]}}",
            "models.yaml:16:32: models -> vad -> io -> outputs -> speech -> metrics: unknown key 'metrics'; allowed keys: "
            "kind, labels, state, threshold, top_k",
            id="metrics-under-a-named-output",
        ),
    ],
)
def test_stream_mistakes(tmp_path, old, new, expected):
    assert _stream_problems(tmp_path, (old, new)) == [expected]


def test_a_state_pair_needs_inputs_by_name(tmp_path):
    io = SINGLE_IO.replace("      output: {labels: recipes/digits_labels.txt, top_k: 3}\n", "      outputs:\n        h: {state: h}\n")
    assert spec_problems(_detector(tmp_path, io=io)) == [
        "models.yaml:14:20: models -> digits -> io -> outputs -> h -> state: state names input 'h', and io declares no inputs by "
        "name: declare every input of the model under io -> inputs, including h",
    ]


def test_per_channel_values_against_a_named_inputs_shape(tmp_path):
    io = """\
    io:
      inputs:
        image: {layout: NCHW, shape: [1, 3, 8, 8], mean: [0.5, 0.5], std: [0.25, 0.25, 0.25]}
      output: {kind: tensor}
"""
    assert spec_problems(_detector(tmp_path, io=io)) == [
        "models.yaml:13:58: models -> digits -> io -> inputs -> image -> mean: mean has 2 values and the shape [1, 3, 8, 8] "
        "has 3 channels (layout NCHW): give one value per channel",
        "models.yaml:13:75: models -> digits -> io -> inputs -> image -> std: std has 3 values and mean has 2: give both "
        "one value per channel of the model input",
    ]


def test_blur_on_a_named_vector_input(tmp_path):
    io = """\
    io:
      inputs:
        features: {layout: NC}
        image: {layout: NHWC}
      output: {labels: recipes/digits_labels.txt}
"""
    spec = edit(VALID_SPEC, (SINGLE_IO, io), ("split: test}", "split: test, conditions: {blur: 1}}"))
    assert spec_problems(make_workspace(tmp_path, spec)) == [
        "models.yaml:10:73: models -> digits -> data -> evaluation -> conditions -> blur: blur needs images: "
        "io -> inputs -> features -> layout is NC (no spatial axes); remove blur or set the layout",
    ]


def test_conditions_when_no_output_has_labels(tmp_path):
    spec = edit(
        VALID_SPEC,
        (SINGLE_IO, DETECTOR_IO),
        ("split: test}", "split: test, conditions: {dim: 0.5}}"),
        ("max_size_kb: 200, max_accuracy_drop: 0.005", "max_size_kb: 200"),
    )
    assert spec_problems(make_workspace(tmp_path, spec)) == [
        "models.yaml:10:60: models -> digits -> data -> evaluation -> conditions: conditions measure accuracy against labels, "
        "and none of this model's outputs has any (boxes: boxes, scores: scores): remove conditions (parity with the source "
        "model is measured without them)",
    ]


def test_custom_metrics_declared_twice(tmp_path):
    io = """\
    io:
      input: {layout: NHWC, scale: 1/16}
      output: {kind: tensor, metrics: {recipe: recipes/digits.py, names: [a]}}
      metrics: {recipe: recipes/digits.py, names: [b]}
"""
    assert spec_problems(_detector(tmp_path, io=io)) == [
        "models.yaml:14:7: models -> digits -> io -> metrics: custom metrics are declared twice: keep io -> metrics (the function "
        "receives every output by name) or io -> output -> metrics (it receives the output's array), not both",
    ]


def test_a_classifier_metric_on_a_detector(tmp_path):
    assert spec_problems(_detector(tmp_path, "max_size_kb: 200, min_top1: 0.9")) == [
        "models.yaml:23:33: models -> digits -> budgets -> min_top1: no metric 'top1' to budget; this model measures: "
        "size_kb, quantized_share, latency_ms, max_abs_error, cosine_similarity, snr_db, accelerator_coverage; top1 is measured "
        "for classes outputs and this model's outputs are boxes (boxes), scores (scores) (models -> digits -> io -> outputs): "
        "bound one of the metrics they measure",
    ]


def test_a_top_k_budget_names_the_classes_output(tmp_path):
    io = DETECTOR_IO + "        label: {labels: recipes/digits_labels.txt}\n"
    assert spec_problems(_detector(tmp_path, "max_size_kb: 200, min_top5: 0.9", io)) == [
        "models.yaml:24:33: models -> digits -> budgets -> min_top5: no metric 'top5' to budget; this model measures: "
        "size_kb, quantized_share, latency_ms, max_abs_error, cosine_similarity, snr_db, top1, accuracy_drop, top1_agreement, "
        "accelerator_coverage; to measure top5 set models -> digits -> io -> outputs -> label -> top_k: 5",
    ]

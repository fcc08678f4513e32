"""Training-time optimizations in models.yaml: QAT and pruning variants, what the graph makes of them, and each refusal
a user sees before any work (file, line, YAML path and what to do)."""
from __future__ import annotations

from pathlib import Path

from modelmake.graph import plan_tasks
from modelmake.plan import Pruning, Training
from modelmake.spec import load_plan

from tests.support.spec_workspace import DEFAULT_FILES, VALID_SPEC, edit, make_workspace, spec_problems

TRAINABLE = {
    **DEFAULT_FILES,
    "recipes/digits.py": "def build_model():\n    raise NotImplementedError\n\n\ndef fine_tune(model, training):\n    return model\n",
}
TF_KERAS_SOURCE = ("source: {recipe: recipes/digits.py}", "source: {recipe: recipes/digits.py, framework: tf-keras}")


def with_variants(*lines: str, source=TF_KERAS_SOURCE, targets="pixel-8: [fp32, fp16, int8]") -> str:
    added = "".join(f"\n      {line}" for line in lines)
    return edit(VALID_SPEC, source, ("int8: {quantize: int8}", "int8: {quantize: int8}" + added), ("pixel-8: [fp32, fp16, int8]", targets))


def test_qat_and_pruned_variants_compile_to_train_tasks_whose_records_their_conversions_read(tmp_path):
    spec = with_variants(
        "qat: {quantize: int8, training: {method: qat, epochs: 3, learning_rate: 0.001}}",
        "sparse: {prune: {sparsity: 0.5}, training: fine_tune, budgets: {min_sparsity: 0.45}}",
        targets="pixel-8: [fp32, int8, qat, sparse]",
    )
    plan = load_plan(make_workspace(tmp_path, spec, files=TRAINABLE))
    by_variant = {a.variant: a for a in plan.artifacts() if a.target == "pixel-8"}
    assert by_variant["qat"].training == Training("qat", epochs=3, learning_rate=0.001)
    assert by_variant["sparse"].training == Training("fine_tune") and by_variant["sparse"].prune == Pruning(0.5)
    assert "min_sparsity" in [b.key for b in by_variant["sparse"].budgets]
    tasks = {f"{t['basename']}:{t['name']}": t for t in plan_tasks(plan, tmp_path) if t.get("name")}
    assert {"train:digits.qat", "train:digits.sparse"} <= set(tasks)
    assert "build/sources/digits/model.keras" in tasks["source:digits"]["targets"]
    qat_convert = tasks["convert:digits.qat.tflite@pixel-8"]
    assert "build/trained/digits/qat/source.json" in qat_convert["file_dep"]
    assert "build/sources/digits/source.json" not in qat_convert["file_dep"]
    assert "build/sources/digits/source.json" in tasks["convert:digits.int8.tflite@pixel-8"]["file_dep"]
    # The conversion encodes the zeros sparse and measures them: it is told the variant prunes.
    assert tasks["convert:digits.sparse.tflite@pixel-8"]["actions"][0][1][2].prune == Pruning(0.5)
    assert tasks["convert:digits.int8.tflite@pixel-8"]["actions"][0][1][2].prune is None


def test_a_model_without_training_variants_gets_no_train_task(tmp_path):
    plan = load_plan(make_workspace(tmp_path))
    assert not [t for t in plan_tasks(plan, tmp_path) if t["basename"] == "train" and t.get("name")]


def test_qat_from_a_tflite_file_is_refused_before_any_work(tmp_path):
    spec = with_variants(
        "qat: {quantize: int8, training: qat}",
        source=("source: {recipe: recipes/digits.py}", "source: {tflite: models/digits.tflite}"),
        targets="pixel-8: [fp32, qat]",
    )
    files = {**DEFAULT_FILES, "models/digits.tflite": "not read at plan time"}
    problems = spec_problems(make_workspace(tmp_path, spec, files=files))
    assert (
        "models.yaml:18:39: models -> digits -> variants -> qat -> training: a tflite source (models/digits.tflite) cannot be "
        "fine-tuned: it is an already converted file. Training-time optimizations need a recipe source (models -> digits -> "
        "source: {recipe: recipes/<model>.py, framework: tf-keras}) with a function fine_tune(model, training); remove "
        "training (and prune, except on Core ML targets) or make the source such a recipe"
    ) in problems


def test_pruning_while_training_from_an_onnx_file_is_refused_before_any_work(tmp_path):
    spec = with_variants(
        "sparse: {prune: {sparsity: 0.5}, training: fine_tune}",
        source=("source: {recipe: recipes/digits.py}", "source: {onnx: models/digits.onnx}"),
        targets="raspberry-pi-5: [fp32, sparse]",
    )
    for line in ("      snapdragon-8-gen-3: [int8]\n", "    budget_overrides:\n      snapdragon-8-gen-3: {max_latency_ms: 10}\n"):
        spec = spec.replace(line, "")
    files = {**DEFAULT_FILES, "models/digits.onnx": "not read at plan time"}
    problems = spec_problems(make_workspace(tmp_path, spec, files=files))
    assert len(problems) == 1
    assert problems[0].startswith("models.yaml:18:")
    assert "models -> digits -> variants -> sparse -> training: an onnx source (models/digits.onnx) cannot be fine-tuned" in problems[0]


def test_a_recipe_without_a_fine_tuning_function_is_refused_before_any_work(tmp_path):
    spec = with_variants("qat: {quantize: int8, training: qat}", targets="pixel-8: [fp32, qat]")
    (problem,) = spec_problems(make_workspace(tmp_path, spec))  # DEFAULT_FILES' recipe has build_model only
    assert problem == (
        f"models.yaml:18:{problem.split(':')[2]}: models -> digits -> variants -> qat -> training: recipe recipes/digits.py "
        "defines no function fine_tune(model, training) to fine-tune the model: define it (it fits the model it is given for "
        "training.epochs at training.learning_rate, with training.callbacks, and returns it), or name yours with training: "
        "{method: ..., function: <name>}"
    )


def test_a_keras_3_recipe_is_told_to_declare_tf_keras(tmp_path):
    spec = with_variants("qat: {quantize: int8, training: qat}", source=("fp32: {}", "fp32: {}"), targets="pixel-8: [fp32, qat]")
    (problem,) = spec_problems(make_workspace(tmp_path, spec, files=TRAINABLE))
    assert "set models -> digits -> source -> framework: tf-keras and build the model with tf_keras" in problem


def test_qat_needs_int8_and_a_format_that_makes_int8_from_it(tmp_path):
    spec = with_variants("qat: {quantize: fp16, training: qat}", targets="pixel-8: [fp32, qat]\n      apple-a17: [qat]")
    problems = spec_problems(make_workspace(tmp_path, spec, files=TRAINABLE))
    assert any("quantization-aware training makes full int8 models and 'qat' is fp16: set quantize: int8" in p for p in problems)
    assert any("'qat' cannot be built for apple-a17 in coreml: quantization-aware training builds tflite int8 only" in p for p in problems)


def test_pruning_without_training_is_for_core_ml_only(tmp_path):
    spec = with_variants("pruned: {quantize: fp16, prune: {sparsity: 0.5}}", targets="pixel-8: [fp32, pruned]\n      apple-a17: [pruned]")
    (problem,) = spec_problems(make_workspace(tmp_path, spec, files=TRAINABLE))
    assert (
        "'pruned' cannot be built for pixel-8 in tflite: tflite weights are pruned while the model fine-tunes: add training: fine_tune"
    ) in problem


def test_min_sparsity_bounds_pruned_variants_only(tmp_path):
    spec = with_variants(
        "pruned: {quantize: fp16, prune: {sparsity: 0.5}}", targets="pixel-8: [fp32]\n      apple-a17: [fp16, pruned]"
    ).replace("max_latency_ms: 33}", "max_latency_ms: 33, min_sparsity: 0.4}")
    plan = load_plan(make_workspace(tmp_path, spec, files=TRAINABLE))
    keys = {a.variant: [b.key for b in a.budgets] for a in plan.artifacts() if a.target == "apple-a17"}
    assert "min_sparsity" in keys["pruned"] and "min_sparsity" not in keys["fp16"]


def test_min_sparsity_on_a_dense_variant_is_refused(tmp_path):
    spec = with_variants("int8b: {quantize: int8, budgets: {min_sparsity: 0.5}}", targets="pixel-8: [fp32, int8b]")
    (problem,) = spec_problems(make_workspace(tmp_path, spec, files=TRAINABLE))
    assert "no metric 'sparsity' to budget" in problem
    assert "sparsity applies to pruned variants only and variant 'int8b' is not pruned: remove min_sparsity or add prune" in problem


def test_the_example_declares_both_keras_flavours_and_both_optimizations():
    plan = load_plan(Path(__file__).resolve().parents[2])
    frameworks = {model.source.framework for model in plan.models}
    assert frameworks == {"keras", "tf-keras"}
    assert any(a.training and a.training.method == "qat" for a in plan.artifacts())
    assert any(a.prune and a.training for a in plan.artifacts()) and any(a.prune and not a.training for a in plan.artifacts())


def test_qat_from_a_keras_file_is_refused_as_a_model_without_its_training_code(tmp_path):
    spec = with_variants(
        "qat: {quantize: int8, training: qat}",
        source=("source: {recipe: recipes/digits.py}", "source: {keras: models/digits.keras}"),
        targets="pixel-8: [fp32, qat]",
    )
    files = {**DEFAULT_FILES, "models/digits.keras": "not read at plan time"}
    (problem,) = spec_problems(make_workspace(tmp_path, spec, files=files))
    assert problem.startswith("models.yaml:18:")
    assert "training: a keras source (models/digits.keras) cannot be fine-tuned: it is a trained model without its training code" in problem

"""The spec's custom metrics: a recipe's figures, declared by name so that budgets can bound them at plan time."""
from __future__ import annotations

from modelmake.graph import evaluate_task
from modelmake.plan import CustomMetrics
from modelmake.spec import load_plan

from tests.support.spec_workspace import DEFAULT_FILES, VALID_SPEC, edit, make_workspace, spec_problems

CLASSES_OUTPUT = "output: {labels: recipes/digits_labels.txt, top_k: 3}"
CUSTOM = "output: {kind: tensor, metrics: {recipe: recipes/scores.py, function: score, names: [hit_rate, mean_error]}}"
FILES = DEFAULT_FILES | {"recipes/scores.py": "def score(outputs, data):\n    return {}\n", "recipes/tolerance.txt": "0.25\n"}
TENSOR_MEASURED = "size_kb, quantized_share, latency_ms, max_abs_error, cosine_similarity, snr_db"


def _spec(output: str = CUSTOM, budgets: str = "max_size_kb: 200", *more: tuple[str, str]) -> str:
    return edit(VALID_SPEC, (CLASSES_OUTPUT, output), ("max_size_kb: 200, max_accuracy_drop: 0.005", budgets), *more)


def test_budgets_bound_a_custom_figure_like_any_other(tmp_path):
    output = CUSTOM.replace("function: score, ", "function: score, depends: [recipes/tolerance.txt], ")
    workspace = make_workspace(tmp_path, _spec(output, "max_size_kb: 200, min_hit_rate: 0.8, max_mean_error: 0.2"), files=FILES)
    plan = load_plan(workspace, environ={})
    (model,) = plan.models
    assert model.metrics == CustomMetrics(
        recipe="recipes/scores.py", function="score", names=("hit_rate", "mean_error"), depends=("recipes/tolerance.txt",),
        by_name=False,
    )
    int8 = next(a for a in model.artifacts if a.variant == "int8")
    assert {(b.metric, b.bound, b.limit) for b in int8.budgets} >= {("hit_rate", "min", 0.8), ("mean_error", "max", 0.2)}
    # Editing the function or what it reads re-evaluates, without touching the conversion.
    task = evaluate_task(plan, model, int8)
    assert {"recipes/scores.py", "recipes/tolerance.txt"} <= set(task["file_dep"])
    assert task["actions"][0][1][2].custom_metrics == model.metrics


def test_the_function_defaults_to_metrics(tmp_path):
    output = "output: {kind: tensor, metrics: {recipe: recipes/scores.py, names: [hit_rate]}}"
    (model,) = load_plan(make_workspace(tmp_path, _spec(output), files=FILES), environ={}).models
    assert model.metrics is not None and model.metrics.function == "metrics"


def test_a_budget_on_an_undeclared_figure(tmp_path):
    spec = _spec(budgets="max_size_kb: 200, min_recall: 0.5")
    assert spec_problems(make_workspace(tmp_path, spec, files=FILES)) == [
        "models.yaml:21:33: models -> digits -> budgets -> min_recall: no metric 'recall' to budget; "
        f"this model measures: {TENSOR_MEASURED}, hit_rate, mean_error, accelerator_coverage; "
        "to bound a figure of your own, name it in models -> digits -> io -> output -> metrics -> names",
    ]


def test_a_custom_name_may_not_shadow_a_builtin_metric(tmp_path):
    spec = _spec(CUSTOM.replace("names: [hit_rate, mean_error]", "names: [hit_rate, cosine_similarity, samples]"))
    assert spec_problems(make_workspace(tmp_path, spec, files=FILES)) == [
        "models.yaml:13:102: models -> digits -> io -> output -> metrics -> names -> 1: 'cosine_similarity' is a name "
        "modelmake gives to a figure of its own: give the recipe's figure another name (for example score_cosine_similarity)",
        "models.yaml:13:121: models -> digits -> io -> output -> metrics -> names -> 2: 'samples' is a name "
        "modelmake gives to a figure of its own: give the recipe's figure another name (for example score_samples)",
    ]


def test_a_missing_metrics_recipe(tmp_path):
    spec = _spec(CUSTOM.replace("recipes/scores.py", "recipes/boxes.py"))
    assert spec_problems(make_workspace(tmp_path, spec, files=FILES)) == [
        "models.yaml:13:48: models -> digits -> io -> output -> metrics -> recipe: metrics recipe file 'recipes/boxes.py' "
        "does not exist: fix the path (it is relative to models.yaml)",
    ]


def test_custom_figures_need_evaluation_data(tmp_path):
    spec = _spec(CUSTOM, "max_size_kb: 200", ("      evaluation: {recipe: recipes/digits.py, split: test}\n", ""))
    assert spec_problems(make_workspace(tmp_path, spec, files=FILES)) == [
        "models.yaml:12:30: models -> digits -> io -> output -> metrics: custom metrics are measured on evaluation data "
        "and digits has none: add models -> digits -> data -> evaluation, or remove metrics",
    ]

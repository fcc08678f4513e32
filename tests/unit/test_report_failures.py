"""A report for every build: what failed and by how much, why each candidate was dropped, and whether it was packaged."""
from __future__ import annotations

import dataclasses

from modelmake.report.views import latency_text
from modelmake.steps._selection import broken_budget
from modelmake.steps.report import OUTPUTS

from tests.support.report_records import broken_bundle, write_report


def _lines(out) -> list[str]:
    return (out / "report.md").read_text(encoding="utf-8").splitlines()


def test_a_build_with_failures_says_at_the_top_that_it_was_not_packaged_and_why(tmp_path):
    out = write_report(tmp_path, broken_bundle(tmp_path))
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    lines = _lines(out)
    assert lines[2:8] == [
        "**Not packaged: the package step refuses this build until these are fixed.**",
        "",
        "- digits.fp16.tflite@pixel-8: over budget: size_kb is 612, over its max_size_kb of 500 (+22%)",
        "- no variant of digits for npu-phone passes: fp16: not built: the converter crashed | "
        "int8: over budget: accuracy_drop is 0.02, over its max_accuracy_drop of 0.01 (+100%)",
        "- faces.fp16.onnx@pixel-8: not evaluated: onnxruntime crashed on it",
        "",
    ]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert '<section class="failures" id="not-packaged">' in page
    assert "<li>digits.fp16.tflite@pixel-8: over budget: size_kb is 612, over its max_size_kb of 500 (+22%)</li>" in page


def test_each_artifact_says_what_failed_by_how_much_and_each_candidate_why_it_was_dropped(tmp_path):
    lines = _lines(write_report(tmp_path, broken_bundle(tmp_path)))
    rows = {tuple(line.split(" | ")[1:4]): line.split(" | ") for line in lines if line.startswith("| digits |")}
    over = rows[("pixel-8", "tflite", "fp16")]
    assert over[-2:] == [
        "FAILED: size_kb is 612, over its max_size_kb of 500 (+22%)",
        "failed: over budget: size_kb is 612, over its max_size_kb of 500 (+22%) |",
    ]
    not_built = rows[("npu-phone", "tflite", "fp16")]
    assert not_built[5] == "not built" and not_built[-1] == "dropped: not built: the converter crashed |"
    assert rows[("pixel-8", "tflite", "fp32")][-1] == "shipped |"
    assert lines[lines.index("## Selection") + 4] == (
        "- digits on npu-phone (tflite), first_passing: fp16 dropped: not built: the converter crashed; "
        "int8 dropped: over budget: accuracy_drop is 0.02, over its max_accuracy_drop of 0.01 (+100%)"
    )
    not_evaluated = next(line for line in lines if line.startswith("| pixel-8 | onnx | fp16 |")).split(" | ")
    assert not_evaluated[4:9] == ["not evaluated"] * 5
    assert not_evaluated[-2:] == ["not checked: not evaluated", "failed: not evaluated: onnxruntime crashed on it |"]


def test_a_packaged_build_says_so_and_has_no_failure_section(tmp_path):
    inputs = broken_bundle(tmp_path)
    faces = inputs.models[1]
    passing = dataclasses.replace(faces, artifacts=faces.artifacts[1:])  # all but the one whose evaluation failed
    out = write_report(tmp_path, dataclasses.replace(inputs, models=(passing,)))
    lines = _lines(out)
    assert not any("Not packaged" in line for line in lines)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="packaged">Every artifact the bundle needs passes its budgets: 2 ship.' in page
    assert "not-packaged" not in page


def test_large_figures_are_written_in_full_in_budget_verdicts():
    verdict = {"metric": "size_kb", "value": 12527.0, "limit": 4000.0, "key": "max_size_kb", "bound": "max"}
    assert broken_budget(verdict, None) == "size_kb is 12527, over its max_size_kb of 4000 (+213%)"
    tight = {"metric": "cosine_similarity", "value": 0.9998, "limit": 0.999999, "key": "min_cosine_similarity", "bound": "min"}
    assert broken_budget(tight, None) == "cosine_similarity is 0.9998, under its min_cosine_similarity of 0.999999 (-0%)"


def test_latency_below_a_millisecond_prints_in_microseconds(tmp_path):
    assert [latency_text(ms) for ms in (0.0052, 0.0152, 0.372, 0.9996, 2.0891)] == ["5.2 µs", "15.2 µs", "372 µs", "1.00 ms", "2.09 ms"]
    lines = _lines(write_report(tmp_path, broken_bundle(tmp_path)))
    header = next(line for line in lines if line.startswith("| model |")).split(" | ")
    rows = [line.split(" | ") for line in lines if line.startswith("| digits |")]
    latencies = [row[header.index("latency")] for row in rows if len(row) == len(header)]
    assert latencies == ["420 µs", "1.50 ms", "not built", "12 µs", "not measured"]


def test_the_same_records_give_the_same_report_bytes(tmp_path):
    inputs = broken_bundle(tmp_path)
    first = write_report(tmp_path / "a", inputs)
    second = write_report(tmp_path / "b", inputs)
    for name in OUTPUTS:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_a_model_with_nothing_built_or_nothing_measured_still_gets_its_report(tmp_path):
    from modelmake.kinds import OutputKind
    from modelmake.plan import OutputSpec

    from tests.support.report_records import BUNDLE, artifact, model

    crashed = model(tmp_path, "crashed", OutputSpec(), {"samples": 10, "top1": 0.9}, [
        artifact(tmp_path, "crashed", v, "tflite", "npu-phone", None, selection="first_passing", preference=i,
                 not_built=f"{v} crashed the converter")
        for i, v in enumerate(("fp16", "int8"))
    ])
    apple_only = model(tmp_path, "gauge", OutputSpec(kind=OutputKind.TENSOR), {"samples": 10}, [
        artifact(tmp_path, "gauge", "fp16", "coreml", "apple-a17", {"size_kb": 80.0}, not_measured={"snr_db": "needs macOS"}),
    ])
    from modelmake.contracts import BundleInputs

    out = write_report(tmp_path, BundleInputs(BUNDLE, {}, (crashed, apple_only)))
    lines = _lines(out)
    assert "- no variant of crashed for npu-phone passes: fp16: not built: fp16 crashed the converter | " \
           "int8: not built: int8 crashed the converter" in lines
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "not plotted: crashed.fp16.tflite@npu-phone (not built), crashed.int8.tflite@npu-phone (not built)" in page
    assert page.count('class="point"') == 1  # the Core ML package, by its size alone

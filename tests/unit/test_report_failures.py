"""A report for every build: what failed and by how much, why each candidate was dropped, and whether it was packaged."""
from __future__ import annotations

from modelmake.report.views import latency_text, verdict_text
from modelmake.steps.report import OUTPUTS

from tests.support.report_records import broken_bundle, write_report


def _lines(out) -> list[str]:
    return (out / "report.md").read_text(encoding="utf-8").splitlines()


def test_a_build_with_failures_says_at_the_top_that_it_was_not_packaged_and_why(tmp_path):
    out = write_report(tmp_path, broken_bundle(tmp_path))
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    lines = _lines(out)
    assert lines[2:7] == [
        "**Not packaged: the package step refuses this build until these are fixed.**",
        "",
        "- digits.fp16.tflite@pixel-8: over budget: size_kb 612 > max_size_kb 500 (+22%)",
        "- no variant of digits on npu-phone (tflite) passes: fp16 dropped: not built: the converter crashed; "
        "int8 dropped: over budget: accuracy_drop 0.02 > max_accuracy_drop 0.01 (+100%)",
        "",
    ]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert '<section class="failures" id="not-packaged">' in page
    assert "<li>digits.fp16.tflite@pixel-8: over budget: size_kb 612 &gt; max_size_kb 500 (+22%)</li>" in page


def test_each_artifact_says_what_failed_by_how_much_and_each_candidate_why_it_was_dropped(tmp_path):
    lines = _lines(write_report(tmp_path, broken_bundle(tmp_path)))
    rows = {tuple(line.split(" | ")[1:4]): line.split(" | ") for line in lines if line.startswith("| digits |")}
    over = rows[("pixel-8", "tflite", "fp16")]
    assert over[-2:] == ["FAILED: size_kb 612 > max_size_kb 500 (+22%)", "failed: over budget: size_kb 612 > max_size_kb 500 (+22%) |"]
    not_built = rows[("npu-phone", "tflite", "fp16")]
    assert not_built[5] == "not built" and not_built[-1] == "dropped: not built: the converter crashed |"
    assert rows[("pixel-8", "tflite", "fp32")][-1] == "shipped |"
    assert lines[lines.index("## Selection") + 4] == (
        "- digits on npu-phone (tflite), first_passing: fp16 dropped: not built: the converter crashed; "
        "int8 dropped: over budget: accuracy_drop 0.02 > max_accuracy_drop 0.01 (+100%)"
    )


def test_a_packaged_build_says_so_and_has_no_failure_section(tmp_path):
    inputs = broken_bundle(tmp_path)
    faces = inputs.models[1]  # both of its artifacts pass
    out = write_report(tmp_path, type(inputs)(inputs.bundle, {}, (faces,)))
    lines = _lines(out)
    assert not any("Not packaged" in line for line in lines)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="packaged">Every artifact the bundle needs passes its budgets: 2 ship.' in page
    assert "not-packaged" not in page


def test_budget_verdicts_give_the_figure_the_limit_and_the_margin():
    assert verdict_text({"metric": "size_kb", "value": 12527.0, "limit": 4000.0, "key": "max_size_kb", "bound": "max"}) == (
        "size_kb 12527 > max_size_kb 4000 (+213%)"
    )
    assert verdict_text({"metric": "snr_db", "value": 25.0, "limit": 30.0, "key": "min_snr_db", "bound": "min"}) == (
        "snr_db 25 < min_snr_db 30 (-17%)"
    )
    assert verdict_text({"metric": "latency_ms", "value": 0.5, "limit": 0.0, "key": "max_latency_ms", "bound": "max"}) == (
        "latency_ms 0.5 > max_latency_ms 0"
    )


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

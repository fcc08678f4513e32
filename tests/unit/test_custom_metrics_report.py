"""The report's columns for a model's own figures, beside the ones modelmake measures."""
from __future__ import annotations

from modelmake.contracts import BundleInputs, ReportJob
from modelmake.kinds import OutputKind
from modelmake.plan import BundleSpec, CustomMetrics, OutputSpec
from modelmake.steps import report

from tests.unit.test_output_kinds_report import _artifact, _model

CUSTOM = CustomMetrics(recipe="recipes/scores.py", names=("hit_rate", "mean_error"))


def test_custom_figures_have_a_column_each(tmp_path):
    regression = _model(
        tmp_path, "gauge", OutputSpec(kind=OutputKind.TENSOR), {"samples": 10, "hit_rate": 0.7, "mean_error": 0.035},
        _artifact(tmp_path, "gauge", {"cosine_similarity": 0.99, "snr_db": 37.4, "max_abs_error": 0.03, "hit_rate": 0.6953,
                                      "mean_error": 0.0368}),
        CUSTOM,
    )
    classifier = _model(
        tmp_path, "digits", OutputSpec(), {"samples": 10, "top1": 0.9, "recall": 0.8},
        _artifact(tmp_path, "digits", {"top1": 0.9, "accuracy_drop": 0.0, "cosine_similarity": 0.999, "top1_agreement": 1.0}),
        CustomMetrics(recipe="recipes/scores.py", names=("recall",)),
    )
    bundle = BundleSpec(name="b", version="1", created=0, signing_key=None, release=False, encrypt=False, encryption_key=None)
    report.report(ReportJob(BundleInputs(bundle, {}, (classifier, regression)), str(tmp_path / "out")))
    lines = (tmp_path / "out" / "report.md").read_text(encoding="utf-8").splitlines()
    header = lines[lines.index("## gauge (tensor output)") + 2]
    assert "| cosine | SNR (dB) | max abs error | hit_rate | mean_error | latency |" in header
    assert "| 0.99000 | 37.4 | 0.03 | 0.6953 | 0.0368 |" in lines[lines.index("## gauge (tensor output)") + 4]
    assert "| gauge | tensor | hit_rate 0.7000, mean_error 0.0350 | 10 |" in lines
    classifier_header = next(line for line in lines if line.startswith("| model | target |"))
    assert "| top-1 agreement | recall | latency |" in classifier_header
    # A figure the recipe did not give this artifact is shown as absent, not as a number.
    assert next(line for line in lines if line.startswith("| digits |")).split(" | ")[11] == "—"

"""Step `report`: a Markdown table of every artifact's figures and budgets, and a size/accuracy plot."""
from __future__ import annotations

from pathlib import Path

from .. import fsutil, metrics

PLOT = "size_vs_accuracy.png"


def _rows(inputs: dict):
    for model in inputs["models"]:
        source = fsutil.read_json(model["reference"]) if model["reference"] else {}
        for artifact in model["artifacts"]:
            measured = fsutil.read_json(artifact["metrics"])
            yield model, artifact, measured, source


def _fmt(value, spec=".4f"):
    return "n/a" if value is None else format(value, spec)


def _budget_cell(measured: dict) -> str:
    if not measured["budgets"]:
        return "none set"
    broken = [v["key"] for v in measured["budgets"] if not v["passed"]]
    return "FAILED: " + ", ".join(broken) if broken else f"ok ({len(measured['budgets'])})"


def report(inputs: dict, out_dir: str) -> str:
    out = Path(out_dir)
    bundle = inputs["bundle"]
    lines = [
        f"# {bundle['name']} {bundle['version']}",
        "",
        "Accuracy is measured on each model's evaluation data; the drop is the source model's top-1 minus the artifact's. "
        "Latency is the median of 50 single-sample runs in LiteRT on the build host's CPU with one thread: "
        "compare variants with it, not devices.",
        "",
        "| model | target | variant | precision | size (KiB) | top-1 | top-k | drop (points) | latency (ms) | budgets |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    points = []
    for model, artifact, measured, source in _rows(inputs):
        m = measured["metrics"]
        top_k = model["output"]["top_k"]
        top_k_value = m.get(metrics.top_k_metric(top_k)) if top_k > 1 else None
        drop = m.get(metrics.ACCURACY_DROP)
        lines.append(
            f"| {model['name']} | {artifact['target']} | {artifact['variant']} | {artifact['precision']} | "
            f"{m[metrics.SIZE_KB]:.1f} | {_fmt(m.get('top1'))} | {_fmt(top_k_value)} | "
            f"{_fmt(None if drop is None else drop * 100, '+.2f')} | {m[metrics.LATENCY_MS]:.3f} | {_budget_cell(measured)} |"
        )
        if "top1" in m:
            points.append((model["name"], artifact["variant"], artifact["target"], m[metrics.SIZE_KB], m["top1"]))
    sources = [(m["name"], fsutil.read_json(m["reference"])) for m in inputs["models"] if m["reference"]]
    if sources:
        lines += ["", "## Source models", "", "| model | top-1 on evaluation data | samples |", "|---|---:|---:|"]
        lines += [f"| {name} | {ref['top1']:.4f} | {ref['samples']} |" for name, ref in sources]
    lines += ["", f"![size against accuracy]({PLOT})", ""]
    out.mkdir(parents=True, exist_ok=True)
    _plot(points, out / PLOT)
    fsutil.write_bytes(out / "report.md", "\n".join(lines).encode("utf-8"))
    return f"report {out / 'report.md'}"


def _plot(points, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5), dpi=100)
    markers = "osD^v<>p*h"
    models = sorted({p[0] for p in points})
    variants = sorted({p[1] for p in points})
    for model_index, model in enumerate(models):
        for variant_index, variant in enumerate(variants):
            chosen = [p for p in points if p[0] == model and p[1] == variant]
            if chosen:
                axes.scatter(
                    [p[3] for p in chosen],
                    [p[4] * 100 for p in chosen],
                    marker=markers[model_index % len(markers)],
                    color=f"C{variant_index % 10}",
                    label=f"{model} {variant}",
                    s=50,
                    alpha=0.8,
                )
    axes.set_xscale("log")
    axes.set_xlabel("artifact size (KiB, log scale)")
    axes.set_ylabel("top-1 accuracy (%)")
    axes.set_title("Size against accuracy per variant")
    axes.grid(True, which="both", alpha=0.3)
    if points:
        axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    with fsutil.atomic_output(path) as handle:
        figure.savefig(handle, format="png", metadata={"Software": None})
    plt.close(figure)

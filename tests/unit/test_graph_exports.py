"""The graph exports each model's source once per format and opset, and every ONNX conversion starts from that export."""
from __future__ import annotations

from modelmake import formats, layout
from modelmake.contracts import ConvertJob, ExportJob
from modelmake.graph import plan_tasks
from modelmake.spec import load_plan

from tests.support.spec_workspace import DEFAULT_FILES, edit, make_workspace

# Variants that differ only in their settings, on three ONNX targets at two opsets and one TFLite target;
# a second model whose source already is an ONNX file, and a third whose source is a .tflite file.
SPEC = """\
format: 1
bundle: {name: exports, version: "1.0.0"}
models:
  digits:
    source: {recipe: recipes/digits.py}
    data:
      calibration: {recipe: recipes/digits.py, split: calibration}
      evaluation: {recipe: recipes/digits.py, split: test}
    io:
      input: {layout: NHWC, scale: 1/16}
    variants:
      fp32: {}
      fp16: {quantize: fp16}
      dynamic: {quantize: dynamic_int8}
      int8: {quantize: int8}
      int8pt: {quantize: int8, per_channel: false}
    targets:
      cpu-board: [fp32, fp16, dynamic, int8, int8pt]
      npu-phone: [int8]
      old-board: [fp32, int8]
      tflite-phone: [fp32, int8]
  mlp:
    source: {onnx: models/mlp.onnx}
    data:
      calibration: {file: data/calibration.npz}
    io:
      input: {layout: NC, scale: 1/16}
    variants:
      fp32: {}
      int8: {quantize: int8}
    targets:
      cpu-board: [fp32, int8]
  lite:
    source: {tflite: models/lite.tflite}
    io:
      input: {layout: NC, scale: 1/16}
    variants:
      fp32: {}
    targets:
      cpu-board: [fp32]
      old-board: [fp32]
"""
PROFILES = {
    "cpu-board": "name: cpu-board\nsoc: a board\nplatform: linux\nformats:\n"
    "  onnx: {precisions: [fp32, fp16, dynamic_int8, int8], opset: 17, execution_providers: [CPUExecutionProvider]}\n",
    "npu-phone": "name: npu-phone\nsoc: a phone\nplatform: android\nformats:\n"
    "  onnx: {precisions: [fp32, int8], opset: 17, quantization: qnn, activation_type: uint16}\n",
    "old-board": "name: old-board\nsoc: an old board\nplatform: linux\nformats:\n  onnx: {precisions: [fp32, int8], opset: 13}\n",
    "tflite-phone": "name: tflite-phone\nsoc: a phone\nplatform: android\nformats:\n  tflite: {precisions: [fp32, int8]}\n",
}
FILES = {
    **DEFAULT_FILES,
    "models/mlp.onnx": "not read while planning",
    "models/lite.tflite": "not read while planning",
    "data/calibration.npz": "not read while planning",
}


def _tasks(tmp_path, spec: str = SPEC, profiles: dict | None = None) -> dict[str, dict]:
    workspace = make_workspace(tmp_path, spec, files=FILES, profiles=profiles or PROFILES)
    return {f"{t['basename']}:{t['name']}": t for t in plan_tasks(load_plan(workspace, environ={}), workspace) if t.get("name")}


def _job(task: dict):
    return task["actions"][0][1][2]


def _hashed(task: dict) -> dict:
    """What doit's change check of the task covers: its job and its tools' versions."""
    return task["uptodate"][0].config


def test_one_export_per_model_format_and_opset(tmp_path):
    tasks = _tasks(tmp_path)
    exports = {name: task for name, task in tasks.items() if name.startswith("export:")}
    # A .tflite source goes through tf2onnx too; an .onnx source is already the float model.
    assert sorted(exports) == [f"export:{m}.onnx-opset{o}" for m in ("digits", "lite") for o in (13, 17)]
    for name, task in exports.items():
        job = _job(task)
        assert isinstance(job, ExportJob) and job.format == "onnx"
        assert job.options == {"opset": int(name.rsplit("opset", 1)[1])}
        assert job.source_record == layout.source_record(name.split(":")[1].split(".")[0])
        assert task["file_dep"] == [job.source_record]
        # The float model, the same as the quantizers take it, and the record the conversions depend on, written last.
        assert sorted(job.out_prepared) == ["any-batch", "batch-1"]
        assert task["targets"] == [job.out, *job.out_prepared.values(), job.out_record]
        assert job.out.endswith(formats.backend("onnx").suffix)
        assert set(_hashed(task)["tools"]) == set(formats.backend("onnx").export_tools)
    for target, opset in (("cpu-board", 17), ("old-board", 13)):
        converted = _job(tasks[f"convert:lite.fp32.onnx@{target}"])
        assert converted.export_record == _job(exports[f"export:lite.onnx-opset{opset}"]).out_record


def test_every_onnx_conversion_of_a_tensorflow_source_starts_from_its_opsets_export(tmp_path):
    tasks = _tasks(tmp_path)
    records = {_job(t).options["opset"]: _job(t).out_record for n, t in tasks.items() if n.startswith("export:digits.")}
    opsets = {"cpu-board": 17, "npu-phone": 17, "old-board": 13}
    converts = {name: task for name, task in tasks.items() if name.startswith("convert:digits.")}
    assert len(converts) == 10
    for name, task in converts.items():
        job = _job(task)
        assert isinstance(job, ConvertJob)
        target = name.rsplit("@", 1)[1]
        if job.support.format == "onnx":
            assert job.export_record == records[opsets[target]], name
            assert job.export_record in task["file_dep"], name
            # The conversion reads the exported float model: TensorFlow and tf2onnx are the export's tools.
            assert not {"tensorflow", "tf2onnx"} & set(_hashed(task)["tools"]), name
        else:
            assert job.export_record is None and not any(dep.startswith(layout.EXPORTS) for dep in task["file_dep"]), name


def test_an_onnx_source_has_no_export_and_its_conversions_read_the_source(tmp_path):
    tasks = _tasks(tmp_path)
    assert not any(name.startswith("export:mlp.") for name in tasks)
    for variant in ("fp32", "int8"):
        task = tasks[f"convert:mlp.{variant}.onnx@cpu-board"]
        assert _job(task).export_record is None
        assert layout.source_record("mlp") in task["file_dep"]


def test_settings_other_than_the_opset_leave_the_export_alone_and_the_opset_makes_another(tmp_path):
    before = _tasks(tmp_path / "before")
    changed_settings = _tasks(
        tmp_path / "settings",
        edit(SPEC, ("int8pt: {quantize: int8, per_channel: false}", "int8pt: {quantize: int8, per_channel: true}")),
        {**PROFILES, "npu-phone": PROFILES["npu-phone"].replace("quantization: qnn, activation_type: uint16", "quantization: cpu")},
    )
    export = "export:digits.onnx-opset17"
    assert _hashed(changed_settings[export]) == _hashed(before[export])
    assert _hashed(changed_settings["export:digits.onnx-opset13"]) == _hashed(before["export:digits.onnx-opset13"])
    for changed in ("convert:digits.int8pt.onnx@cpu-board", "convert:digits.int8.onnx@npu-phone"):
        assert _hashed(changed_settings[changed]) != _hashed(before[changed])

    new_opset = _tasks(tmp_path / "opset", SPEC, {**PROFILES, "old-board": PROFILES["old-board"].replace("opset: 13", "opset: 15")})
    assert sorted(n for n in new_opset if n.startswith("export:digits.")) == ["export:digits.onnx-opset15", "export:digits.onnx-opset17"]
    assert _hashed(new_opset[export]) == _hashed(before[export])


def test_a_fine_tuned_variant_converts_from_its_own_export(tmp_path):
    """A variant fine-tuned before conversion has another float model: its ONNX conversions start from an export of
    its train task's record, beside the source's export that the other variants share."""
    spec = edit(
        SPEC,
        ("source: {recipe: recipes/digits.py}", "source: {recipe: recipes/digits.py, framework: tf-keras}"),
        ("      int8pt: {quantize: int8, per_channel: false}", "      int8pt: {quantize: int8, per_channel: false}\n"
         "      sparse: {training: fine_tune, prune: {sparsity: 0.5}}"),
        ("cpu-board: [fp32, fp16, dynamic, int8, int8pt]", "cpu-board: [fp32, fp16, dynamic, int8, int8pt, sparse]"),
    )
    tunable = "def build_model():\n    raise NotImplementedError\n\n\ndef fine_tune(model, training):\n    return model\n"
    workspace = make_workspace(tmp_path, spec, files={**FILES, "recipes/digits.py": tunable}, profiles=PROFILES)
    tasks = {f"{t['basename']}:{t['name']}": t for t in plan_tasks(load_plan(workspace, environ={}), workspace) if t.get("name")}
    tuned = _job(tasks["export:digits.sparse.onnx-opset17"])
    assert tuned.source_record == layout.trained_record("digits", "sparse")
    assert "export:digits.sparse.onnx-opset13" not in tasks  # no sparse variant on the opset-13 board
    assert _job(tasks["convert:digits.sparse.onnx@cpu-board"]).export_record == tuned.out_record
    own = _job(tasks["export:digits.onnx-opset17"])
    assert _job(tasks["convert:digits.int8.onnx@cpu-board"]).export_record == own.out_record
    assert not {tuned.out, tuned.out_record, *tuned.out_prepared.values()} & {own.out, own.out_record, *own.out_prepared.values()}

"""Guarded rollouts of a really built bundle, steered by telemetry of its own model files on 10 000 simulated devices.

The session's built workspace (two recipes trained from fixed seeds, TFLite artifacts for two
targets, a baseline per artifact measured at evaluation) publishes its release, then a second
version rolled out in steps with `doit package` and `doit publish`. Every shipped model file, taken
from the repository as a device downloads it, runs in LiteRT over the workspace's evaluation data,
once as it is and once dimmed: those are the rows the app sees. Each device follows the signed
index by the reference client's rules, and its recorder, made from the baseline the release ships
for the variant it runs, observes a random sample of those rows with their real outputs, one in
ten labelled with the data's truth. `modelmake rollout advance --telemetry` then decides on the
fleet's records, as a user runs it: real outputs on ordinary data raise no alert and the rollout
goes to every device step by step, while a few real clients over loopback HTTP install, after each
decision, what the simulated devices with their ids run; dimmed scenes drift away from the
baseline and hold the rollout on the index in force.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from modelmake import cli, errors, layout
from modelmake.bundle import keys
from modelmake.bundle.signing import public_key_hint
from modelmake.client import Client, UpdateStatus
from modelmake.client.index import verify_index
from modelmake.client.offer import DeviceProfile, choose_release, choose_variant
from modelmake.client.telemetry import TelemetryContext, TelemetryRecorder
from modelmake.client.trust import TrustState
from modelmake.contracts import SourceRecord
from modelmake.formats.tflite import runtime
from modelmake.repository.rollouts import read_log
from modelmake.spec import load_plan
from modelmake.steps import _evaluation

from tests.support.ota_server import RepositoryServer
from tests.support.workspaces import BUNDLE, BUNDLE_TASKS, VERSION, Workspace, copy_workspace

pytestmark = pytest.mark.slow

OLD, NEW = VERSION, "0.4.0"
STEPS = (5, 25, 50, 100)
DEVICES = 10_000
DAY = 86_400
CHANNEL = "stable"
# Phones of three chipsets: one with the pixel-8 target of its own, two served by the generic target.
CHIPSETS = ("Tensor G3", "SM8650", "Exynos 2400")
LATENCY_MEDIAN_MS = {"Tensor G3": 2.5, "SM8650": 3.0, "Exynos 2400": 5.0}
DIM = 0.6  # the share of the light dim scenes lose
PUBLISH_TASK = f"publish:{BUNDLE}"
MODELS = ("digits", "glyphs")  # an image classifier (brightness, contrast) and a features one (per-feature mean)


# --- the workspace: the built release, then a staged rollout of the next version ---------------------


@pytest.fixture(scope="module")
def staged(built, tmp_path_factory) -> Workspace:
    """A copy of the built workspace that published OLD to every device, then NEW at the rollout's first step."""
    workspace = copy_workspace(built.workspace.root, tmp_path_factory.mktemp("staged") / "workspace")
    # Devices report their chipset: pixel-8's files go to Tensor G3 phones, the generic target's to the others.
    profile = workspace.root / "targets" / "pixel-8.yaml"
    profile.write_text(profile.read_text(encoding="utf-8") + "chipsets: [Tensor G3]\n", encoding="utf-8")
    first = workspace.doit("publish")
    assert first.executed == {PUBLISH_TASK}, first.describe()

    workspace.edit_spec(f'version: "{OLD}"', f'version: "{NEW}"')
    # The new version ships the int8 digits files first: other files, with baselines of their own.
    workspace.edit_spec("pixel-8: [fp32, fp16, int8]", "pixel-8: [int8, fp16, fp32]")
    workspace.edit_spec("android-arm64-cpu: [fp32, int8]", "android-arm64-cpu: [int8, fp32]")
    with open(workspace.root / "models.yaml", "a", encoding="utf-8") as spec:
        spec.write(
            "\npublish:\n  channels:\n    stable:\n"
            f'      previous: "{OLD}"\n'
            f"      rollout:\n        steps: [{', '.join(map(str, STEPS))}]\n        min_devices: 300\n"
            "        guardrails: {drift: hold, accuracy: hold, failure_rate: rollback}\n"
        )
    second = workspace.doit("package", "publish")
    # A new version repackages and publishes what is built: nothing is converted or evaluated again.
    assert {f"package:{BUNDLE}", PUBLISH_TASK} <= second.executed <= BUNDLE_TASKS | {PUBLISH_TASK}, second.describe()
    return workspace


@pytest.fixture
def workspace(staged, tmp_path) -> Workspace:
    """The staged workspace for one test, which steers its rollout."""
    return copy_workspace(staged.root, tmp_path / "workspace")


def public_key(workspace: Workspace):
    return keys.load_private_key((workspace.root / "keys" / "signing.pem").read_bytes()).public_key()


# --- what the shipped files really answer on the evaluation data ------------------------------------


class Rows:
    """One model file's evaluation rows as an app sees them: preprocessed inputs, the file's outputs, the truth."""

    def __init__(self, inputs: dict, outputs: dict, labels: np.ndarray):
        self.inputs, self.outputs, self.labels = inputs, outputs, labels
        self.count = len(labels)
        [self.scores] = outputs.values()
        self.correct = np.argmax(self.scores, axis=1) == labels


class RealOutputs:
    """Each shipped file (by its blob in the repository) run once in LiteRT over the evaluation data, plain and dimmed."""

    def __init__(self, root: Path):
        self.root = root
        self.plan = load_plan(root)
        self._rows: dict[tuple[str, bool], Rows] = {}

    def rows(self, repository: Path, model: str, variant, dimmed: bool) -> Rows:
        key = (variant.sha256, dimmed)
        if key not in self._rows:
            blob = repository / variant.blob
            assert variant.encryption is None and hashlib.sha256(blob.read_bytes()).hexdigest() == variant.sha256
            data = self._data(model, variant.target)
            inputs = data.conditioned("dim", DIM) if dimmed else data.inputs
            # One sample per invoke, as an app runs a camera frame.
            outputs = runtime.predict(blob, inputs, what=variant.id, batch=1)
            [labels] = [v for v in data.labels.values() if v is not None]
            self._rows[key] = Rows(dict(inputs), outputs, np.asarray(labels))
        return self._rows[key]

    def _data(self, model_name: str, target: str):
        [model] = [m for m in self.plan.models if m.name == model_name]
        signature = SourceRecord.read(str(self.root / layout.source_record(model.name))).signature
        return _evaluation.load(str(self.root / layout.dataset(model.name, "evaluation")),
                                tuple(spec.for_target(target) for spec in model.inputs), model.outputs, signature,
                                origin="evaluation data")


# --- the fleet --------------------------------------------------------------------------------------


class Fleet:
    """DEVICES phones spread over CHIPSETS, each following the signed index as the reference client does."""

    def __init__(self, workspace: Workspace, outputs: RealOutputs):
        self.workspace, self.real = workspace, outputs
        self.repository = workspace.build / "repository"
        key = public_key(workspace)
        self.keys = {public_key_hint(key): key}
        self.trusted: TrustState | None = None
        self.devices = [DeviceProfile("android", CHIPSETS[i % len(CHIPSETS)], "34", "5.2", f"phone-{i}", frozenset({"tflite"}))
                        for i in range(DEVICES)]
        self._baselines: dict[str, dict] = {}

    def follow(self, now: int) -> dict:
        """Each device's {model: (version, arm, variant)} under the index in force, which must be one a client that
        followed every earlier index accepts (signature, expiry, an index version that never goes back).  The client
        buckets a device per model, so one phone may run the new version of one model and the old one of the other."""
        index = verify_index((self.repository / "index.json").read_bytes(), self.keys, repository=BUNDLE, now=now,
                             trusted=self.trusted)
        self.trusted = TrustState(index.index_version, index.sha256)
        placed = {}
        for device in self.devices:
            chosen = {}
            for model in MODELS:
                offer = index.offer(CHANNEL, model)
                assert offer is not None, model
                decision = choose_release(offer, repository=BUNDLE, channel=CHANNEL, model=model, device=device)
                assert decision.version is not None, decision
                variant = choose_variant(index.releases[decision.version], model, device)
                chosen[model] = (decision.version, decision.arm, variant)
            placed[device.device_id] = chosen
        return placed

    def baseline(self, variant) -> dict:
        """The baseline the release ships beside the variant, checked as the client checks it when installing."""
        if variant.baseline.blob not in self._baselines:
            data = (self.repository / variant.baseline.blob).read_bytes()
            assert hashlib.sha256(data).hexdigest() == variant.baseline.sha256
            self._baselines[variant.baseline.blob] = json.loads(data)
        return self._baselines[variant.baseline.blob]

    def report(self, placed: dict, out: Path, *, now: int, period: int, dimmed: bool = False) -> Path:
        """A day of each device's inferences on real rows, one record per installed model file, as export() writes them."""
        rng = np.random.default_rng([7, period])
        start = datetime.fromtimestamp(now - DAY + period, UTC)
        end = datetime.fromtimestamp(now - 60 + period, UTC)
        with open(out, "w", encoding="utf-8") as lines:
            for device in self.devices:
                for model, (version, arm, variant) in placed[device.device_id].items():
                    rows = self.real.rows(self.repository, model, variant, dimmed)
                    recorder = TelemetryRecorder(
                        self.baseline(variant),
                        TelemetryContext(device=device.device_id, version=version, chipset=device.chipset,
                                         app_version=device.app_version, channel=CHANNEL, arm=arm),
                        start=start,
                    )
                    self.day(rng, recorder, rows, LATENCY_MEDIAN_MS[device.chipset])
                    recorder.export(lines, end=end)
        return out

    @staticmethod
    def day(rng, recorder: TelemetryRecorder, rows: Rows, latency_median_ms: float) -> None:
        """Some hundred inferences on rows drawn from the real ones, a few failing, one answer in ten labelled by the user."""
        n = int(rng.integers(100, 300))
        failures = int(rng.binomial(n, 0.001))
        picked = rng.integers(0, rows.count, n - failures)
        latency = rng.lognormal(math.log(latency_median_ms), 0.25, len(picked))
        recorder.observe({name: values[picked] for name, values in rows.inputs.items()},
                         {name: values[picked] for name, values in rows.outputs.items()}, latency_ms=latency)
        if failures:
            recorder.failure(latency_ms=latency_median_ms, count=failures)
        recorder.fallback(int(rng.binomial(n, 0.002)))
        recorder.frames(len(picked), float(latency.sum()) * 1.2 / 1000)
        recorder.peak_memory(float(rng.uniform(20, 40)))
        recorder.outcome(rows.correct[picked[::10]])


def on(placed: dict, version: str, model: str = "digits") -> int:
    """How many devices run ``version`` of ``model``."""
    return sum(1 for chosen in placed.values() if chosen[model][0] == version)


def advance(workspace: Workspace, telemetry: Path, capsys, monkeypatch) -> tuple[int, str, list[dict], dict]:
    """`modelmake rollout advance --telemetry FILE` run in the workspace: exit code, output, this run's decisions
    (one per model), the monitor's report on the same telemetry."""
    monkeypatch.chdir(workspace.root)
    logged = len(read_log(workspace.build / "repository"))
    code = cli.main(["rollout", "advance", "--telemetry", str(telemetry)])
    captured = capsys.readouterr()
    decisions = read_log(workspace.build / "repository")[logged:]
    report = json.loads((workspace.build / "monitor" / "monitor.json").read_text(encoding="utf-8"))
    return code, captured.out + captured.err, decisions, report


class Phones:
    """A few real reference clients beside the simulated fleet, updating over loopback HTTP after every decision."""

    def __init__(self, fleet: Fleet, server: RepositoryServer, devices: list, cache: Path):
        self.fleet, self.devices = fleet, devices
        self.clients = {d.device_id: Client(base_url=server.url, cache_dir=cache / d.device_id, repository=BUNDLE,
                                            trusted_keys=[keys.public_key_pem(public_key(fleet.workspace))])
                        for d in devices}

    def update(self, placed: dict) -> None:
        """Each phone installs what the index in force offers it: what the simulated device with its id runs, model
        file and baseline alike."""
        for device in self.devices:
            client = self.clients[device.device_id]
            for model in MODELS:
                result = client.update(device, model)
                assert result.status in (UpdateStatus.INSTALLED, UpdateStatus.CURRENT), result
                installed = client.installed(model)
                assert installed is not None and installed.baseline is not None, model
                version, _, variant = placed[device.device_id][model]
                assert (installed.version, installed.variant_id, installed.sha256) == (version, variant.id, variant.sha256)
                assert json.loads(installed.baseline.read_bytes()) == self.fleet.baseline(variant)


def by_model(decisions: list[dict]) -> dict[str, tuple]:
    return {d["model"]: (d["action"], d["from_percent"], d["to_percent"], d["published"]) for d in decisions}


# --- the tests --------------------------------------------------------------------------------------


def test_real_outputs_of_a_healthy_fleet_advance_the_rollout_step_by_step_to_every_device(workspace, tmp_path, capsys, monkeypatch):
    fleet = Fleet(workspace, RealOutputs(workspace.root))
    now = int(time.time())
    with RepositoryServer(fleet.repository) as server:
        placed = fleet.follow(now)
        # Beside the simulated fleet, real clients: per chipset, a phone that starts on the new digits and one on the old.
        phones = Phones(fleet, server, [
            next(d for d in fleet.devices if d.chipset == chipset and (placed[d.device_id]["digits"][0] == NEW) is new)
            for chipset in CHIPSETS for new in (True, False)
        ], tmp_path / "phones")
        for period, (step, following) in enumerate(zip(STEPS, STEPS[1:], strict=False)):
            if period:
                placed = fleet.follow(now + period)
            phones.update(placed)
            assert all(abs(on(placed, NEW, model) / DEVICES - step / 100) < 0.03 for model in MODELS)
            assert {chosen["digits"][2].precision for chosen in placed.values() if chosen["digits"][0] == OLD} == {"fp32"}
            telemetry = fleet.report(placed, tmp_path / f"day-{period}.jsonl", now=now + period, period=period)
            code, output, decisions, report = advance(workspace, telemetry, capsys, monkeypatch)
            assert f"{2 * DEVICES} of {2 * DEVICES} records counted" in output, output
            # Every group (model x version x chipset) had enough data to be judged, and its real outputs and inputs
            # match the baseline measured at evaluation: no drift, no alert of any kind.
            assert {(g["model"], g["version"], g["chipset"]): g["status"] for g in report["groups"]} == {
                (model, version, chipset): "ok" for model in MODELS for version in (OLD, NEW) for chipset in CHIPSETS}
            assert report["alerts"] == [], (output, report["alerts"])
            assert code == 0, output
            assert by_model(decisions) == dict.fromkeys(MODELS, ("advance", step, following, True)), output
        # Each decision's index is one the client takes; the last offers the new version, int8 digits files, to every phone.
        final = fleet.follow(now + len(STEPS))
        phones.update(final)
    assert all(on(final, NEW, model) == DEVICES for model in MODELS)
    assert {chosen["digits"][2].id for chosen in final.values()} == {"digits.int8.tflite@pixel-8", "digits.int8.tflite@android-arm64-cpu"}


def test_dimmed_scenes_raise_a_brightness_drift_alert_on_real_outputs_and_hold_the_rollout(workspace, tmp_path, capsys, monkeypatch):
    fleet = Fleet(workspace, RealOutputs(workspace.root))
    now = int(time.time())
    before = (fleet.repository / "index.json").read_bytes()
    placed = fleet.follow(now)
    telemetry = fleet.report(placed, tmp_path / "dim.jsonl", now=now, period=0, dimmed=True)
    code, output, decisions, report = advance(workspace, telemetry, capsys, monkeypatch)
    assert code == errors.AlertRaised.exit_code, output
    assert by_model(decisions) == dict.fromkeys(MODELS, ("hold", STEPS[0], STEPS[0], False)), output
    reasons = {d["model"]: " | ".join(d["reasons"]) for d in decisions}
    # Less light: the images' brightness, and with it their contrast, leave the baseline's bins on every chipset;
    # the features model sees its pixels' means move.
    for chipset in CHIPSETS:
        for distribution in ("inputs.image.brightness", "inputs.image.contrast"):
            assert f"drift ({chipset}, action hold): {distribution} drifted from its baseline" in reasons["digits"], reasons
        assert f"drift ({chipset}, action hold): inputs.pixels: a feature's mean moved" in reasons["glyphs"], reasons
    assert not any(a["guardrail"] != "drift" for a in report["alerts"]), report["alerts"]
    assert (fleet.repository / "index.json").read_bytes() == before  # the signed index in force stays the client's
    after = fleet.follow(now + 1)
    assert all(on(after, NEW, model) == on(placed, NEW, model) for model in MODELS)

"""(e) `modelmake monitor` on one million telemetry records, end to end, in under 30 s.

Ten thousand devices report through the reference client's recorder (tests/support/fleet.py: a small
signed repository with two releases and baselines, no model built); their lines are repeated with
fresh record and device ids to one million records (about 1.4 GB). The figure is the wall time of
the `modelmake monitor` process, from start to the written report; the baseline, measured in the
same run on the same file, is parsing every line with the standard library's json.loads and
nothing else. CPU times are printed too: on a shared machine they say more than wall times.
"""
from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from ._timing import REPOSITORY, quiet_env, report, run

NAME = "monitor"
NAMES = (NAME,)
RECORDS = 1_000_000
DEVICES = 10_000
TARGET_SECONDS = 30.0


def telemetry_file(folder: Path) -> tuple[Path, Path, Path]:
    """(repository, public key file, telemetry file of RECORDS lines)."""
    sys.path.insert(0, str(REPOSITORY))
    from modelmake.bundle import keys
    from modelmake.repository.offer import Offer

    from tests.support import fleet

    now = int(time.time())
    repository = folder / "repository"
    fleet.publish_release(repository, folder, "1.0.0", {"stable": {fleet.MODEL: Offer("1.0.0")}}, now - 2 * fleet.DAY)
    fleet.publish_release(repository, folder, "2.0.0", {"stable": {fleet.MODEL: Offer("2.0.0", 2500, "1.0.0")}}, now - fleet.DAY)
    public = folder / "signing.pub.pem"
    public.write_bytes(keys.public_key_pem(fleet.SIGNING_KEY))
    devices = fleet.Fleet(DEVICES)
    seed = devices.report(devices.follow(repository, now), fleet.healthy, folder / "seed.jsonl", now=now)
    records = [json.loads(line) for line in seed.read_text().splitlines()]
    out = folder / "telemetry.jsonl"
    with open(out, "w", encoding="utf-8") as lines:
        for copy in range(RECORDS // len(records)):
            for record in records:
                record["record_id"] = f"{copy:08x}{record['record_id'][8:]}"
                record["device"] = f"{record['device']}-{copy}" if copy else record["device"]
                lines.write(json.dumps(record, separators=(",", ":")) + "\n")
                record["device"] = record["device"].rsplit("-", 1)[0] if copy else record["device"]
    return repository, public, out


def plain_json(path: Path) -> float:
    started = time.perf_counter()
    with open(path, "rb") as lines:
        for line in lines:
            json.loads(line)
    return time.perf_counter() - started


def main(names) -> list[str]:
    if NAME not in names:
        return []
    with tempfile.TemporaryDirectory(prefix="modelmake-bench-monitor-") as scratch:
        folder = Path(scratch)
        repository, public, path = telemetry_file(folder)
        size = path.stat().st_size
        command = [sys.executable, "-m", "modelmake.cli", "monitor", str(path), "--repository", str(repository),
                   "--public-key", str(public), "--out", str(folder / "report"), "--workspace", str(folder)]
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        measured = run(command, REPOSITORY, quiet_env())
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
        started = time.process_time()
        baseline = plain_json(path)
        baseline_cpu = time.process_time() - started
        counted = json.loads((folder / "report" / "monitor.json").read_text())["intake"]["counted"]
        return [
            f"monitor: {counted:,} of {RECORDS:,} records counted from {size / 1e9:.2f} GB; CPU time {cpu:.1f} s "
            f"against {baseline_cpu:.1f} s for json.loads ({cpu / baseline_cpu:.2f}x): wall times below rise with the machine's load",
            report("monitor 1M records, end to end", measured, baseline, "json.loads of every line", f"< {TARGET_SECONDS:g} s",
                   measured < TARGET_SECONDS and counted == RECORDS),
        ]

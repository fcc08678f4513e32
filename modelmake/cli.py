"""The `modelmake` command: workspace scaffolding, builds (doit with true exit codes) and bundle tools.

`modelmake build [DOIT ARGS...]` runs doit on the workspace's dodo.py in this
process and exits with the code of what went wrong (below), where plain `doit`
exits 1 for any failed task.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import traceback
from pathlib import Path

from . import errors
from .bundle.manifest import ENCRYPTED_SUFFIX
from .errors import DecryptionError, KeyMaterialError, ModelmakeError, VerificationError, exit_code_for
from .staging import staged_files

SCAFFOLD = Path(__file__).parent / "scaffold"
SCHEMA_DIR = Path(__file__).parent / "schema"
KEY_FILES = {"signing": "signing.pem", "public": "signing.pub.pem", "data": "data.key"}


# --- init ----------------------------------------------------------------------------

def cmd_init(args) -> int:
    from .layout import WORKSPACE_PROFILES

    target = Path(args.directory)
    if target.exists() and any(target.iterdir()) and not args.force:
        raise ModelmakeError(f"{target} is not empty: choose a new directory, or pass --force to add the starter files to it")
    for source in sorted(SCAFFOLD.rglob("*")):
        if source.is_dir() or "__pycache__" in source.parts:
            continue
        destination = target / source.relative_to(SCAFFOLD)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
    # Editors validate the YAML against the installed package's schemas, wherever it is installed.
    _set_schema(target / "models.yaml", "models.schema.json")
    for profile in sorted((target / WORKSPACE_PROFILES).glob("*.yaml")):
        _set_schema(profile, "target.schema.json")
    (target / ".gitignore").write_text("/build/\n/keys/\n*.key\n*.pem\n", encoding="utf-8")
    print(f"created a workspace in {target}: cd {target} && modelmake build")
    return 0


def _set_schema(path: Path, schema: str) -> None:
    """Replace the first line, the scaffold's placeholder, with the schema line naming ``schema``."""
    modeline = f"# yaml-language-server: $schema={(SCHEMA_DIR / schema).as_posix()}\n"
    path.write_text(modeline + path.read_text(encoding="utf-8").split("\n", 1)[1], encoding="utf-8")


# --- keygen --------------------------------------------------------------------------

def cmd_keygen(args) -> int:
    from .bundle import keys

    out = Path(args.out)
    paths = {role: out / name for role, name in KEY_FILES.items()}
    existing = [str(p) for p in paths.values() if p.exists() or p.is_symlink()]
    if existing and not args.force:
        raise KeyMaterialError(
            f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}: bundles signed or encrypted "
            "with the old keys could not be verified or decrypted with new ones, so keygen does not replace them; "
            "pass --force to replace them, or --out DIR to write the new keys elsewhere"
        )
    if out.exists() and not out.is_dir():
        raise ModelmakeError(f"--out {out} is a file: give a directory for the key files")
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    signing_key = keys.generate_signing_key()
    keys.write_private_key(paths["signing"], signing_key)
    keys.write_public_key(paths["public"], signing_key)
    keys.write_data_key(paths["data"], keys.generate_data_key())

    shown = {role: path.as_posix() for role, path in paths.items()}
    print(f"wrote {shown['signing']} (signing key, private, mode 0600)")
    print(f"wrote {shown['public']} (public key: apps and `modelmake verify` check bundles with it)")
    print(f"wrote {shown['data']} (data key, private, mode 0600)")
    print("use them in models.yaml (relative paths are relative to the workspace):")
    print("  bundle:")
    print(f"    signing: {{key: file:{shown['signing']}}}")
    print(f"    encryption: {{key: file:{shown['data']}}}")
    print(f"verify bundles with: modelmake verify BUNDLE --public-key {shown['public']}")
    print(
        "keep signing.pem and data.key out of version control; in CI, store their contents as secrets "
        "and use env:VARIABLE references instead of file: paths"
    )
    return 0


# --- verify and inspect --------------------------------------------------------------

def _public_key(path: str):
    from .bundle import keys

    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise KeyMaterialError(
            f"--public-key {path} does not exist: give the signing.pub.pem that `modelmake keygen` wrote"
        ) from None
    except IsADirectoryError:
        raise KeyMaterialError(f"--public-key {path} is a directory: give the signing.pub.pem file inside it") from None
    except PermissionError:
        raise KeyMaterialError(f"--public-key {path} cannot be read by this user: fix its permissions") from None
    return keys.load_public_key(data, source=f"--public-key {path}")


def _slice_name(manifest: dict) -> str:
    return manifest.get("slice", "all")


def cmd_verify(args) -> int:
    from .bundle.manifest import files_of
    from .bundle.verify import verify_bundle

    manifest, count = verify_bundle(Path(args.bundle), _public_key(args.public_key))
    noun = "file" if count == 1 else "files"
    print(
        f"verified {manifest['bundle']} {manifest['version']} ({_slice_name(manifest)}): "
        f"{count} {noun}, signing: {manifest.get('signing', 'unknown')}"
    )
    if args.verbose:
        for path in files_of(manifest):
            print(f"  {path}")
    return 0


def _size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _key_metrics(metrics: dict) -> str:
    """The figures an app engineer decides on; the manifest holds the rest."""
    chosen = [name for name in ("top1", "accuracy_drop") if name in metrics]
    chosen = chosen or sorted(m for m in metrics if m != "size_kb")[:2]
    short = {"accuracy_drop": "drop"}
    return " ".join(f"{short.get(name, name)} {metrics[name]}" for name in chosen) or "-"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def cmd_inspect(args) -> int:
    from .bundle.signing import public_key_hint
    from .bundle.verify import opened_bundle

    public_key = _public_key(args.public_key) if args.public_key else None
    with opened_bundle(Path(args.bundle), public_key) as bundle:
        manifest = bundle.manifest
    if public_key:
        checked = f"verified with --public-key {args.public_key} (key {public_key_hint(public_key)[:16]}...)"
    else:
        checked = "not verified: pass --public-key to check the signature"
    variants = [(name, vid, v) for name, model in sorted(manifest["models"].items()) for vid, v in sorted(model["variants"].items())]
    total = sum(v["size"] for _, _, v in variants)
    encrypted = sum(1 for _, _, v in variants if "encryption" in v)
    scope = f"slice {manifest['slice']}" if "slice" in manifest else "all platforms"
    print(f"bundle    {manifest['bundle']} {manifest['version']} ({scope})")
    print(f"format    version {manifest['format_version']}, created {manifest.get('created', '?')}")
    print(f"signing   {manifest.get('signing', 'unknown')}, {checked}")
    print(f"files     {len(variants)} model files, {_size(total)}, {encrypted} encrypted")
    for name, target in sorted(manifest.get("targets", {}).items()):
        print(f"target    {name}: {target.get('platform', '?')}, {target.get('soc', '?')}, {target.get('min_os', '?')}")
    print()
    rows = [["MODEL", "VARIANT", "TARGET", "PLATFORM", "FORMAT", "PRECISION", "SIZE", "METRICS", "ENCRYPTION", "FILE"]]
    for name, _, v in variants:
        encryption = v.get("encryption", {}).get("scheme", "?") if "encryption" in v else "-"
        rows.append([
            name, v.get("variant", "?"), v["target"], v["platform"], v["format"], v["precision"],
            _size(v["size"]), _key_metrics(v.get("metrics", {})), encryption, v["file"],
        ])
    print("\n".join(_table(rows)))
    return 0


# --- decrypt -------------------------------------------------------------------------

def _encrypted_files(manifest: dict) -> dict[str, dict]:
    return {
        v["file"]: v
        for model in manifest["models"].values()
        for v in model["variants"].values()
        if "encryption" in v
    }


def _plaintext_path(path: str) -> str:
    return path[: -len(ENCRYPTED_SUFFIX)] if path.endswith(ENCRYPTED_SUFFIX) else path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _decrypt_one(directory: Path, manifest: dict, variant: dict, data_key: bytes, destination: Path) -> None:
    """Decrypt one bundle file into ``destination`` (a temporary name) and check it against the manifest."""
    from .bundle.manifest import ENCRYPTION_SCHEME
    from .bundle.streaming_aead import associated_data_for, decrypt_file

    path = variant["file"]
    encryption = variant["encryption"]
    if encryption.get("scheme") != ENCRYPTION_SCHEME:
        raise VerificationError(
            f"manifest.json: {path} is encrypted with {encryption.get('scheme')!r}; "
            f"format version 1 defines only {ENCRYPTION_SCHEME}"
        )
    source = directory / path
    if not source.is_file():
        raise VerificationError(f"{path} is listed in manifest.json but is not in the bundle")
    associated_data = associated_data_for(manifest["bundle"], manifest["version"], path)
    try:
        decrypt_file(source, destination, data_key, associated_data)
    except DecryptionError as error:
        raise DecryptionError(
            f"{path}: {error}. Nothing was written. Check --key (it must be the bundle's data key), "
            "and verify the bundle with `modelmake verify` to find a changed file"
        ) from None
    expected = encryption.get("plaintext_sha256")
    actual = _sha256(destination)
    if actual != expected or destination.stat().st_size != encryption.get("plaintext_size"):
        raise DecryptionError(
            f"{path} decrypted, but the plaintext does not match manifest.json (SHA-256 {actual}, "
            f"the manifest says {expected}): the manifest and the file are from different builds. Nothing was written"
        )


def cmd_decrypt(args) -> int:
    from .bundle import keys
    from .bundle.verify import extracted_bundle

    raw = keys.resolve_key_reference(args.key, Path.cwd(), setting="--key")
    data_key = keys.load_data_key(raw, source=f"--key ({args.key})")
    public_key = _public_key(args.public_key) if args.public_key else None
    with extracted_bundle(Path(args.bundle), public_key) as (manifest, directory):
        encrypted = _encrypted_files(manifest)
        if not encrypted:
            raise ModelmakeError(f"{args.bundle} has no encrypted files: its model files are stored in the clear")
        if args.file:
            wanted = [p for p in encrypted if args.file in (p, _plaintext_path(p))]
            if not wanted:
                raise ModelmakeError(
                    f"--file {args.file} is not an encrypted file of this bundle; it has: {', '.join(sorted(encrypted))}"
                )
        else:
            wanted = sorted(encrypted)
        slice_part = f"-{manifest['slice']}" if "slice" in manifest else ""
        out = Path(args.out) if args.out else Path(f"{manifest['bundle']}-{manifest['version']}{slice_part}-decrypted")
        # The manifest's paths were judged when it was read: none climbs out of --out.
        relative = {path: tuple(_plaintext_path(path).split("/")) for path in wanted}
        targets = {path: out.joinpath(*parts) for path, parts in relative.items()}
        # Everything is decrypted and checked in one staging directory under --out first, so a failure leaves no
        # plaintext; a killed run leaves it only there, where the next run into --out removes it.
        try:
            with staged_files(out) as staging:
                for path in wanted:
                    _decrypt_one(directory, manifest, encrypted[path], data_key, staging.joinpath(*relative[path]))
        except OSError as error:
            raise ModelmakeError(f"cannot decrypt into {out}: {error.strerror or error}"
                                 + (f" ({error.filename})" if error.filename else "")) from None
    noun = "file" if len(wanted) == 1 else "files"
    print(
        f"decrypted {len(wanted)} {noun} of {manifest['bundle']} {manifest['version']} into {out} "
        "(plaintext SHA-256 matches manifest.json)"
    )
    for path in wanted:
        print(f"  {targets[path]}")
    return 0


# --- build ---------------------------------------------------------------------------

# doit's own results (doit_cmd.DoitMain.run).
DOIT_OK, DOIT_TASK_FAILED, DOIT_TASK_ERROR, DOIT_BAD_COMMAND = 0, 1, 2, 3


def cmd_build(doit_args: list[str]) -> int:
    """Run doit in this process and turn its result into modelmake's exit code.

    doit exits 1 for a failed task and 2 for an error in one, whatever went
    wrong; the runner records each failed task's own code under
    build/.modelmake/failures/, and this reads them back.  Records of earlier
    runs are cleared first, so only this run's failures count.  When several
    tasks fail (``--continue``, ``-n``) the highest code wins, so a bug (70)
    is never hidden by an ordinary failure.
    """
    from doit.cmd_base import DodoTaskLoader
    from doit.doit_cmd import DoitMain

    from . import layout
    from .steps.runner import read_failures

    class Loader(DodoTaskLoader):
        """Clears the failure records once doit has found the workspace (dodo.py's folder, its working directory)."""

        def setup(self, opt_values):
            super().setup(opt_values)
            shutil.rmtree(layout.FAILURES, ignore_errors=True)

    before = os.getcwd()
    try:
        doit_args, cluster = _on_cluster(doit_args)
    except ModelmakeError as error:
        print(f"modelmake build: {error}", file=sys.stderr)
        return exit_code_for(error)
    try:
        result = DoitMain(Loader()).run(doit_args)
    except SystemExit as stop:  # the graph could not be loaded: the message is out, the code is modelmake's
        return stop.code if isinstance(stop.code, int) else 1
    finally:
        workspace = Path.cwd()
        os.chdir(before)
        if cluster is not None:
            cluster()
    _print_cache_line(workspace)
    if result == DOIT_OK:
        return 0
    if result == DOIT_BAD_COMMAND:
        return errors.USAGE
    failures = read_failures(workspace)
    for failure in failures:
        print(f"modelmake build: {failure['task']} failed (exit {failure['exit_code']}); details in {failure['log']}", file=sys.stderr)
    if failures:
        return max(failure["exit_code"] for failure in failures)
    # A failure outside modelmake's steps: a task of your own in dodo.py failed, or doit could not run one.
    return errors.StepError.exit_code if result == DOIT_TASK_FAILED else errors.BUG


# --- monitor and rollout -------------------------------------------------------------

MONITOR_REPORT = "build/monitor"  # in the workspace: monitor.json and monitor.html


def _workspace_plan(workspace: Path):
    """The workspace's plan when it has a models.yaml, else None (monitor then needs --public-key and bundles)."""
    from .layout import SPEC_FILE
    from .spec import load_plan

    return load_plan(workspace) if (workspace / SPEC_FILE).is_file() else None


def _workspace_public_key(workspace: Path, plan):
    """The public key of the key the workspace signs with, without creating a development key."""
    from .bundle import keys
    from .bundle.keyring import build_keys
    from .layout import DEVELOPMENT_PUBLIC_KEY

    if plan.bundle.signing_key is not None:
        return build_keys(workspace, plan.bundle.signing_key, False, None).signing_key.public_key()
    path = workspace / DEVELOPMENT_PUBLIC_KEY
    if not path.is_file():
        raise KeyMaterialError(f"{path} does not exist: nothing was built and signed here yet; give --public-key")
    return keys.load_public_key(path.read_bytes(), source=str(path))


def _telemetry_paths(paths: list[str]) -> list[Path]:
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise ModelmakeError(f"{', '.join(missing)}: no such telemetry file; give the JSON lines files export() wrote")
    return [Path(p) for p in paths]


def _catalog(args, workspace: Path, plan):
    from .monitor.baselines import load_catalog, repository_bundles

    public_key = _public_key(args.public_key) if args.public_key else _workspace_public_key(workspace, plan) if plan else None
    if public_key is None:
        raise KeyMaterialError("no models.yaml here to take the signing key from: give --public-key (signing.pub.pem)")
    repository = Path(args.repository) if getattr(args, "repository", None) else workspace / plan.publish.repository if plan else None
    bundles = [Path(b) for b in getattr(args, "bundle", None) or []] or (repository_bundles(repository) if repository else [])
    if not bundles and plan is not None:  # nothing published yet: the workspace's own built bundle
        from .layout import bundle_dir

        built = workspace / bundle_dir(plan.bundle.name, plan.bundle.version)
        bundles = [built] if built.is_dir() else []
    if not bundles:
        raise ModelmakeError(
            f"no bundle to take baselines from: {repository or 'no repository'} holds no published release and nothing "
            "is built here; build or publish one (modelmake build, doit publish), or give --bundle PATH"
        )
    return load_catalog(bundles, public_key)


def _intake_line(intake) -> str:
    left = ", ".join(f"{count} {kind.replace('_', ' ')}" for kind, count in intake.rejected.items() if count)
    return f"{intake.accepted} of {intake.lines} records counted" + (f" (left out: {left})" if left else "")


def cmd_monitor(args) -> int:
    from .monitor.analysis import analyse
    from .monitor.report import write_report
    from .monitor.settings import MonitorSettings
    from .monitor.telemetry import read_telemetry

    workspace = Path(args.workspace)
    plan = _workspace_plan(workspace)
    settings = plan.monitor if plan else MonitorSettings()
    catalog = _catalog(args, workspace, plan)
    intake = read_telemetry(_telemetry_paths(args.telemetry), catalog, max_clock_skew_minutes=settings.max_clock_skew_minutes)
    document = analyse(intake, catalog, settings)
    json_path, html_path = write_report(document, Path(args.out) if args.out else workspace / MONITOR_REPORT)
    print(f"{_intake_line(intake)}; {len(document['groups'])} groups; report: {html_path} and {json_path}")
    for kind, messages in document["intake"]["messages"].items():
        for message in messages[:3]:
            print(f"  left out ({kind.replace('_', ' ')}): {message}", file=sys.stderr)
    for alert in document["alerts"]:
        print(f"ALERT {alert['guardrail']}: {alert['where']}: {alert['message']}")
    return errors.AlertRaised.exit_code if document["alerts"] else 0


def cmd_rollout_advance(args) -> int:
    from .bundle.keyring import build_keys
    from .fsutil import sha256_file
    from .monitor.analysis import analyse
    from .monitor.report import write_report
    from .monitor.rollout import advance
    from .monitor.telemetry import read_telemetry
    from .steps.publish import SECONDS_PER_DAY, _signing_time

    workspace = Path(args.workspace)
    plan = _workspace_plan(workspace)
    if plan is None:
        raise ModelmakeError(f"{workspace} has no models.yaml: run rollout advance in the workspace that publishes the repository")
    if not plan.publish.rollouts:
        raise ModelmakeError(
            "models.yaml declares no staged rollout: give a channel (or a model in it) "
            "rollout: {steps: [5, 25, 50, 100]} under publish.channels"
        )
    catalog = _catalog(args, workspace, plan)
    paths = _telemetry_paths(args.telemetry)
    intake = read_telemetry(paths, catalog, max_clock_skew_minutes=plan.monitor.max_clock_skew_minutes)
    entries = advance(
        workspace / plan.publish.repository,
        bundle=plan.bundle.name,
        policies=plan.publish.rollouts,
        intake=intake,
        settings=plan.monitor,
        signing_key=build_keys(workspace, plan.bundle.signing_key, False, None).signing_key,
        now=_signing_time(),
        expires_after=plan.publish.expires_after_days * SECONDS_PER_DAY,
        telemetry=[{"path": str(p), "sha256": sha256_file(p)} for p in paths],
    )
    _, html_path = write_report(analyse(intake, catalog, plan.monitor), workspace / MONITOR_REPORT)
    print(f"{_intake_line(intake)}; the monitor's report on it: {html_path}")
    for entry in entries:
        print(f"{entry['channel']}/{entry['model']} {entry['version']}: {entry['action']}, {entry['from_percent']:g}% -> "
              f"{entry['offered_version']} at {entry['to_percent']:g}% (index version {entry['index_version']}, "
              f"decision {entry['sequence']} in rollouts.jsonl)")
        for reason in entry["reasons"]:
            print(f"  {reason}")
    broken = any(entry["action"] in ("hold", "rollback") for entry in entries)
    return errors.AlertRaised.exit_code if broken else 0


# doit's commands other than `run`: they run no step, so they start no cluster and take no -n.
DOIT_OTHER_COMMANDS = frozenset(
    {"list", "info", "clean", "forget", "ignore", "dumpdb", "strace", "tabcompletion", "auto", "help", "reset-dep"}
)


def _cluster_options(doit_args: list[str]) -> tuple[list[str], dict[str, str]]:
    """Take ``-j N`` / ``--jobs N`` (a LocalCluster of N worker processes) and ``--dask ADDRESS`` out of doit's arguments."""
    from . import distributed

    rest, environ = [], {}
    arguments = iter(doit_args)
    for argument in arguments:
        name, equals, value = argument.partition("=")
        if argument.startswith("-j") and len(argument) > 2 and not argument.startswith("--"):
            name, equals, value = "-j", "=", argument[2:]
        if name in ("-j", "--jobs", "--dask"):
            if not equals:
                value = next(arguments, "")
            if not value:
                raise ModelmakeError(f"{name} needs a value: -j N for N local worker processes, --dask tcp://HOST:8786 for a cluster")
            if name == "--dask":
                environ[distributed.ADDRESS_VARIABLE] = value
            else:
                environ[distributed.WORKERS_VARIABLE] = value
            continue
        rest.append(argument)
    return rest, environ


def _on_cluster(doit_args: list[str]):
    """doit's arguments for a build whose model steps go to Dask, and the function that ends the cluster session.

    With ``-j N``, ``--dask ADDRESS`` or MODELMAKE_DASK, the client connects
    (or starts the LocalCluster) before doit loads, so an unreachable scheduler
    is one message and nothing built; doit then runs IN_FLIGHT_PER_THREAD
    times as many tasks at once as the cluster has threads (``-n K -P thread``:
    each task waits on its future), unless the command line sets ``-n`` itself.
    """
    from . import distributed

    rest, environ = _cluster_options(doit_args)
    saved = {name: os.environ.get(name) for name in environ}
    os.environ.update(environ)
    command = next((a for a in rest if not a.startswith("-")), "run")
    if not distributed.configured() or command in DOIT_OTHER_COMMANDS:
        _restore(saved)
        return rest, None
    from .distributed import client

    try:
        current = client.session()
        settings, threads = current.settings, current.threads()
    except BaseException:
        _restore(saved)
        raise
    if not any(a in ("-n", "--process") or a.startswith(("-n", "--process=")) for a in rest):
        at = rest.index("run") + 1 if rest[:1] == ["run"] else 0
        rest[at:at] = ["-n", str(IN_FLIGHT_PER_THREAD * threads), "-P", "thread"]
    where = settings.address or f"a local cluster of {settings.workers} worker process{'es' if settings.workers > 1 else ''}"
    print(f"modelmake build: model steps run on {where} ({threads} at once)", flush=True)

    def end() -> None:
        client.shutdown()
        _restore(saved)

    return rest, end


# Tasks in flight per cluster thread.  A task waiting for a worker holds one of doit's slots; with few slots, quick
# steps queued behind a long training kept the next source model from being submitted at all, and so from going first
# by its priority (client.PRIORITY).  Waiting costs a thread each, not a core.
IN_FLIGHT_PER_THREAD = 4


def _restore(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _print_cache_line(workspace: Path) -> None:
    """The build console's one line on the shared cache, when this build used one."""
    from .cache.hook import build_id, console_line, last_build

    summary = last_build(workspace)
    if summary is not None and summary["build"] == build_id(workspace):
        print(console_line(summary))


# --- cache ---------------------------------------------------------------------------

def cmd_cache(args) -> int:
    """What the shared cache did in the workspace's last build that used one."""
    from .cache.hook import last_build, settings_in_force

    workspace = Path(args.workspace)
    summary = last_build(workspace)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
        return 0
    if summary is None:
        in_force = settings_in_force(None)
        where = f" (MODELMAKE_CACHE is {in_force.url})" if in_force else " (set MODELMAKE_CACHE or a cache: section in models.yaml)"
        print(f"no build in {workspace} has used a shared cache yet{where}")
        return 0
    mode = "read and write" if summary["write"] else "read only"
    lines = [
        f"cache:    {summary['url']} ({mode})",
        f"tasks:    {summary['tasks']} cacheable tasks ran: {summary['hits']} from the cache, {summary['misses']} built "
        f"(not in the cache), {summary['ignored']} built (cached entry ignored)",
        f"uploads:  {summary['uploads']} entries, {_size(summary['bytes_up'])}",
        f"fetched:  {_size(summary['bytes_down'])}",
        f"saved:    {summary['seconds_saved']:.1f} s of build time (the fetched tasks' build times, less the time to fetch them)",
    ]
    if summary["ignored_tasks"]:
        lines.append(f"ignored:  {', '.join(summary['ignored_tasks'])} (see the build's warnings)")
    if summary["unavailable"]:
        lines.append(f"unavailable: {summary['unavailable']}; the build ran without the cache from then on")
    print("\n".join(lines))
    return 0


# --- entry point ---------------------------------------------------------------------

def exit_code_help() -> str:
    """The exit-code table of the help, generated from errors.py."""
    return "exit codes:\n" + "\n".join(f"  {code:>3}  {meaning}" for code, meaning in errors.exit_codes())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelmake", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1] + "\n" + exit_code_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    # Parsed by cmd_build itself: everything after `build` is doit's (see main).
    commands.add_parser(
        "build", add_help=False,
        help="build the workspace: doit's command line (run, list, info, clean, -n N, ...), modelmake's exit codes",
    )

    init = commands.add_parser("init", help="scaffold a workspace (dodo.py, models.yaml, recipes/, targets/) that builds as it stands")
    init.add_argument("directory")
    init.add_argument("--force", action="store_true", help="write into a non-empty directory")
    init.set_defaults(handler=cmd_init)

    keygen = commands.add_parser("keygen", help="create a signing key pair and a data key for release builds")
    keygen.add_argument(
        "--out", default="keys", metavar="DIR", help="directory for signing.pem, signing.pub.pem and data.key (default: keys)"
    )
    keygen.add_argument("--force", action="store_true", help="replace existing key files")
    keygen.set_defaults(handler=cmd_keygen)

    verify = commands.add_parser("verify", help="check a bundle's signature, files and format version")
    verify.add_argument("bundle", help="a bundle directory or a .zip bundle (whole or a platform slice)")
    verify.add_argument("--public-key", required=True, metavar="PEM", help="the signer's public key (signing.pub.pem)")
    verify.add_argument("-v", "--verbose", action="store_true", help="list the verified model files")
    verify.set_defaults(handler=cmd_verify)

    inspect = commands.add_parser("inspect", help="show a bundle's models, variants, targets, metrics and protection")
    inspect.add_argument("bundle", help="a bundle directory or a .zip bundle")
    inspect.add_argument("--public-key", metavar="PEM", help="also verify the signature with this public key")
    inspect.set_defaults(handler=cmd_inspect)

    decrypt = commands.add_parser("decrypt", help="decrypt a bundle's encrypted model files")
    decrypt.add_argument("bundle", help="a bundle directory or a .zip bundle")
    decrypt.add_argument("--key", required=True, metavar="REF", help="the data key: env:VAR, file:PATH or PATH (64 hex characters)")
    decrypt.add_argument("--out", metavar="DIR", help="where to write the plaintext files (default: <bundle>-<version>-decrypted)")
    decrypt.add_argument("--file", metavar="PATH", help="decrypt only this file (its path in the bundle)")
    decrypt.add_argument("--public-key", metavar="PEM", help="verify the bundle with this public key before decrypting")
    decrypt.set_defaults(handler=cmd_decrypt)

    monitor = commands.add_parser(
        "monitor", help="compare device telemetry with the bundles' baselines and budgets; exits 30 when an alert fires"
    )
    monitor.add_argument("telemetry", nargs="+", metavar="TELEMETRY", help="JSON lines files of telemetry records (OTA.md)")
    _baseline_arguments(monitor)
    monitor.add_argument("--bundle", action="append", metavar="PATH",
                         help="a bundle directory or .zip to take baselines from (repeatable; default: every release in the repository)")
    monitor.add_argument("--repository", metavar="DIR",
                         help="the repository whose releases give the baselines (default: publish.repository)")
    monitor.add_argument("--out", metavar="DIR", help=f"where monitor.json and monitor.html go (default: the workspace's {MONITOR_REPORT})")
    monitor.set_defaults(handler=cmd_monitor)

    rollout = commands.add_parser("rollout", help="steer staged rollouts on telemetry")
    rollout_commands = rollout.add_subparsers(dest="rollout_command", required=True)
    advance = rollout_commands.add_parser(
        "advance", help="decide each staged rollout (advance, hold, roll back) on telemetry, publish the index, log the decision"
    )
    advance.add_argument("--telemetry", nargs="+", required=True, metavar="FILE", help="JSON lines files of telemetry records")
    _baseline_arguments(advance)
    advance.set_defaults(handler=cmd_rollout_advance)
    cache = commands.add_parser("cache", help="what the shared cache did in the last build: hits, misses, bytes moved, time saved")
    cache.add_argument("--workspace", default=".", metavar="DIR", help="the workspace (default: this directory)")
    cache.add_argument("--json", action="store_true", help="print the figures as JSON")
    cache.set_defaults(handler=cmd_cache)
    return parser


def _baseline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", default=".", metavar="DIR", help="the workspace whose models.yaml and keys apply (default: .)")
    parser.add_argument("--public-key", metavar="PEM", help="the bundles' signer (default: the workspace's signing key)")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["build"]:
        # doit's options and task names pass through untouched (argparse would take `-n 2` as its own).
        try:
            return cmd_build(argv[1:])
        except Exception as error:  # a bug outside any step (in the graph, or in doit)
            traceback.print_exc()
            return exit_code_for(error)
    args = build_parser().parse_args(argv)
    try:
        code = args.handler(args)
        sys.stdout.flush()  # a reader that has gone shows here, where it can be handled, not at exit
        return code
    except BrokenPipeError:
        # The reader stopped reading (`modelmake inspect ... | head`): what it took is all it wanted. Point stdout
        # at /dev/null so that flushing it at exit raises nothing either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ModelmakeError as error:
        print(f"modelmake {args.command}: {error}", file=sys.stderr)
        return exit_code_for(error)
    except Exception as error:  # a bug: keep the traceback, but exit with the code reserved for bugs
        traceback.print_exc()
        return exit_code_for(error)


if __name__ == "__main__":
    sys.exit(main())

"""The errors modelmake reports to its users, and the one table of the exit codes they map to.

A user error (bad spec, tampered bundle, wrong key) is a ``ModelmakeError``
subclass with a message that says what is wrong and how to fix it; anything
else is a bug and keeps its traceback.  Each class carries its exit code and
what it means; ``exit_codes()`` lists every code a modelmake process exits
with, and the CLI's help is generated from it.

doit's own codes are 0 (success), 1 (a task failed), 2 (an error while
running a task) and 3 (a bad command line or dodo.py).  The build's codes
(20-22) stay clear of them, so that ``modelmake build`` can tell a script
exactly what went wrong; plain ``doit`` still exits 1 when a task fails.
"""
from __future__ import annotations

import errno

SUCCESS = 0
USAGE = 2  # argparse's code for a wrong command line
BUG = 70  # EX_SOFTWARE: anything that is not a ModelmakeError
MAX_REPORTED_PROBLEMS = 50  # a spec error lists this many problems, then how many more there are


class ModelmakeError(Exception):
    """Base class of every error meant for a user rather than a developer."""

    exit_code = 1
    meaning = "another problem the message explains"


class KeyMaterialError(ModelmakeError):
    """A key is missing, unreadable or of the wrong kind, or keygen would replace existing keys."""

    exit_code = 5
    meaning = "a key cannot be used (missing, unreadable, of the wrong kind), or keygen would replace existing keys"


class VerificationError(ModelmakeError):
    """A bundle, archive or signature failed verification."""

    exit_code = 6
    meaning = "not a verifiable bundle: missing path, no or bad manifest.json, a link or special file, an unsafe path"


class DecryptionError(ModelmakeError):
    """Ciphertext failed authentication: wrong key, tampered, truncated or reordered."""

    exit_code = 7
    meaning = "decryption failed: wrong key, or an encrypted file was changed; or its plaintext does not match the manifest"


class FormatVersionError(ModelmakeError):
    """A bundle declares a format version this modelmake does not understand."""

    exit_code = 8
    meaning = "unknown format_version"


class TamperedFileError(VerificationError):
    """A signed file's content differs from its signed digest."""

    exit_code = 9
    meaning = "a signed file was changed"


class FileSetError(VerificationError):
    """Files are missing from, or were added to, a signed bundle."""

    exit_code = 10
    meaning = "a signed file is missing, or a file is present that the signature does not cover"


class WrongKeyError(VerificationError):
    """The signature was not made with the given public key."""

    exit_code = 11
    meaning = "wrong key: signed with another key, or the signature value was altered"


class UnsafeArchiveError(VerificationError):
    """An archive was refused before anything was extracted: a hostile or corrupt entry, or a limit exceeded."""

    exit_code = 12
    meaning = "unsafe or corrupt archive: refused before anything was extracted"


class SignatureFormatError(VerificationError):
    """model.sig is missing or is not a well-formed OMS signature."""

    exit_code = 13
    meaning = "model.sig is missing or is not a well-formed OMS signature"


class PublishError(ModelmakeError):
    """A bundle cannot be published: a channel names a version the repository lacks, or a release would change."""

    exit_code = 14
    meaning = "the bundle cannot be published: a channel names a missing version, or a release would change"


class SpecError(ModelmakeError):
    """models.yaml or a target profile is invalid; carries every problem found."""

    exit_code = 20
    meaning = "build: models.yaml or a target profile is invalid, or an env: key's variable is unset (nothing was built)"

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        shown = [f"  {p}" for p in self.problems[:MAX_REPORTED_PROBLEMS]]
        if len(self.problems) > MAX_REPORTED_PROBLEMS:
            shown.append(f"  ... and {len(self.problems) - MAX_REPORTED_PROBLEMS} more: fix these first")
        super().__init__(f"{len(self.problems)} {noun} in the spec:\n" + "\n".join(shown))

    def __reduce__(self):
        # Rebuilt from its problems, not its message, when it comes back from the step worker.
        return type(self), (self.problems,)


class StepError(ModelmakeError):
    """A build step could not do its work on the given input (corrupt model, recipe raised, bad data)."""

    exit_code = 21
    meaning = "build: a step failed on its input (the message names the task and its log)"


class BudgetExceeded(ModelmakeError):
    """An artifact was built but breaks a budget declared in the spec."""

    exit_code = 22
    meaning = "build: an artifact breaks a budget of the spec"


class BuildInProgressError(ModelmakeError):
    """Another build holds the workspace (buildlock.py)."""

    exit_code = 23
    meaning = "build: another build is running in this workspace (the message names its process)"


class OutputError(ModelmakeError):
    """The build could not write where it writes: the disk is full, or build/ is read-only or not ours."""

    exit_code = 24
    meaning = "build: an output could not be written (disk full, read-only or not permitted); earlier outputs are intact"


class ClusterUnreachable(ModelmakeError):
    """The Dask scheduler (MODELMAKE_DASK, --dask) does not answer or its workers cannot see the store, or a LocalCluster did not start."""

    exit_code = 25
    meaning = (
        "build: the Dask scheduler (MODELMAKE_DASK or --dask) could not be reached or started, or its workers cannot see the store; "
        "nothing was built"
    )


class AlertRaised(ModelmakeError):
    """`modelmake monitor` or `rollout advance` found an alert: drift, a budget, a rate or a worse arm or version."""

    exit_code = 30
    meaning = "monitor: an alert fired (drift, a latency or frame-rate budget, a failure or fallback rate, a worse arm or version)"


class RolloutLogError(ModelmakeError):
    """The repository's decision log was rewritten, or does not match its index."""

    exit_code = 31
    meaning = "rollout: the repository's decision log was rewritten or does not match its index; nothing was published"


# The errno values of a file system that refuses writes, which the build reports as OutputError.
WRITE_REFUSED = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def output_error(error: OSError) -> OutputError:
    """The message for a refused write: what, where, and what to do."""
    where = f" {error.filename}" if error.filename else ""
    then = "then run again; earlier outputs are intact"
    if error.errno in (errno.EACCES, errno.EPERM):
        return OutputError(f"not permitted to use{where} ({error.strerror}): fix its permissions, {then}")
    return OutputError(f"cannot write{where} ({error.strerror}): free space or make it writable, {then}")


def exit_codes() -> list[tuple[int, str]]:
    """Every exit code of a modelmake process and what it means, in ascending order."""
    table = {SUCCESS: "success", USAGE: "the command line is wrong (usage), or doit could not load dodo.py"}
    for kind in _with_codes(ModelmakeError):
        table[kind.exit_code] = kind.meaning
    table[BUG] = "a bug in modelmake or in a step (the traceback is printed)"
    return sorted(table.items())


def _with_codes(kind: type[ModelmakeError]) -> list[type[ModelmakeError]]:
    """``kind`` and every subclass of it: each declares its own code."""
    return [kind] + [sub for direct in kind.__subclasses__() for sub in _with_codes(direct)]


def error_class_for(exit_code: int) -> type[ModelmakeError]:
    """The error class of a code, to raise again a failure recorded by an earlier step with its own code."""
    return next((kind for kind in _with_codes(ModelmakeError) if kind.exit_code == exit_code), StepError)


def exit_code_for(error: BaseException) -> int:
    """Map an exception to the process exit code; bugs get 70 (EX_SOFTWARE)."""
    if isinstance(error, ModelmakeError):
        return error.exit_code
    return BUG

"""The errors modelmake reports to its users, and the exit code each maps to.

A user error (bad spec, tampered bundle, wrong key) is a ``ModelmakeError``
subclass with a message that says what is wrong and how to fix it; anything
else is a bug and keeps its traceback.  ``exit_code_for`` is the one place
where errors become process exit codes.
"""
from __future__ import annotations


class ModelmakeError(Exception):
    """Base class of every error meant for a user rather than a developer."""

    exit_code = 1


class SpecError(ModelmakeError):
    """models.yaml or a target profile is invalid; carries every problem found."""

    exit_code = 2

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"{len(self.problems)} {noun} in the spec:\n" + "\n".join(f"  {p}" for p in self.problems))


class StepError(ModelmakeError):
    """A build step could not do its work on the given input (corrupt model, recipe raised, bad data)."""

    exit_code = 3


class BudgetExceeded(ModelmakeError):
    """An artifact was built but breaks a budget declared in the spec."""

    exit_code = 4


class KeyMaterialError(ModelmakeError):
    """A key is missing, unreadable or of the wrong kind."""

    exit_code = 5


class VerificationError(ModelmakeError):
    """A bundle, archive or signature failed verification."""

    exit_code = 6


class TamperedFileError(VerificationError):
    """A signed file's content differs from its signed digest."""

    exit_code = 9


class FileSetError(VerificationError):
    """Files are missing from, or were added to, a signed bundle."""

    exit_code = 10


class WrongKeyError(VerificationError):
    """The signature was not made with the given public key."""

    exit_code = 11


class UnsafeArchiveError(VerificationError):
    """An archive was refused before anything was extracted: a hostile or corrupt entry, or a limit exceeded."""

    exit_code = 12


class SignatureFormatError(VerificationError):
    """model.sig is missing or is not a well-formed OMS signature."""

    exit_code = 13


class DecryptionError(ModelmakeError):
    """Ciphertext failed authentication: wrong key, tampered, truncated or reordered."""

    exit_code = 7


class FormatVersionError(ModelmakeError):
    """A bundle declares a format version this modelmake does not understand."""

    exit_code = 8


class PublishError(ModelmakeError):
    """A bundle cannot be published: a channel names a version the repository lacks, or a release would change."""

    exit_code = 14


def exit_code_for(error: BaseException) -> int:
    """Map an exception to the process exit code; bugs get 70 (EX_SOFTWARE)."""
    if isinstance(error, ModelmakeError):
        return error.exit_code
    return 70

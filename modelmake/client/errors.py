"""The errors an update can end with (OTA.md, "The client: order of checks").

Every one of them leaves the installed model exactly as it was: the client checks,
downloads and decrypts into temporary files and makes a new model current only as its
very last step, so an app that catches ``UpdateError`` keeps using what it has.

``UpdateError`` is deliberately not a ``modelmake.errors.ModelmakeError``: those are the
build tool's errors and carry process exit codes, while these are raised inside an app
(or a Kotlin or Swift port of this client), where a separate, self-contained hierarchy is
what a port reproduces and what an app catches.
"""
from __future__ import annotations

UNCHANGED = "The installed model, if any, is unchanged and still current."


class UpdateError(Exception):
    """An update failed. ``detail`` says what happened; the message adds what to do."""

    advice = ""

    def __init__(self, detail: str):
        self.detail = detail
        super().__init__(f"{detail}. {UNCHANGED}" + (f" {self.advice}" if self.advice else ""))


class IndexFormatError(UpdateError):
    """index.json is not a DSSE envelope of an index document this client reads (steps 2 and 5)."""

    advice = ("Check the client's base URL and repository name, and that the repository was published "
              "by a modelmake that writes index format 1.")


class UnknownKeyError(UpdateError):
    """The index is signed by a key the app does not trust (step 3)."""

    advice = ("Ship the publisher's public key (the PEM of bundle.signing.key) with the app, "
              "or publish with a key the app already trusts.")


class IndexSignatureError(UpdateError):
    """The signature does not verify over the index (step 4)."""

    advice = "The index was changed after it was signed: republish it, and check what the server or CDN serves."


class IndexExpiredError(UpdateError):
    """The index's ``expires`` time has passed by the device's clock (step 6)."""

    advice = ("Publish again to re-sign the index (a daily publish keeps it fresh); "
              "if the repository is fresh, the device's clock is wrong.")


class RollbackError(UpdateError):
    """The index is older than one this client already trusted (step 7)."""

    advice = ("A CDN serving a stale index.json causes this, as does a replay of an old index: "
              "retry later, and purge index.json from the CDN cache if it persists.")


class TrustStateError(UpdateError):
    """The persisted trust state cannot be read, so rollback protection cannot be applied."""

    advice = ("Something other than this client changed the file; delete it to trust the repository's "
              "current index again.")


class OversizedResponseError(UpdateError):
    """The server sent (or announced) more bytes than the index or the limit allows."""

    advice = "Check the repository's files and any proxy between the app and the server."


class DownloadError(UpdateError):
    """The file could not be fetched: network failure after every retry, or an HTTP error."""

    advice = "Check the network and the base URL; the next update resumes an interrupted download."


class BlobMismatchError(UpdateError):
    """A downloaded file's SHA-256 differs from the one the signed index names."""

    advice = ("The server holds a file other than the one the signed index names: publish again, "
              "or purge the file from the CDN cache.")


class DecryptionError(UpdateError):
    """The blob did not decrypt with the app's data key, or the plaintext is not the one the index names."""

    advice = "Check that the app's data key is the bundle's (bundle.encryption.key in models.yaml)."


class NoCompatibleVariantError(UpdateError):
    """The offered release has no variant this device and app can run (OTA.md, "Choosing a variant")."""

    advice = "Add a target that matches this device to the bundle, or let the app run another model format."

"""provenance.json: an in-toto Statement v1 with a SLSA v1 provenance predicate.

Nothing in it depends on the machine or the time of the build (no host
names, no invocation ids): it records what went in, so it is reproducible.
"""
from __future__ import annotations

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:modelmake:bundle-build:v1"
DEFAULT_BUILDER_ID = "urn:modelmake:builder:local"


def provenance_statement(
    *,
    subjects: dict[str, str],
    dependencies: dict[str, str],
    external_parameters: dict,
    tools: dict[str, str],
    builder_id: str,
    started_on: str,
) -> dict:
    """``subjects`` and ``dependencies`` map a name to its SHA-256 hex digest."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": digest}} for name, digest in sorted(subjects.items())],
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external_parameters,
                "internalParameters": {"tools": dict(sorted(tools.items()))},
                "resolvedDependencies": [
                    {"name": name, "uri": f"file:{name}", "digest": {"sha256": digest}} for name, digest in sorted(dependencies.items())
                ],
            },
            "runDetails": {"builder": {"id": builder_id}, "metadata": {"startedOn": started_on, "finishedOn": started_on}},
        },
    }

"""OTA.md's Python example runs as written against a repository `doit publish` wrote, served on loopback."""
from __future__ import annotations

import re
import subprocess
import sys

from modelmake.bundle import keys

from tests.support.ota_server import RepositoryServer
from tests.support.workspaces import BUNDLE, REPO, subprocess_env

SIGNING_LINE = '  signing: {key: "file:keys/signing.pem"}\n'


def ota_example() -> str:
    """The one Python block of OTA.md."""
    [block] = re.findall(r"^```python\n(.*?)^```$", (REPO / "OTA.md").read_text(encoding="utf-8"), re.S | re.M)
    return block


def pointed_at(code: str, url: str, repository: str) -> str:
    """The example with its two settings naming the repository under test."""
    code, urls = re.subn(r"^REPOSITORY_URL = .*$", f"REPOSITORY_URL = {url!r}", code, flags=re.M)
    code, names = re.subn(r"^REPOSITORY = .*$", f"REPOSITORY = {repository!r}", code, flags=re.M)
    assert (urls, names) == (1, 1), "OTA.md's example no longer starts with REPOSITORY_URL and REPOSITORY"
    return code


def test_the_ota_example_installs_the_published_encrypted_model_and_loads_it(built_workspace, tmp_path):
    keys.write_data_key(built_workspace.root / "keys" / "data.key", keys.generate_data_key())
    built_workspace.edit_spec(SIGNING_LINE, SIGNING_LINE + '  encryption: {key: "file:keys/data.key"}\n')
    built_workspace.doit("publish")

    app = tmp_path / "app"
    (app / "resources").mkdir(parents=True)
    signing_key = keys.load_private_key((built_workspace.root / "keys" / "signing.pem").read_bytes())
    keys.write_public_key(app / "resources" / "signing.pub.pem", signing_key)
    (app / "resources" / "data.key").write_bytes((built_workspace.root / "keys" / "data.key").read_bytes())

    with RepositoryServer(built_workspace.build / "repository") as server:
        code = pointed_at(ota_example(), server.url, BUNDLE)
        runs = [
            subprocess.run([sys.executable, "-c", code], cwd=app, env=subprocess_env(), capture_output=True, text=True, timeout=300)
            for _ in range(2)
        ]
    for run in runs:
        assert run.returncode == 0, run.stderr
    first, second = (run.stdout.splitlines() for run in runs)
    assert first[0].startswith("installed: installed digits."), runs[0].stdout
    assert re.fullmatch(r"running digits 0\.3\.0 \(digits\.\w+\.tflite@[\w-]+\)", first[1]), runs[0].stdout
    assert second[0].startswith("current: "), runs[1].stdout
    assert second[1] == first[1]
    assert list((app / "storage" / "trust").iterdir()), "the trust state is not where the example keeps it"

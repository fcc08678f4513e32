"""What the graph keeps on disk: doit's state file and the graph cache appear only once a build writes them."""
from __future__ import annotations

from doit.dependency import JSONCodec

from modelmake import layout, taskcache
from modelmake.doit_backend import LazySqliteDB
from modelmake.graph import DevelopmentKeysUnchanged


def test_the_state_file_is_created_on_the_first_write_only(tmp_path):
    path = tmp_path / "build" / ".doit.db"
    db = LazySqliteDB(str(path), JSONCodec())
    assert not db.in_("convert:x")
    assert db.get("convert:x", "deps") is None
    db.remove("convert:x")
    db.remove_all()
    db.dump()
    assert not (tmp_path / "build").exists()

    db = LazySqliteDB(str(path), JSONCodec())
    db.set("convert:x", "deps", {"a": 1})
    db.dump()
    assert path.is_file()
    again = LazySqliteDB(str(path), JSONCodec())
    assert again.in_("convert:x") and again.get("convert:x", "deps") == {"a": 1}
    again.remove("convert:x")
    again.dump()
    assert not LazySqliteDB(str(path), JSONCodec()).in_("convert:x")


def test_the_graph_cache_is_stored_only_into_an_existing_build_folder(tmp_path):
    taskcache.store(tmp_path, [{"name": "x"}], [], [])
    assert list(tmp_path.iterdir()) == []
    (tmp_path / layout.BUILD).mkdir()
    taskcache.store(tmp_path, [{"name": "x"}], [], [])
    assert taskcache.load(tmp_path) == [{"name": "x"}]


def test_the_development_key_check_reads_the_keys_and_follows_a_new_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check = DevelopmentKeysUnchanged((layout.DEVELOPMENT_SIGNING_KEY,))
    assert check(None, {}) is False
    assert check.identify() == {layout.DEVELOPMENT_SIGNING_KEY: None}
    assert not (tmp_path / layout.DEVELOPMENT_KEYS).exists()
    key = tmp_path / layout.DEVELOPMENT_SIGNING_KEY
    key.parent.mkdir(parents=True)
    key.write_bytes(b"first key")
    saved = {"_development_keys": check.identify()}
    assert check(None, saved) is True
    assert "first key" not in repr(saved)
    key.write_bytes(b"second key")
    assert check(None, saved) is False
    key.unlink()
    assert check(None, saved) is False


def test_a_job_hashes_as_its_json_form_without_the_fields_that_only_say_where_to_look():
    import dataclasses
    import json

    from modelmake.contracts import KeyReferences, PackageJob, SpecDigest, config_hash

    from tests.unit.test_stale_outputs import bundle_inputs

    keys = KeyReferences(None, False, None)
    job = PackageJob(bundle_inputs(), "build/bundles/b/1.0.0", {"all": "b.zip"}, SpecDigest("models.yaml", "ab"), keys)
    full = json.loads(json.dumps(dataclasses.asdict(job)))
    assert config_hash(job) == {name: value for name, value in full.items() if name != "repository"}
    assert config_hash(dataclasses.replace(job, repository="elsewhere")) == config_hash(job)
    assert config_hash(dataclasses.replace(job, spec=SpecDigest("models.yaml", "cd"))) != config_hash(job)

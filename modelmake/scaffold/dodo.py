"""doit entry point: `modelmake build` (or plain `doit`) builds models.yaml in this directory into a signed bundle.

`modelmake build` runs doit and exits with modelmake's codes (`modelmake --help`);
`doit list` shows the tasks, `doit info TASK` why one would run, and neither
creates anything; `doit clean` and `doit forget` work as usual.
"""
from pathlib import Path

from modelmake.graph import doit_config, workspace_tasks

WORKSPACE = Path(__file__).resolve().parent
DOIT_CONFIG = doit_config(WORKSPACE)


def task_modelmake():
    """modelmake build graph"""
    yield from workspace_tasks(WORKSPACE)

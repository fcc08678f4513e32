"""The `modelmake` command: workspace scaffolding and bundle tools. Builds themselves run through `doit`."""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from .errors import ModelmakeError, exit_code_for

SCAFFOLD = Path(__file__).parent / "scaffold"
SCHEMA_DIR = Path(__file__).parent / "schema"


def cmd_init(args) -> int:
    target = Path(args.directory)
    if target.exists() and any(target.iterdir()) and not args.force:
        raise ModelmakeError(f"{target} is not empty: choose a new directory, or pass --force to add the starter files to it")
    for source in sorted(SCAFFOLD.rglob("*")):
        if source.is_dir() or "__pycache__" in source.parts:
            continue
        destination = target / source.relative_to(SCAFFOLD)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
    spec = target / "models.yaml"
    modeline = f"# yaml-language-server: $schema={(SCHEMA_DIR / 'models.schema.json').as_posix()}\n"
    spec.write_text(modeline + spec.read_text(encoding="utf-8").split("\n", 1)[1], encoding="utf-8")
    (target / ".gitignore").write_text("/build/\n/keys/\n*.key\n*.pem\n", encoding="utf-8")
    print(f"created a workspace in {target}: cd {target} && doit")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelmake", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="scaffold a workspace (dodo.py, models.yaml, recipes/) that builds as it stands")
    init.add_argument("directory")
    init.add_argument("--force", action="store_true", help="write into a non-empty directory")
    init.set_defaults(handler=cmd_init)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ModelmakeError as error:
        print(f"modelmake {args.command}: {error}", file=sys.stderr)
        return exit_code_for(error)


if __name__ == "__main__":
    sys.exit(main())

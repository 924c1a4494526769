"""vbdecl schema: print the JSON Schema of the manifest (schema/vbdecl.schema.json)."""

from __future__ import annotations

import argparse
import json

HELP = "print the JSON Schema of a manifest document (for editors and CI)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Editors that speak the YAML language server pick it up from a first line such as "
                     "'# yaml-language-server: $schema=../schema/vbdecl.schema.json'. Exit code 0.")


def render() -> str:
    from vbdecl.model.manifest import json_schema

    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


def run(args: argparse.Namespace) -> int:
    print(render(), end="")
    return 0

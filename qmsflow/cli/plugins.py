"""Commands that live outside qmsflow/: modules named in the ``qmsflow.cli`` entry-point group.

qmsflow/ never imports flows, tasks or deployments; ``qms deploy`` needs the deployment specs, so
deployments/cli.py adds it to the ``qms`` app when this module loads it (pyproject.toml). Loading
one imports Prefect and every flow (~3 s of CPU), so a plugin is loaded only when the command line
names it, or names no command at all (``qms``, ``qms --help`` list every command).
"""

from __future__ import annotations

from importlib.metadata import entry_points


def load(argv: list[str]) -> list[str]:
    words = [a for a in argv if not a.startswith("-")]
    loaded = []
    for entry in entry_points(group="qmsflow.cli"):
        if entry.name in words or not words:
            entry.load()
            loaded.append(entry.name)
    return loaded

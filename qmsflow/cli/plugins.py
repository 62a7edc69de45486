"""Commands that live outside qmsflow/: modules named in the ``qmsflow.cli`` entry-point group.

qmsflow/ never imports flows, tasks or deployments; ``qms deploy`` needs the deployment specs, so
deployments/cli.py adds it to the ``qms`` app when this module loads the group (pyproject.toml).
"""

from __future__ import annotations

from importlib.metadata import entry_points


def load() -> list[str]:
    loaded = []
    for entry in entry_points(group="qmsflow.cli"):
        entry.load()
        loaded.append(entry.name)
    return loaded


load()

"""The ``denoise`` console script: signals are handled before the heavy imports of ``cli.main`` begin."""

from __future__ import annotations

from .signals import quiet_until_started


def main() -> None:
    """Run ``cli.main.main``, a Ctrl-C during its imports ending as quietly as one during a command."""
    quiet_until_started()
    from .main import main as run_command

    run_command()

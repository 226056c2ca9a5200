"""The ``denoise`` console script: signals are handled before the heavy imports of ``denoise.cli.main`` begin, and until
the process has ended (``denoise.cli.signals.exit_now``)."""

from __future__ import annotations

from .signals import exit_now, quiet_until_started


def main() -> None:
    """Run ``denoise.cli.main.main``, a Ctrl-C during its imports, or as it exits, ending as quietly as one during a
    command."""
    quiet_until_started()
    from .main import main as run_command

    exit_now(run_command)

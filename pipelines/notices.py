"""Dagster's API-stability notices, silenced where the definitions load.

``BetaWarning``, ``PreviewWarning`` and ``SupersessionWarning`` tell the authors of a code
location that an API may change (``backfill_policy`` is beta); they are not for the people who
run it, and every process that loads the definitions (`make sync`, the code server, each run
worker) printed them again. A breaking change would show up in the test suite on upgrade.
"""

from __future__ import annotations

import warnings


def silence_dagster_notices() -> None:
    """Ignore Dagster's beta/preview/supersession warnings in this process."""
    try:
        from dagster_shared.utils.warnings import (
            BetaWarning,
            PreviewWarning,
            SupersessionWarning,
        )
    except ImportError:  # pragma: no cover - older Dagster keeps them elsewhere
        return
    for category in (BetaWarning, PreviewWarning, SupersessionWarning):
        warnings.filterwarnings("ignore", category=category)

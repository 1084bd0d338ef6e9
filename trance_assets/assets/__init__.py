"""Assets, one module per stage."""

import warnings

import dagster as dg

# Data versions from content hashes are deliberate (they make the UI's staleness markers true).
warnings.filterwarnings("ignore", category=dg.BetaWarning, module=r"trance_assets\.")
# Partitioned asset checks (per-track melody checks) are deliberate too.
warnings.filterwarnings("ignore", category=dg.PreviewWarning, module=r"trance_assets\.")

"""Where the Dagster instance lives: DAGSTER_HOME=<project>/storage/instance, with dagster.yaml linked in."""

from __future__ import annotations

import os
from pathlib import Path


def prepare_dagster_home(project_dir: Path, home: Path | None = None) -> Path:
    """Create the instance folder and link the project's dagster.yaml into it; return the folder.

    A symbolic link keeps one dagster.yaml (the project's) in force; where links are unavailable
    the file is copied (and refreshed whenever the project's copy is newer).
    """
    project_dir = Path(project_dir).resolve()
    home = Path(home or os.environ.get("DAGSTER_HOME") or project_dir / "storage" / "instance").resolve()
    home.mkdir(parents=True, exist_ok=True)
    src = project_dir / "dagster.yaml"
    dst = home / "dagster.yaml"
    if src.is_file() and src.resolve() != dst.resolve():
        if dst.is_symlink() or not dst.exists():
            if dst.is_symlink() and dst.resolve() == src:
                return home
            dst.unlink(missing_ok=True)
            try:
                dst.symlink_to(os.path.relpath(src, home))
            except OSError:
                dst.write_bytes(src.read_bytes())
        elif src.stat().st_mtime > dst.stat().st_mtime:
            dst.write_bytes(src.read_bytes())
    return home

"""The `trance-assets` console script."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _cmd_demo_data(args) -> int:
    from .demo import inbox_has_audio, write_demo_data
    from .profiles import get_profile
    from .resources import SettingsResource

    settings = SettingsResource.from_env()
    storage = args.storage or settings.storage_url
    inbox = Path(args.inbox) if args.inbox else (Path(settings.inbox_path) if not args.storage else Path(storage) / "inbox" / "reference_audio")
    if inbox_has_audio(inbox) and not args.force:
        print(f"{inbox} already holds audio; nothing written (use --force to write the demo tracks anyway)")
        return 0
    profile = get_profile(settings.profile)
    print(f"writing demo data under {storage}")
    summary = write_demo_data(storage, tracks=profile.demo_tracks, tier1_extra=profile.demo_tier1_extra, inbox=inbox)
    print(f"{len(summary['tracks'])} tracks in {summary['inbox']}")
    print(f"ground truth in {summary['ground_truth']}; {summary['tier1_files']} demo Tier 1 files in {summary['tier1']}")
    return 0


def _cmd_extract(args) -> int:
    """The Tier 2 chain on audio files, without the orchestrator: <stem>.mid + <stem>.json each."""
    import json

    from tqdm import tqdm

    from .audio.extraction import extract_file
    from .audio.io import AudioValidationError
    from .audio.separation import SeparatorConfig, SeparatorUnavailable
    from .formats.dataset import export_melody
    from .storage import as_upath

    out = as_upath(args.out)
    config = SeparatorConfig.from_env(**({"method": args.separator} if args.separator else {}))
    rows = []
    failures = 0
    for path in tqdm(args.audio, desc="extracting", unit="file", file=sys.stderr, disable=len(args.audio) < 2 and not args.progress):
        stem = Path(path).stem
        try:
            r = extract_file(path, separator_config=config)
        except (AudioValidationError, SeparatorUnavailable, OSError) as err:
            failures += 1
            rows.append({"file": Path(path).name, "notes": "-", "key": "-", "bpm": "-", "compliance": "-", "result": f"error: {err}"})
            continue
        ex = r.extraction
        export_melody(out, stem, ex.melody, r.sidecar)
        q = ex.quality.as_dict()
        comp = q.get("scale_compliance")
        rows.append(
            {
                "file": Path(path).name,
                "notes": len(ex.melody.notes),
                "key": ex.melody.key,
                "bpm": f"{ex.melody.bpm:g} ({ex.tempo.source})",
                "compliance": f"{comp:.2f}" if comp is not None else "n/a",
                "result": "accepted" if ex.accepted else f"rejected: {ex.rejection}",
            }
        )
        if args.json:
            print(json.dumps({"file": str(path), **r.sidecar, "timings": r.timings}, default=str))
    cols = ["file", "notes", "key", "bpm", "compliance", "result"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols), file=sys.stderr)
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols), file=sys.stderr)
    accepted = sum(1 for r in rows if r["result"] == "accepted")
    print(f"{accepted} accepted, {len(rows) - accepted - failures} rejected, {failures} failed; written to {out}", file=sys.stderr)
    return 1 if failures else 0


def _cmd_demo(args) -> int:
    from .headless import run_demo
    from .instance_home import prepare_dagster_home

    os.environ["DAGSTER_HOME"] = str(prepare_dagster_home(Path(args.project_dir)))
    return run_demo()


def _cmd_ui(args) -> int:
    """Start dagster-webserver and dagster-daemon on the project's instance; stop both on Ctrl-C."""
    from .instance_home import prepare_dagster_home

    project = Path(args.project_dir).resolve()
    env = dict(os.environ, DAGSTER_HOME=str(prepare_dagster_home(project)))
    bindir = Path(sys.executable).parent
    workspace = str(project / "workspace.yaml")
    daemon = subprocess.Popen([str(bindir / "dagster-daemon"), "run", "-w", workspace], cwd=project, env=env)
    web = subprocess.Popen(
        [str(bindir / "dagster-webserver"), "-w", workspace, "-h", args.host, "-p", str(args.port)], cwd=project, env=env
    )
    print(f"Dagster UI: http://{args.host}:{args.port}  (instance: {env['DAGSTER_HOME']}; Ctrl-C stops)", flush=True)
    procs = [daemon, web]

    def stop(*_):
        for p in procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.time() + 15
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()

    signal.signal(signal.SIGTERM, lambda *_: (stop(), sys.exit(0)))
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop()
    # Stopped by us (0 or SIGTERM) is success; anything else is the first real exit code.
    failed = [p.returncode for p in procs if p.returncode not in (0, None, -signal.SIGTERM)]
    return abs(failed[0]) if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trance-assets", description="trance_assets: the trance-melody corpus pipeline")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo-data", help="write the demo reference tracks, ground truth and demo Tier 1 files")
    p.add_argument("--storage", help="storage root (default: $TRANCE_STORAGE or ./storage)")
    p.add_argument("--inbox", help="inbox folder (default: <storage>/inbox/reference_audio)")
    p.add_argument("--force", action="store_true", help="write even when the inbox already holds audio")
    p.set_defaults(func=_cmd_demo_data)

    p = sub.add_parser("extract", help="Tier 2 extraction on audio files: <stem>.mid + <stem>.json per input")
    p.add_argument("audio", nargs="+", help="audio files (wav, flac, mp3, ogg, aiff)")
    p.add_argument("--out", required=True, help="output folder (local path or fsspec URL)")
    p.add_argument("--separator", choices=("auto", "demucs", "dsp"), help="default: auto (Demucs when its weights load, else DSP)")
    p.add_argument("--json", action="store_true", help="also print each file's sidecar as one JSON line on stdout")
    p.add_argument("--progress", action="store_true", help="show the progress bar even for one file")
    p.set_defaults(func=_cmd_extract)

    p = sub.add_parser("demo", help="materialize everything headless (what `make demo` runs)")
    p.add_argument("--project-dir", default=".", help="folder holding dagster.yaml and workspace.yaml")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("ui", help="start the Dagster UI and daemon (what `make run` runs)")
    p.add_argument("--project-dir", default=".")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=_cmd_ui)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

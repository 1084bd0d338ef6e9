"""The `trance-assets` console script."""

from __future__ import annotations

import argparse
import json
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


def _cmd_generate(args) -> int:
    """One melody from a registered generator backend, written as MIDI."""
    from .generation.base import get_generator
    from .storage import as_upath, atomic_write_bytes

    options = {}
    for item in args.option or []:
        name, _, value = item.partition("=")
        try:
            options[name] = json.loads(value)
        except ValueError:
            options[name] = value
    try:
        gen = get_generator(args.backend, **options)
        chords = args.chords.split() if args.chords else None
        melody = gen.generate(args.key, args.bpm, chords or _default_chords(args.key), args.bars, args.seed)
    except (KeyError, ValueError) as err:
        print(f"trance-assets generate: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    target = atomic_write_bytes(as_upath(args.out), melody.to_midi_bytes())
    info = gen.info.to_dict()
    print(json.dumps({"out": str(target), "generator": info, "key": melody.key, "bpm": melody.bpm, "bars": args.bars, "seed": args.seed, "notes": len(melody.notes), "chords": [c.symbol for c in melody.chords],
                      **({"winner": melody.attributes["winner"], "valid": melody.attributes.get("valid")} if "winner" in melody.attributes else {})}))
    return 0


def _default_chords(key: str) -> list[str]:
    from .music.theory import default_progression, parse_key

    return list(default_progression(parse_key(key)))


def _midi_inputs(paths: list[str]) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.suffix.lower() in (".mid", ".midi") and q.is_file()))
        else:
            out.append(p)
    return out


def _cmd_score(args) -> int:
    """Metrics and composite of MIDI files as JSON lines (stdout), a summary table on stderr."""
    from .evaluation.metrics import score_melody
    from .music.melody import ChordSpan, MidiError, melody_from_midi
    from .music.theory import parse_chord, parse_key

    reference_pc = None
    if args.reference:
        ref = json.loads(Path(args.reference).read_text())
        reference_pc = ref.get("pitch_class_histogram")
        if reference_pc is None:
            print(f"trance-assets score: {args.reference} has no 'pitch_class_histogram' (not a reference_stats.json?)", file=sys.stderr)
            return 2
    try:
        key = parse_key(args.key).name if args.key else None
        chords = [parse_chord(c).symbol for c in args.chords.split()] if args.chords else None
    except ValueError as err:
        print(f"trance-assets score: {err}", file=sys.stderr)
        return 2
    files = _midi_inputs(args.files)
    if not files:
        print("trance-assets score: no MIDI files found", file=sys.stderr)
        return 2
    rows, failures = [], 0
    for f in files:
        try:
            m = melody_from_midi(f, key=key)
        except (MidiError, OSError) as err:
            failures += 1
            print(json.dumps({"file": str(f), "error": str(err)}))
            rows.append({"file": f.name, "composite": "error"})
            continue
        key_source = "given" if key else ("file" if _has_key_signature(f) else "estimated")
        if chords:
            bars = max(1, int(-(-m.length_beats // 4)))
            m = m.__class__(m.notes, m.bpm, m.key, tuple(ChordSpan(chords[b % len(chords)], 4.0 * b, 4.0) for b in range(bars)), m.bars, m.program, m.name, m.attributes)
        chords_source = "given" if chords else ("file" if m.chords else "inferred")
        scored = score_melody(m, reference_pc=reference_pc)
        print(json.dumps({"file": str(f), "key": m.key, "key_source": key_source, "chords_source": chords_source, **scored}, default=_json_default))
        rows.append({"file": f.name, "key": m.key, **{k: scored.get(k) for k in ("pitch_entropy", "chord_tone_ratio", "self_similarity_8", "kl_to_reference", "composite")}})
    cols = ["file", "key", "pitch_entropy", "chord_tone_ratio", "self_similarity_8", "kl_to_reference", "composite"]

    def cell(v):
        return "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    widths = {c: max(len(c), *(len(cell(r.get(c))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols), file=sys.stderr)
    for r in rows:
        print("  ".join(cell(r.get(c)).ljust(widths[c]) for c in cols), file=sys.stderr)
    return 1 if failures else 0


def _has_key_signature(path: Path) -> bool:
    import mido

    try:
        return any(msg.type == "key_signature" for track in mido.MidiFile(str(path)).tracks for msg in track)
    except Exception:
        return False


def _json_default(v):
    import numpy as np

    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def _cmd_demo(args) -> int:
    from .headless import run_demo
    from .instance_home import prepare_dagster_home

    os.environ["DAGSTER_HOME"] = str(prepare_dagster_home(Path(args.project_dir)))
    return run_demo()


def _cmd_import_magenta(args) -> int:
    from .headless import import_magenta_checkpoint
    from .instance_home import prepare_dagster_home

    project = Path(args.project_dir).resolve()
    os.environ.setdefault("TRANCE_STORAGE", str(project / "storage"))  # before the definitions load
    os.environ["DAGSTER_HOME"] = str(prepare_dagster_home(project))
    return import_magenta_checkpoint(str(Path(args.checkpoint).expanduser().resolve()), args.family, fine_tune=not args.no_fine_tune)


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

    p = sub.add_parser("generate", help="generate one melody with a registered backend and write it as MIDI")
    p.add_argument("--backend", default="rules", help="generator backend (default: rules)")
    p.add_argument("--key", default="Am")
    p.add_argument("--bpm", type=float, default=140.0)
    p.add_argument("--chords", default="", help='chord progression, one symbol per bar, e.g. "Am F C G" (default: the key\'s default progression)')
    p.add_argument("--bars", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--option", action="append", metavar="NAME=VALUE", help="a backend option, e.g. density=0.7 (repeatable)")
    p.add_argument("--out", required=True, help="output .mid (local path or fsspec URL)")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("score", help="evaluation metrics and composite of MIDI files (JSON lines on stdout, a table on stderr)")
    p.add_argument("files", nargs="+", help="MIDI files or folders")
    p.add_argument("--key", help="key of every file (default: the file's key signature, else estimated)")
    p.add_argument("--chords", help='chord progression, one symbol per bar, cycled (default: the file\'s chord markers, else inferred per bar)')
    p.add_argument("--reference", help="reference_stats.json (enables kl_to_reference)")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("demo", help="materialize everything headless (what `make demo` runs)")
    p.add_argument("--project-dir", default=".", help="folder holding dagster.yaml and workspace.yaml")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "import-magenta",
        help="convert a Magenta checkpoint (attention_rnn.mag, or a hierdec-mel_16bar checkpoint prefix) without TensorFlow, "
        "then fine-tune it on the corpus (models/<family>_base -> models/<family>_trance)",
    )
    p.add_argument("checkpoint", help="a Melody RNN .mag bundle, or a MusicVAE V2 checkpoint prefix (<prefix>.index beside it) or its folder")
    p.add_argument("--family", choices=["melody_rnn", "musicvae"], default=None, help="default: detected from the file")
    p.add_argument("--no-fine-tune", action="store_true", help="only convert (models/<family>_base uses it on its next run)")
    p.add_argument("--project-dir", default=".", help="project root (its storage/ and instance)")
    p.set_defaults(func=_cmd_import_magenta)

    p = sub.add_parser("ui", help="start the Dagster UI and daemon (what `make run` runs)")
    p.add_argument("--project-dir", default=".")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=_cmd_ui)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

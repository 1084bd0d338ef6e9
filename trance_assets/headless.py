"""`make demo`: the whole pipeline headless, in-process, against the project's instance.

Demo data → one tick of each sensor (reference tracks, gold MIDI: partitions registered) → every
per-partition job for every partition → every other asset in dependency order (Tier 3 sources, the
corpus, its formats and its card) → a summary. Runs are executed in this process (no daemon, no queue), recorded in
the instance like any other run, so the UI shows them afterwards. Exit code 1 on any failure.
"""

import time
from dataclasses import dataclass, field

import dagster as dg

from .demo import inbox_has_audio, write_demo_data
from .partitions import gold_melodies, reference_tracks

# Progress is printed here; Dagster's own console logger only speaks up for warnings and errors.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class StageResult:
    name: str
    ok: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def _failure_message(result) -> str:
    for ev in result.all_events:
        if ev.is_step_failure:
            data = ev.step_failure_data
            if data.user_failure_data is not None and data.user_failure_data.description:
                return data.user_failure_data.description
            if data.error is not None:
                return data.error.message.strip().splitlines()[-1] if data.error.message else data.error.cls_name
    return "run failed (see the run's logs in the UI)"


def run_demo(log=print) -> int:
    from .definitions import defs, settings
    from .sensors import gold_melodies_sensor, reference_audio_sensor

    t_start = time.perf_counter()
    instance = dg.DagsterInstance.get()
    profile = settings.get_profile()
    log(f"trance_assets demo — profile {profile.name}, storage {settings.storage_url}")
    log(f"instance: {instance.root_directory}")

    inbox = settings.inbox_path
    if inbox_has_audio(inbox):
        log(f"[1/4] inbox {inbox} already has audio: keeping it")
    else:
        log(f"[1/4] writing demo data into {inbox}")
        write_demo_data(settings.storage_url, tracks=profile.demo_tracks, tier1_extra=profile.demo_tier1_extra, inbox=inbox, log=log)

    # The sensor only takes files that have settled (no write for `settle_seconds`).
    time.sleep(profile.settle_seconds)
    log("[2/4] sensor ticks: registering partitions")
    stages: list[StageResult] = []
    partitioned = []
    for sensor, partitions, job_name in (
        (reference_audio_sensor, reference_tracks, "reference_track_job"),
        (gold_melodies_sensor, gold_melodies, "gold_melody_job"),
    ):
        ctx = dg.build_sensor_context(instance=instance, resources={"settings": settings}, definitions=defs)
        tick = sensor(ctx)
        for req in tick.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        keys = sorted(instance.get_dynamic_partitions(partitions.name))
        log(f"      {len(keys)} partition(s) of {partitions.name}")
        partitioned.append((defs.resolve_job_def(job_name), keys))

    total_partitions = sum(len(k) for _, k in partitioned)
    log(f"[3/4] materializing {total_partitions} partition(s)")
    for job, keys in partitioned:
        per_part = StageResult(f"{job.name} ({', '.join(k.to_user_string() for k in job.asset_layer.executable_asset_keys)})")
        for i, pk in enumerate(keys, start=1):
            t0 = time.perf_counter()
            result = job.execute_in_process(instance=instance, partition_key=pk, raise_on_error=False, run_config=QUIET, tags={"trance/launched_by": "make demo"})
            dt = time.perf_counter() - t0
            per_part.seconds += dt
            if result.success:
                per_part.ok += 1
                log(f"      [{i:3d}/{len(keys)}] ok      {pk}  ({dt:.1f} s)")
            else:
                msg = _failure_message(result)
                per_part.failed.append((pk, msg))
                log(f"      [{i:3d}/{len(keys)}] FAILED  {pk}: {msg}")
        stages.append(per_part)

    graph = defs.resolve_asset_graph()
    others = [k for k in graph.toposorted_asset_keys if graph.get(k).partitions_def is None]
    log(f"[4/4] materializing {len(others)} unpartitioned asset(s) in dependency order")
    global_job = defs.resolve_implicit_global_asset_job_def()
    for key in others:
        t0 = time.perf_counter()
        result = global_job.execute_in_process(instance=instance, asset_selection=[key], raise_on_error=False, run_config=QUIET, tags={"trance/launched_by": "make demo"})
        stage = StageResult(key.to_user_string(), seconds=time.perf_counter() - t0)
        if result.success:
            stage.ok = 1
            log(f"      ok      {stage.name}  ({stage.seconds:.1f} s)")
        else:
            stage.failed.append((stage.name, _failure_message(result)))
            log(f"      FAILED  {stage.name}: {stage.failed[-1][1]}")
        stages.append(stage)

    total_failed = sum(len(s.failed) for s in stages)
    log("")
    log("summary")
    log(f"  {'stage':<60} {'ok':>4} {'failed':>6} {'seconds':>8}")
    for s in stages:
        log(f"  {s.name:<60} {s.ok:>4} {len(s.failed):>6} {s.seconds:>8.1f}")
    for s in stages:
        for what, msg in s.failed:
            log(f"  failure: {what}: {msg}")
    log(f"  partitions: {total_partitions}   failures: {total_failed}   wall time: {time.perf_counter() - t_start:.1f} s")
    log(f"  outputs: {settings.path('assets')}  (datasets: {settings.path('dataset')})")
    card = settings.path("dataset", "corpus", "DATASET_CARD.md")
    if card.exists():
        log(f"  dataset card: {card}")
    report = settings.path("evaluation", "benchmark_report.html")
    if report.exists():
        log(f"  benchmark report: {report}")
    log("  open the UI with `make run` to browse runs, metadata and lineage")
    return 1 if total_failed else 0


def import_magenta_checkpoint(path: str, family: str | None = None, fine_tune: bool = True, log=print) -> int:
    """`trance-assets import-magenta`: convert a Magenta checkpoint (no TensorFlow) into
    <storage>/models/imported/<family>/ — which models/<family>_base then uses instead of
    pre-training — and, with `fine_tune`, materialize models/<family>_base and
    models/<family>_trance in the project's instance (the runs show in the UI)."""
    from pathlib import Path

    from .definitions import defs, settings
    from .models.pipeline import convert_magenta, detect_family
    from .storage import local_path

    try:
        family = family or detect_family(path)
        target = local_path(settings.path("models", "imported", family))
        details = convert_magenta(path, target, family, {"family": family, "kind": "imported"})
    except (OSError, ValueError, KeyError) as err:
        log(f"trance-assets import-magenta: cannot import {path!r}: {err}")
        return 2
    log(f"imported {family} from {details['source']} (sha256 {details['source_sha256'][:16]}…): {details['parameters']:,} parameters")
    log(f"  config: {details['config']}")
    log(f"  written to {target} (config.json + model.safetensors); models/{family}_base now uses it instead of pre-training")
    log(f"  (delete {target} to go back to pre-training on Tier 3)")
    if not fine_tune:
        return 0
    instance = dg.DagsterInstance.get()
    job = defs.resolve_implicit_global_asset_job_def()
    for name in (f"{family}_base", f"{family}_trance"):
        key = dg.AssetKey(["models", name])
        t0 = time.perf_counter()
        result = job.execute_in_process(instance=instance, asset_selection=[key], raise_on_error=False, run_config=QUIET,
                                        tags={"trance/launched_by": "trance-assets import-magenta"})
        if not result.success:
            log(f"  FAILED  models/{name}: {_failure_message(result)}")
            return 1
        log(f"  ok      models/{name}  ({time.perf_counter() - t0:.1f} s)")
    log(f"  fine-tuned model: {Path(str(settings.path('models', f'{family}_trance', 'model')))}")
    log("  the criteria are the asset checks of models/" + f"{family}_trance in the UI (`make run`)")
    return 0

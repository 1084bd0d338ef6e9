"""The inbox sensor: a new or changed audio file becomes a partition and a run."""


import json
import time

import dagster as dg

from .assets.ingest import reference_audio
from .constants import SENSOR_INTERVAL_SECONDS
from .gold_inbox import plan_gold, read_manifest
from .inbox import InboxCursor, plan_inbox
from .jobs import gold_melody_job, reference_track_job
from .partitions import gold_melodies, reference_tracks
from .resources import SettingsResource


def latest_content_id(instance: dg.DagsterInstance, partition_key: str) -> str | None:
    """Content id recorded by the latest materialization of reference_audio[partition_key]."""
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=reference_audio.key, asset_partitions=[partition_key]), limit=1
    )
    if not result.records:
        return None
    meta = result.records[0].asset_materialization.metadata
    value = meta.get("content_id")
    return getattr(value, "value", value)


@dg.sensor(
    job=reference_track_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the reference-audio inbox; registers one partition per audio file and runs new or changed ones.",
)
def reference_audio_sensor(context: dg.SensorEvaluationContext, settings: SettingsResource) -> dg.SensorResult:
    profile = settings.get_profile()
    plan = plan_inbox(
        settings.inbox_path,
        InboxCursor.from_json(context.cursor),
        now_ns=time.time_ns(),
        settle_seconds=profile.settle_seconds,
        max_new_per_tick=profile.max_new_files_per_tick,
        known_content=lambda key: latest_content_id(context.instance, key),
    )
    for rel in plan.unusable:
        context.log.warning(f"skipping {rel}: its name is not valid UTF-8; rename the file to process it")
    for rel in plan.waiting:
        context.log.info(f"waiting for {rel} to finish writing")
    if plan.missing:
        context.log.info(f"{len(plan.missing)} registered file(s) no longer in the inbox (partitions and data kept)")
    runs = [
        dg.RunRequest(
            run_key=r.run_key,
            partition_key=r.partition_key,
            tags={"trance/source_file": r.rel, "trance/content_id": r.content_id},
        )
        for r in plan.runs
    ]
    requests = [reference_tracks.build_add_request(plan.new_partitions)] if plan.new_partitions else []
    return dg.SensorResult(run_requests=runs, dynamic_partitions_requests=requests, cursor=plan.cursor.to_json())


@dg.sensor(
    job=gold_melody_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches storage/dataset/tier1/ (gold MIDI + manifest.csv); one partition per MIDI file; "
    "runs a file again when its bytes or its manifest row change.",
)
def gold_melodies_sensor(context: dg.SensorEvaluationContext, settings: SettingsResource) -> dg.SensorResult:
    root = settings.local_dataset_dir("tier1")
    manifest = read_manifest(root)
    for problem in manifest.problems:
        context.log.warning(f"manifest problem: {problem}")
    plan = plan_gold(
        root,
        context.cursor,
        row_hashes={f: e.row_hash for f, e in manifest.entries.items()},
        verified={f: e.verified for f, e in manifest.entries.items()},
        now_ns=time.time_ns(),
        settle_seconds=settings.get_profile().settle_seconds,
        known_partitions=set(context.instance.get_dynamic_partitions(gold_melodies.name)),
    )
    for rel in plan.unverified:
        context.log.info(f"{rel}: no verified manifest entry; it is materialized as unverified and not used in the corpus")
    runs = [dg.RunRequest(run_key=r.run_key, partition_key=r.partition_key, tags={"trance/source_file": r.rel}) for r in plan.runs]
    requests = [gold_melodies.build_add_request(plan.new_partitions)] if plan.new_partitions else []
    return dg.SensorResult(run_requests=runs, dynamic_partitions_requests=requests, cursor=json.dumps(plan.cursor, sort_keys=True))


# Evaluates the assets' automation conditions (today: tier2/review_queue refreshing after the
# per-track runs). Dagster's implicit default sensor starts STOPPED; this one starts RUNNING.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation_condition_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Materializes assets whose automation condition is true (e.g. the review queue after new melodies).",
)

"""Nightly backfills of pending partitions.

Dynamic partitions cannot use `build_schedule_from_partitioned_job`, so each schedule yields one
RunRequest per registered partition that has no materialization of the job's last asset yet (new
files the sensor registered while runs were paused, or partitions whose run failed). The run key
includes the schedule tick's date, so a re-evaluated tick never duplicates a run, and a partition
that is still pending the next night is tried again. At most `max_new_files_per_tick` per night.
"""

import dagster as dg

from .assets.extraction import MELODY
from .assets.gold import GOLD
from .jobs import gold_melody_job, reference_track_job
from .partitions import gold_melodies, reference_tracks
from .resources import SettingsResource

NIGHTLY_CRON = "0 3 * * *"


def pending_partitions(registered: list[str], materialized: set[str], limit: int) -> list[str]:
    """Registered partitions without a materialization, in key order, at most `limit`."""
    return [k for k in sorted(registered) if k not in materialized][:limit]


def _nightly(context: dg.ScheduleEvaluationContext, settings: SettingsResource, partitions: dg.DynamicPartitionsDefinition, last_asset: dg.AssetKey):
    instance = context.instance
    registered = instance.get_dynamic_partitions(partitions.name)
    done = set(instance.get_materialized_partitions(last_asset))
    todo = pending_partitions(registered, done, settings.get_profile().max_new_files_per_tick)
    if not todo:
        return dg.SkipReason(f"all {len(registered)} partition(s) of {partitions.name} are materialized")
    night = context.scheduled_execution_time.strftime("%Y-%m-%d") if context.scheduled_execution_time else "manual"
    return [
        dg.RunRequest(run_key=f"nightly:{night}:{pk}", partition_key=pk, tags={"trance/launched_by": "nightly backfill"})
        for pk in todo
    ]


@dg.schedule(
    cron_schedule=NIGHTLY_CRON,
    job=reference_track_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every night at 03:00: run every reference track partition that has no Tier 2 melody yet.",
)
def nightly_reference_tracks_backfill(context: dg.ScheduleEvaluationContext, settings: SettingsResource):
    return _nightly(context, settings, reference_tracks, MELODY)


@dg.schedule(
    cron_schedule=NIGHTLY_CRON,
    job=gold_melody_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every night at 03:00: run every gold MIDI partition that has no Tier 1 melody yet.",
)
def nightly_gold_backfill(context: dg.ScheduleEvaluationContext, settings: SettingsResource):
    return _nightly(context, settings, gold_melodies, GOLD)

"""What the automation sensor does with the project's conditions, on an ephemeral instance:
a fresh instance requests the sources, a request is made once per reason (a failed or skipped run is
not re-requested on every tick), and the benchmark report waits for the models it compares."""

import dagster as dg

from trance_assets.assets.models import MODEL_KEYS
from trance_assets.definitions import defs

GIGAMIDI = dg.AssetKey(["tier3", "gigamidi_melodies"])
SYNTHETIC = dg.AssetKey(["tier3", "synthetic_melodies"])
TFRECORDS = dg.AssetKey(["corpus", "notesequence_tfrecords"])
REPORT = dg.AssetKey(["evaluation", "benchmark_report"])
TRANCE = MODEL_KEYS["melody_rnn_trance"]


def tick(instance, previous=None):
    return dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=previous.cursor if previous else None)


def materialize(instance, *keys):
    for k in keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(k))


def test_a_fresh_instance_requests_the_sources_once():
    with dg.DagsterInstance.ephemeral() as instance:
        first = tick(instance)
        assert first.get_num_requested(GIGAMIDI) == 1 and first.get_num_requested(SYNTHETIC) == 1
        # the run failed (nothing materialized): not requested again on the next ticks
        second = tick(instance, first)
        assert second.get_num_requested(GIGAMIDI) == 0
        assert tick(instance, second).get_num_requested(GIGAMIDI) == 0


def test_a_skipped_model_comes_back_when_the_corpus_changes():
    with dg.DagsterInstance.ephemeral() as instance:
        materialize(instance, TFRECORDS, MODEL_KEYS["melody_rnn_base"])
        first = tick(instance)
        assert first.get_num_requested(TRANCE) == 1
        # the run skipped it (no Tier 1/2 data yet): it stays missing, and is not requested again ...
        second = tick(instance, first)
        assert second.get_num_requested(TRANCE) == 0
        # ... until the corpus export changes
        materialize(instance, TFRECORDS)
        assert tick(instance, second).get_num_requested(TRANCE) == 1


def test_the_benchmark_report_waits_for_every_model():
    with dg.DagsterInstance.ephemeral() as instance:
        others = [k for k in MODEL_KEYS.values() if k != TRANCE]
        materialize(instance, *others)
        first = tick(instance)
        assert first.get_num_requested(REPORT) == 0  # melody_rnn_trance was never materialized
        materialize(instance, TRANCE)
        second = tick(instance, first)
        assert second.get_num_requested(REPORT) == 1
        assert tick(instance, second).get_num_requested(REPORT) == 0

"""What the automation sensor does with the project's conditions, on an ephemeral instance:
a fresh instance requests the sources, a request is made once per reason (a failed or skipped run is
not re-requested on every tick), and the benchmark report waits for the models it compares."""

import dagster as dg

from trance_assets.assets.evaluation import COMPARED_MODELS
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
        others = [k for k in COMPARED_MODELS.values() if k != TRANCE]
        materialize(instance, *others)
        first = tick(instance)
        # melody_rnn_trance is missing but requested in this tick: the report goes in the same run
        assert first.get_num_requested(TRANCE) == 1 and first.get_num_requested(REPORT) == 1
        # ... it was skipped there (nothing to train on): the report is not re-requested alone
        second = tick(instance, first)
        assert second.get_num_requested(REPORT) == 0
        materialize(instance, TRANCE)
        assert tick(instance, second).get_num_requested(REPORT) == 1


LORA = dg.AssetKey(["models", "midi_model_trance_lora"])
ONNX = dg.AssetKey(["models", "midi_model_onnx"])
INT8 = dg.AssetKey(["models", "midi_model_onnx_int8"])
TOKENS = dg.AssetKey(["corpus", "midi_model_tokens"])


def check_result(instance, passed: bool):
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(
        asset_key=LORA, check_name="val_loss_improves_on_base", passed=passed, metadata={}, severity=dg.AssetCheckSeverity.ERROR))


def test_the_onnx_export_waits_for_the_blocking_check_to_pass():
    base = dg.AssetKey(["models", "midi_model_base"])
    with dg.DagsterInstance.ephemeral() as instance:
        materialize(instance, TOKENS, base)
        first = tick(instance)
        # the fine-tune, its blocking check and the export go in one run (the check stops the export there)
        assert first.get_num_requested(LORA) == first.get_num_requested(ONNX) == first.get_num_requested(INT8) == 1
        assert requested(first, dg.AssetCheckKey(LORA, "val_loss_improves_on_base"))
        # that run: the fine-tune materialized, its check failed, no export
        materialize(instance, LORA)
        check_result(instance, passed=False)
        second = tick(instance, first)
        assert second.get_num_requested(ONNX) == 0 and second.get_num_requested(INT8) == 0
        assert second.get_num_requested(REPORT) == 0  # the INT8 export it compares is missing and not coming
        # a new fine-tune passes: the export and its INT8 variant go together
        materialize(instance, LORA)
        check_result(instance, passed=True)
        third = tick(instance, second)
        assert third.get_num_requested(ONNX) == 1 and third.get_num_requested(INT8) == 1


def requested(result, key) -> bool:
    return any(r.key == key and r.true_subset.size for r in result.results)


def test_checks_are_requested_with_their_assets():
    """Automation requests assets, not checks: every check has a condition of its own, so the
    model criteria, the blocking checks and the corpus checks run in automation's runs."""
    splits = dg.AssetKey(["corpus", "splits"])
    with dg.DagsterInstance.ephemeral() as instance:
        materialize(instance, TFRECORDS, MODEL_KEYS["melody_rnn_base"], TOKENS, dg.AssetKey(["models", "midi_model_base"]))
        first = tick(instance)
        for asset, check in ((TRANCE, "chord_tone_gain"), (TRANCE, "val_loss_decreases"), (LORA, "val_loss_improves_on_base")):
            assert first.get_num_requested(asset) == 1, asset
            assert requested(first, dg.AssetCheckKey(asset, check)), (asset, check)
        second = tick(instance, first)
        assert not requested(second, dg.AssetCheckKey(LORA, "val_loss_improves_on_base"))  # never alone
        assert not requested(second, dg.AssetCheckKey(splits, "no_leakage"))
        # a stand-alone check op runs after its asset was materialized without it
        materialize(instance, splits)
        assert requested(tick(instance, second), dg.AssetCheckKey(splits, "no_leakage"))

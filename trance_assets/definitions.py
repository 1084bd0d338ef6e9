"""The code location: every asset, check, job, sensor and resource of trance_assets."""

import dagster as dg

from .assets import corpus, evaluation
from .assets.midi_model import MIDI_MODEL_ASSETS, midi_model_tokens
from .assets.models import MODEL_ASSETS
from .assets.bulk import GigaMidiResource, gigamidi_melodies, public_domain_melodies
from .assets.extraction import melody, review_batches_pass, review_queue, separated_lead, transcription
from .assets.gold import gold_melody
from .assets.ingest import reference_audio
from .assets.synthetic import synthetic_melodies, synthetic_melodies_pass_quality
from .io_managers import StorageIOManager
from .jobs import gold_melody_job, reference_track_job
from .resources import MidiModelResource, SeparatorResource, SettingsResource, TranscriberResource
from .schedules import nightly_gold_backfill, nightly_reference_tracks_backfill
from .sensors import automation_sensor, gold_melodies_sensor, reference_audio_sensor

settings = SettingsResource.from_env()

defs = dg.Definitions(
    assets=[
        reference_audio,
        separated_lead,
        transcription,
        melody,
        review_queue,
        gold_melody,
        gigamidi_melodies,
        public_domain_melodies,
        synthetic_melodies,
        corpus.augmented,
        corpus.filtered,
        corpus.spot_check,
        corpus.splits,
        corpus.remi_tokens,
        corpus.notesequence_tfrecords,
        corpus.metadata,
        midi_model_tokens,
        corpus.dataset_card,
        *MODEL_ASSETS,
        *MIDI_MODEL_ASSETS,
        evaluation.reference_stats,
        evaluation.listening_test_kit,
        evaluation.listening_test_results,
        evaluation.benchmark_report,
    ],
    asset_checks=[
        review_batches_pass,
        synthetic_melodies_pass_quality,
        corpus.filtered_satisfies_every_rule,
        corpus.spot_check_flag_rate,
        corpus.no_leakage,
    ],
    jobs=[reference_track_job, gold_melody_job],
    sensors=[reference_audio_sensor, gold_melodies_sensor, automation_sensor],
    schedules=[nightly_reference_tracks_backfill, nightly_gold_backfill],
    resources={
        "settings": settings,
        "io_manager": StorageIOManager(settings=settings),
        "separator": SeparatorResource.from_env(),
        "transcriber": TranscriberResource(),
        "midi_model": MidiModelResource.from_env(),
        "gigamidi": GigaMidiResource.from_env(),
    },
    # Two cores: at most two steps of one run at a time.
    executor=dg.multiprocess_executor.configured({"max_concurrent": 2}),
)

"""The generator layer: the backend registry, the rule engine as the "rules" backend (the
`Generator` protocol), configurations and their fingerprints, and the fixed prompt set."""

from __future__ import annotations

import hashlib
import json

import pytest

from trance_assets.generation import base
from trance_assets.generation.base import (
    Configuration,
    Generator,
    GeneratorInfo,
    Prompt,
    available,
    get_generator,
    prompt_set,
    register,
)
from trance_assets.generation.rules import RuleGenerator
from trance_assets.music.melody import BEATS_PER_BAR, Melody, Note
from trance_assets.music.rules import RULES_VERSION, generate
from trance_assets.music.theory import parse_chord, parse_key

AM = ["Am", "F", "C", "G"]


@pytest.fixture
def private_registry(monkeypatch):
    """A copy of the registry for tests that register backends; the real one is restored after."""
    available()  # load the built-in backends first
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    return base._REGISTRY


class ToyGenerator:
    """A minimal backend: one whole note per bar on the chord root, octave from an option."""

    def __init__(self, octave: int = 5):
        self.octave = octave
        self.info = GeneratorInfo(name="toy", version="0.1", options={"octave": octave})

    def generate(self, key, bpm, chord_progression, bars, seed) -> Melody:
        notes = [Note(4.0 * b, 12 * self.octave + parse_chord(chord_progression[b % len(chord_progression)]).root, 4.0) for b in range(bars)]
        return Melody(tuple(notes), float(bpm), parse_key(key).name, bars=bars)


# ---- registry --------------------------------------------------------------------------------


def test_available_lists_the_rule_backend():
    names = available()
    assert "rules" in names
    assert names == sorted(names)


def test_unknown_backend_is_a_key_error_naming_the_registered_ones():
    with pytest.raises(KeyError) as err:
        get_generator("nope")
    msg = err.value.args[0]
    assert "'nope'" in msg
    assert "registered: " in msg
    for name in available():
        assert name in msg


@pytest.mark.parametrize("name", ["", "two words", "a/b", "x.y", "rules!", "-", "__"])
def test_register_rejects_bad_names(private_registry, name):
    before = dict(private_registry)
    with pytest.raises(ValueError, match="backend names"):
        register(name, ToyGenerator)
    assert private_registry == before


@pytest.mark.parametrize("name", ["MyBackend", "naïve"])
def test_register_rejects_names_outside_its_stated_alphabet(private_registry, name):
    with pytest.raises(ValueError):
        register(name, ToyGenerator)


def test_register_a_backend_and_build_it_with_options(private_registry):
    register("toy-backend_2", ToyGenerator)
    assert "toy-backend_2" in available()
    gen = get_generator("toy-backend_2", octave=4)
    assert isinstance(gen, ToyGenerator) and gen.octave == 4
    melody = Configuration("toy low", "toy-backend_2", {"octave": 3}).make().generate("Am", 140, AM, 4, 0)
    # roots A F C G in octave 3: MIDI 36 + pc
    assert [n.pitch for n in melody.notes] == [45, 41, 36, 43]
    with pytest.raises(KeyError, match="toy-backend_2"):
        get_generator("nope")


# ---- the rule backend ------------------------------------------------------------------------


def test_rule_generator_satisfies_the_protocol():
    gen = get_generator("rules")
    assert isinstance(gen, RuleGenerator)
    assert isinstance(gen, Generator)

    class NoInfo:
        def generate(self, key, bpm, chord_progression, bars, seed):
            return None

    assert not isinstance(NoInfo(), Generator)
    assert not isinstance(object(), Generator)


def test_rule_generator_info():
    info = get_generator("rules").info
    assert (info.name, info.version, info.checkpoint, info.options) == ("rules", f"rules-{RULES_VERSION}", None, {})
    assert info.version == "rules-1.0"
    d = get_generator("rules", density=0.8, span=18).info.to_dict()
    assert d["name"] == "rules" and d["checkpoint"] is None
    assert d["options"] == {"density": 0.8, "span": 18}
    assert set(d) == {"name", "version", "checkpoint", "description", "options"}
    json.dumps(d)  # JSON-ready


def test_unknown_rule_option_is_a_value_error():
    with pytest.raises(ValueError, match=r"unknown rule-engine option\(s\) \['tempo_feel'\]"):
        get_generator("rules", tempo_feel=1)
    with pytest.raises(ValueError, match="density"):  # the message lists the known options
        RuleGenerator(bogus=True)


def test_rule_generator_is_the_rule_engine():
    gen = get_generator("rules", density=0.7)
    assert gen.generate("Am", 140, AM, 8, 5) == generate("Am", 140, AM, 8, 5, density=0.7)


def test_same_prompt_and_seed_give_the_same_melody():
    a = get_generator("rules").generate("Em", 138, ("Em", "C", "G", "D"), 16, 42)
    b = get_generator("rules").generate("Em", 138, ["Em", "C", "G", "D"], 16, 42)
    assert a == b
    assert a.to_midi_bytes() == b.to_midi_bytes()


def test_a_different_seed_gives_a_different_melody():
    gen = get_generator("rules")
    a = gen.generate("Em", 138, ["Em", "C", "G", "D"], 16, 42)
    b = gen.generate("Em", 138, ["Em", "C", "G", "D"], 16, 43)
    assert [(n.start, n.pitch) for n in a.notes] != [(n.start, n.pitch) for n in b.notes]


def test_options_change_the_melody():
    sparse = get_generator("rules", density=0.0).generate("Am", 140, AM, 8, 3)
    dense = get_generator("rules", density=1.0).generate("Am", 140, AM, 8, 3)
    # density 0: only the four beats of a bar sound (phrase-ending bars 3 and 7 hold their cadence
    # note instead); density 1: every 8th, and more.
    for bar in (0, 1, 2, 4, 5, 6):
        assert [n.start - 4 * bar for n in sparse.notes if 4 * bar <= n.start < 4 * bar + 4] == [0.0, 1.0, 2.0, 3.0]
        onsets = [n.start - 4 * bar for n in dense.notes if 4 * bar <= n.start < 4 * bar + 4]
        assert {0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5} <= set(onsets)
    assert len(dense.notes) > len(sparse.notes)


@pytest.mark.parametrize(
    ("key", "bpm", "chords", "bars"),
    [("Am", 140.0, ["Am", "F", "C", "G"], 16), ("F#m", 132.5, ["F#m", "D", "A", "E"], 8), ("G", 145.0, ["G", "D", "Em", "C"], 12)],
)
def test_melody_honours_the_prompt(key, bpm, chords, bars):
    m = get_generator("rules").generate(key, bpm, chords, bars, 7)
    assert m.key == key and m.bpm == bpm and m.bars == bars
    assert len(m.chords) == bars
    for b, span in enumerate(m.chords):
        assert (span.symbol, span.start, span.duration, span.inferred) == (chords[b % len(chords)], 4.0 * b, 4.0, False)
    assert m.notes and all(0 <= n.start and n.end <= bars * BEATS_PER_BAR + 1e-9 for n in m.notes)
    assert max(n.start for n in m.notes) >= (bars - 1) * BEATS_PER_BAR  # the last bar is used
    allowed = parse_key(key).allowed_pcs()
    assert all(n.pitch % 12 in allowed for n in m.notes)
    # monophonic
    assert all(a.end <= b.start + 1e-9 for a, b in zip(m.notes, m.notes[1:]))


# ---- configurations --------------------------------------------------------------------------


def test_configuration_make():
    gen = Configuration("dense", "rules", {"density": 0.75, "chord_tone_bias": 0.7}).make()
    assert isinstance(gen, RuleGenerator)
    assert gen.info.options == {"density": 0.75, "chord_tone_bias": 0.7}
    assert gen.generate("Am", 140, AM, 8, 1) == generate("Am", 140, AM, 8, 1, density=0.75, chord_tone_bias=0.7)
    with pytest.raises(KeyError, match="nope"):
        Configuration("x", "nope").make()
    with pytest.raises(ValueError, match="unknown rule-engine option"):
        Configuration("x", "rules", {"nope": 1}).make()


def test_configuration_fingerprint_is_stable():
    plain = Configuration("rules", "rules")
    # sha1 of the JSON of [backend, options] with sorted keys, first 10 hex digits
    assert plain.fingerprint() == hashlib.sha1(b'["rules", {}]').hexdigest()[:10]
    assert plain.fingerprint() == "d4bc138535"
    a = Configuration("dense", "rules", {"density": 0.75, "chord_tone_bias": 0.7})
    b = Configuration("dense again", "rules", {"chord_tone_bias": 0.7, "density": 0.75})
    assert a.fingerprint() == b.fingerprint() == hashlib.sha1(b'["rules", {"chord_tone_bias": 0.7, "density": 0.75}]').hexdigest()[:10]
    assert len(a.fingerprint()) == 10
    assert a.fingerprint() != plain.fingerprint()
    assert Configuration("d", "rules", {"density": 0.76, "chord_tone_bias": 0.7}).fingerprint() != a.fingerprint()
    assert Configuration("rules", "other").fingerprint() != plain.fingerprint()


# ---- the prompt set --------------------------------------------------------------------------


def test_prompt_set_is_deterministic_and_has_n_unique_prompts():
    assert prompt_set(20) == prompt_set(20)
    for n in (0, 1, 16, 37):
        ps = prompt_set(n)
        assert len(ps) == n
        assert len({p.prompt_id for p in ps}) == n
        assert len({p.seed for p in ps}) == n
    assert [p.prompt_id for p in prompt_set(3)] == ["p000", "p001", "p002"]
    assert prompt_set(5) == prompt_set(20)[:5]  # a bigger set extends a smaller one


def test_prompt_set_parameters():
    ps = prompt_set(4, bpm=132.0, bars=8, seed=1)
    assert all(isinstance(p, Prompt) for p in ps)
    assert {(p.bpm, p.bars) for p in ps} == {(132.0, 8)}
    assert [p.seed for p in ps] == [100_003, 100_004, 100_005, 100_006]
    assert [p.seed for p in prompt_set(3)] == [0, 1, 2]
    # another seed: other generation seeds, same keys and progressions
    assert [(p.key, p.chords) for p in ps] == [(p.key, p.chords) for p in prompt_set(4)]


def test_prompt_keys_cycle_through_the_12_minor_keys_then_4_major_keys():
    ps = prompt_set(32)
    first = [parse_key(p.key) for p in ps[:12]]
    assert all(k.mode == "minor" for k in first)
    assert sorted(k.tonic for k in first) == list(range(12))
    assert [p.key for p in ps[:12]] == ["Cm", "C#m", "Dm", "Ebm", "Em", "Fm", "F#m", "Gm", "G#m", "Am", "Bbm", "Bm"]
    assert [p.key for p in ps[12:16]] == ["C", "D", "F", "G"]
    assert [p.key for p in ps[16:32]] == [p.key for p in ps[:16]]


def test_prompt_progressions_match_their_key():
    ps = prompt_set(48)
    for p in ps:
        key = parse_key(p.key)
        assert len(p.chords) == 4
        allowed = key.allowed_pcs()
        for sym in p.chords:
            chord = parse_chord(sym)  # every symbol parses
            assert chord.pcs <= allowed, (p, sym)
    # Hand-checked: i-VI-III-VII in C minor, i-V-VI-iv in A minor (V major), I-V-vi-IV in C major,
    # vi-IV-I-V in D major.
    by_id = {p.prompt_id: p for p in ps}
    assert by_id["p000"].chords == ("Cm", "Ab", "Eb", "Bb")
    assert by_id["p009"].chords == ("Am", "E", "F", "Dm")
    assert by_id["p012"].chords == ("C", "G", "Am", "F")
    assert by_id["p013"].chords == ("Bm", "G", "D", "A")
    # A minor prompt starts on a minor-key degree chord, a major one on a major-key chord: the tonic
    # chord of a minor prompt is minor, of a major prompt major.
    for p in ps:
        key = parse_key(p.key)
        tonic_chords = [parse_chord(s) for s in p.chords if parse_chord(s).root == key.tonic]
        for c in tonic_chords:
            assert (c.intervals[1] == 3) == (key.mode == "minor"), p
    # The second cycle of keys uses other progressions than the first.
    assert by_id["p016"].key == "Cm" and by_id["p016"].chords != by_id["p000"].chords


def test_every_prompt_generates():
    gen = get_generator("rules")
    for p in prompt_set(16, bars=4):
        m = gen.generate(p.key, p.bpm, list(p.chords), p.bars, p.seed)
        assert m.key == p.key and [c.symbol for c in m.chords] == list(p.chords)

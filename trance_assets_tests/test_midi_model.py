"""MidiModel: the published parameter names and sizes, loading checkpoints written in the published
formats (safetensors, pytorch_model.bin, a Lightning ckpt), tensors-only loading, save/load
identity, the forward methods and the training loss."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from trance_assets.formats.midi_tokenizer import MidiTokenizer
from trance_assets.models.midi_model import SIZES, MidiModel, MidiModelConfig, read_state_dict

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def published_keys(n_layers: int, n_token_layers: int) -> set[str]:
    """The state-dict keys of a published checkpoint, written out from the facts."""
    keys = {"lm_head.weight"}
    for net, layers in (("net", n_layers), ("net_token", n_token_layers)):
        keys |= {f"{net}.embed_tokens.weight", f"{net}.norm.weight"}
        for i in range(layers):
            keys |= {f"{net}.layers.{i}.self_attn.{p}_proj.weight" for p in "qkvo"}
            keys |= {f"{net}.layers.{i}.mlp.{p}_proj.weight" for p in ("gate", "up", "down")}
            keys |= {f"{net}.layers.{i}.{n}_layernorm.weight" for n in ("input", "post_attention")}
    return keys


def upstream_style_config(size: str = "tiny") -> dict:
    """config.json as the published checkpoints write it: non-default Llama fields only, plus the
    fields transformers adds on save, and the tokenizer block."""
    s = SIZES[size]
    tok = MidiTokenizer("v2", optimise_midi=True)

    def llama(hidden, inter, heads, layers, max_pos):
        return {"hidden_size": hidden, "intermediate_size": inter, "num_attention_heads": heads, "num_hidden_layers": layers,
                "num_key_value_heads": heads, "max_position_embeddings": max_pos, "pad_token_id": 0, "use_cache": False,
                "vocab_size": tok.vocab_size, "transformers_version": "4.46.1", "torch_dtype": "float32"}

    return {"model_type": "midi_model", "n_embd": s["n_embd"], "net_config": llama(*s["net"], 4096),
            "net_token_config": llama(*s["net_token"], 16), "tokenizer": tok.to_config()}


@pytest.fixture
def tiny() -> MidiModel:
    torch.manual_seed(0)
    return MidiModel(MidiModelConfig.from_size("tiny")).eval()


def test_parameter_names_are_the_published_ones(tiny):
    assert set(tiny.state_dict()) == published_keys(2, 1)


def test_published_sizes():
    with torch.device("meta"):
        medium = MidiModel(MidiModelConfig.from_size("medium"))
        medium_v1 = MidiModel(MidiModelConfig.from_size("medium", tokenizer_version="v1"))
        large = MidiModel(MidiModelConfig.from_size("large"))
    assert round(medium.n_params / 1e6, 1) == 233.8  # skytnt/midi-model-tv2o-medium
    assert round(medium_v1.n_params / 1e6, 1) == 233.3  # skytnt/midi-model (tv1-medium)
    assert round(large.n_params / 1e6) in (455, 456, 457, 458)
    assert set(medium.state_dict()) == published_keys(12, 3)
    c = medium.config
    assert (c.net_config["hidden_size"], c.net_config["intermediate_size"], c.net_config["num_attention_heads"]) == (1024, 4096, 16)
    assert (c.net_token_config["intermediate_size"], c.net_token_config["num_attention_heads"], c.net_token_config["num_hidden_layers"]) == (1024, 4, 3)
    assert medium.lm_head.bias is None and medium.lm_head.weight.shape == (3406, 1024)
    llama = medium.net.config  # library defaults for what the published configs leave out
    assert (llama.hidden_act, llama.rms_norm_eps) == ("silu", 1e-6) and not llama.attention_bias


@pytest.mark.parametrize("fmt", ["safetensors", "bin", "lightning"])
def test_loads_a_checkpoint_in_the_published_format(tmp_path, tiny, fmt):
    (tmp_path / "config.json").write_text(json.dumps(upstream_style_config()))
    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    if fmt == "safetensors":
        save_file(state, str(tmp_path / "model.safetensors"))
    elif fmt == "bin":
        torch.save(state, tmp_path / "pytorch_model.bin")
    else:  # Lightning: the state dict under "state_dict" next to trainer state
        torch.save({"state_dict": state, "epoch": 7, "global_step": 1200}, tmp_path / "model.ckpt")
    loaded = MidiModel.from_pretrained(tmp_path)
    for k, v in tiny.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x = torch.randint(0, 3406, (1, 5, 8))
    assert torch.allclose(loaded(x), tiny(x))


def test_bf16_storage_loads_as_float32(tmp_path, tiny):
    (tmp_path / "config.json").write_text(json.dumps(upstream_style_config()))
    save_file({k: v.to(torch.bfloat16) for k, v in tiny.state_dict().items()}, str(tmp_path / "model.safetensors"))
    loaded = MidiModel.from_pretrained(tmp_path)
    assert loaded.lm_head.weight.dtype == torch.float32
    assert torch.allclose(loaded.lm_head.weight, tiny.lm_head.weight, atol=1e-2)


def test_a_pickle_with_more_than_tensors_is_refused(tmp_path, tiny):
    (tmp_path / "config.json").write_text(json.dumps(upstream_style_config()))

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    with open(tmp_path / "pytorch_model.bin", "wb") as f:
        pickle.dump({"state_dict": dict(tiny.state_dict()), "evil": Payload()}, f)
    with pytest.raises(ValueError, match="weights_only"):
        read_state_dict(tmp_path)


def test_key_and_shape_mismatches_are_named(tmp_path, tiny):
    (tmp_path / "config.json").write_text(json.dumps(upstream_style_config()))
    state = dict(tiny.state_dict())
    state.pop("lm_head.weight")
    state["net.extra.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing \['lm_head.weight'\].*unexpected \['net.extra.weight'\]"):
        MidiModel.from_pretrained(tmp_path)
    state = dict(tiny.state_dict())
    state["lm_head.weight"] = torch.zeros(3406, 16)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="lm_head.weight has shape"):
        MidiModel.from_pretrained(tmp_path)


def test_missing_files_and_unreachable_hub_ids(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        MidiModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(upstream_style_config()))
    with pytest.raises(FileNotFoundError, match="none of model.safetensors"):
        MidiModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**upstream_style_config(), "model_type": "llama"}))
    save_file(dict(MidiModel(MidiModelConfig.from_size("tiny")).state_dict()), str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="model_type 'llama'"):
        MidiModel.from_pretrained(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="skytnt/not-a-model"):
        MidiModel.from_pretrained("skytnt/not-a-model")


def test_save_pretrained_then_from_pretrained_is_the_identity(tmp_path, tiny):
    tiny.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["model_type"] == "midi_model" and cfg["tokenizer"]["vocab_size"] == 3406
    assert set(cfg["net_config"]) >= {"hidden_size", "num_hidden_layers", "vocab_size"}
    loaded = MidiModel.from_pretrained(tmp_path / "m")
    assert loaded.config.to_dict() == tiny.config.to_dict()
    for k, v in tiny.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    # and a checkpoint written by an upstream-style config keeps its extra top-level fields
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "config.json").write_text(json.dumps({**upstream_style_config(), "architectures": ["MIDIModel"]}))
    save_file(dict(tiny.state_dict()), str(tmp_path / "u" / "model.safetensors"))
    again = MidiModel.from_pretrained(tmp_path / "u")
    again.save_pretrained(tmp_path / "u2")
    assert json.loads((tmp_path / "u2" / "config.json").read_text())["architectures"] == ["MIDIModel"]


def test_forward_methods_and_the_event_embedding(tiny):
    x = torch.randint(3, 3406, (2, 4, 8))
    hidden = tiny(x)
    assert hidden.shape == (2, 4, 32)
    # the event embedding is the sum of the 8 token embeddings; pad (row 0) adds nothing
    assert torch.count_nonzero(tiny.net.embed_tokens.weight[0]) == 0
    padded = x.clone()
    padded[:, :, 5:] = 0
    emb = tiny.net.embed_tokens(padded).sum(-2)
    assert torch.allclose(emb, tiny.net.embed_tokens(padded[:, :, :5]).sum(-2))
    logits = tiny.forward_token(hidden[:, -1], x[:, -1, :3])
    assert logits.shape == (2, 4, 3406)


def test_loss_ignores_pad_events(tiny):
    seq = torch.randint(3, 3406, (1, 6, 8))
    padded = torch.cat([seq, torch.zeros(1, 3, 8, dtype=torch.long)], dim=1)
    with torch.no_grad():
        assert torch.allclose(tiny.loss(seq), tiny.loss(padded), atol=1e-6)

"""Checkpoint checksums: every shipped model folder has a manifest, and a changed, truncated,
swapped or added file is caught on load with a message naming it and the command that restores it."""
import json
import shutil

import pytest

from ragtutor.checksums import MANIFEST, ChecksumError, verify_manifest, write_manifest
from ragtutor.dense import BiEncoder
from ragtutor.generation import CHECKPOINT_DIR, load_checkpoint
from ragtutor.rag_model import RAGModel

SHIPPED = ("retriever", "reader", "closed_book", "rag_token", "rag_sequence",
           "rag_token_reader_frozen", "rag_sequence_reader_frozen", "profile_fid",
           "profile_rag_token")


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_checkpoint_verifies(name):
    listed = verify_manifest(CHECKPOINT_DIR / name, required=True)
    assert listed and "training.json" not in listed


@pytest.fixture
def reader_copy(tmp_path):
    shutil.copytree(CHECKPOINT_DIR / "reader", tmp_path / "reader")
    return tmp_path


def _flip_byte(path, position=1000):
    data = bytearray(path.read_bytes())
    data[position] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, message", [
    (lambda f: _flip_byte(f / "model.safetensors"), r"model\.safetensors does not match"),
    (lambda f: f.joinpath("model.safetensors").write_bytes(
        f.joinpath("model.safetensors").read_bytes()[:5000]), r"model\.safetensors does not match"),
    (lambda f: shutil.copy(CHECKPOINT_DIR / "retriever" / "tokenizer" / "tokenizer.json",
                           f / "tokenizer.json"), r"tokenizer\.json does not match"),
    (lambda f: f.joinpath("config.json").write_text(
        json.dumps({**json.loads(f.joinpath("config.json").read_text()), "scale_embedding": True})),
     r"config\.json does not match"),
    (lambda f: f.joinpath("model.safetensors").unlink(), r"no complete checkpoint"),
    (lambda f: f.joinpath("extra.bin").write_bytes(b"x"), r"extra\.bin is not in"),
    (lambda f: f.joinpath(MANIFEST).unlink(), r"MANIFEST\.sha256 is missing"),
])
def test_a_damaged_reader_is_refused_with_the_file_and_the_script(reader_copy, damage, message):
    damage(reader_copy / "reader")
    with pytest.raises((ChecksumError, FileNotFoundError), match=message) as caught:
        load_checkpoint("reader", reader_copy)
    assert "scripts/train_generation.py" in str(caught.value)


def test_a_saved_model_round_trips_and_a_changed_weight_is_caught(tmp_path):
    model = RAGModel.from_pretrained(CHECKPOINT_DIR / "rag_token")
    model.save_pretrained(tmp_path / "rag")
    assert verify_manifest(tmp_path / "rag") and verify_manifest(tmp_path / "rag" / "retriever")
    RAGModel.from_pretrained(tmp_path / "rag")
    _flip_byte(tmp_path / "rag" / "generator" / "model.safetensors")
    with pytest.raises(ChecksumError, match=r"generator/model\.safetensors does not match"):
        RAGModel.from_pretrained(tmp_path / "rag")


def test_a_bi_encoder_config_without_its_settings_is_refused(tmp_path):
    shutil.copytree(CHECKPOINT_DIR / "retriever", tmp_path / "retriever")
    (tmp_path / "retriever" / "biencoder.json").write_text('{"pooling": "first"}\n')
    with pytest.raises(ChecksumError, match="biencoder.json does not match"):
        BiEncoder.from_pretrained(tmp_path / "retriever")
    write_manifest(tmp_path / "retriever")  # re-signed: the content itself is then checked
    with pytest.raises(ValueError, match="must hold exactly 'tied' and 'pooling'"):
        BiEncoder.from_pretrained(tmp_path / "retriever")


@pytest.mark.parametrize("edit", [{"encoder_layers": 4}, {"d_model": 48}])
def test_weights_that_do_not_fit_their_config_are_refused_even_when_re_signed(reader_copy, edit):
    # With the manifest re-signed, a config asking for more layers used to load anyway, the extra
    # layer random (Transformers only prints a table); a changed width used to load too.

    config = reader_copy / "reader" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **edit}))
    write_manifest(reader_copy / "reader")
    with pytest.raises(ChecksumError, match="do not fit config.json .*scripts/train_generation.py"):
        load_checkpoint("reader", reader_copy)


def test_a_nan_weight_is_refused_even_when_re_signed(reader_copy):
    # One NaN weight used to make every answer '' with no error once the manifest was re-signed.
    import torch
    from safetensors.torch import load_file, save_file

    path = reader_copy / "reader" / "model.safetensors"
    weights = load_file(path)
    name = next(n for n, t in weights.items() if t.is_floating_point())
    weights[name].view(-1)[0] = float("nan")
    save_file(weights, path, metadata={"format": "pt"})
    write_manifest(reader_copy / "reader")
    with pytest.raises(ChecksumError, match="non-finite weights .*scripts/train_generation.py"):
        load_checkpoint("reader", reader_copy)
    assert torch.isnan(load_file(path)[name]).any()


def test_a_folder_saved_without_a_manifest_still_loads_unchecked(tmp_path):
    shutil.copytree(CHECKPOINT_DIR / "retriever", tmp_path / "retriever")
    (tmp_path / "retriever" / MANIFEST).unlink()
    assert verify_manifest(tmp_path / "retriever") is None
    BiEncoder.from_pretrained(tmp_path / "retriever")

import pytest

from hilo_export.model import ModelError, load_model


def test_builtin_models_are_deterministic():
    assert load_model("tiny-flux").weights_sha256 == load_model("tiny-flux").weights_sha256


def test_local_folder_with_a_transformer_subfolder(tmp_path):
    model = load_model("tiny-flux")
    model.model.save_pretrained(tmp_path / "pipe" / "transformer")
    loaded = load_model(str(tmp_path / "pipe"))
    assert loaded.source == "folder" and loaded.weights_sha256 == model.weights_sha256


def test_unknown_models_name_the_fix(tmp_path):
    with pytest.raises(ModelError, match="download it first"):
        load_model("someone/not-cached")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="expected config.json"):
        load_model(str(tmp_path / "empty"))

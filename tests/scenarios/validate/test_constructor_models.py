"""``validate`` and ``run`` on models whose config is their constructor arguments (a
subclassed model, a keras-hub backbone) and on models that cannot be rebuilt: a good sweep
passes with a count per corner; a key that addresses nothing, a layer key on a model with
no layer list, and a model that does not rebuild exit 2 with file, field, value and hint,
and create nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from clonesweep.cli.main import main

CODE = "cs_kinds_code"
CODE_TEXT = '''
import keras


@keras.saving.register_keras_serializable(package="cs_kinds")
class KindsNet(keras.Model):
    """A digits classifier whose config is its constructor arguments."""

    def __init__(self, hidden=16, blocks=1, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        self.hidden, self.blocks, self.dropout = hidden, blocks, dropout
        self.body = [keras.layers.Dense(hidden, activation="relu") for _ in range(blocks)]
        self.drop = keras.layers.Dropout(dropout)
        self.head = keras.layers.Dense(10, activation="softmax")
        self(keras.ops.zeros((1, 64)))

    def call(self, x, training=False):
        for layer in self.body:
            x = layer(x)
        return self.head(self.drop(x, training=training))

    def get_config(self):
        return {"name": self.name, "hidden": self.hidden, "blocks": self.blocks,
                "dropout": self.dropout}


def envelope():
    return keras.saving.serialize_keras_object(KindsNet())


def bert(num_layers=2):
    import keras_hub

    return keras_hub.models.BertBackbone(vocabulary_size=50, num_layers=num_layers,
                                         num_heads=2, hidden_dim=8, intermediate_dim=16,
                                         max_sequence_length=8)
'''
HEAD = f"name: t\nmodel: {{config: kinds.json, imports: [{CODE}]}}\nparameters:\n"


@pytest.fixture(scope="module")
def code_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("code")
    (folder / f"{CODE}.py").write_text(CODE_TEXT)
    return folder


@pytest.fixture
def workdir(code_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(code_dir))
    module = __import__(CODE)
    config = json.loads(json.dumps(module.envelope()))
    (tmp_path / "kinds.json").write_text(json.dumps(config))
    unregistered = dict(config, registered_name="nowhere>GoneNet", class_name="GoneNet",
                        module="nowhere_xyz")
    (tmp_path / "gone.json").write_text(json.dumps(unregistered))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def test_constructor_arguments_are_swept_and_every_corner_builds(
        workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = workdir / "sweep.yaml"
    sweep.write_text(HEAD + "  model.hidden: {values: [8, 32]}\n  model.blocks: {min: 1, max: 2}\n"
                     "  model.dropout: {min: 0.0, max: 0.5}\n")
    before = tree(workdir)
    assert main(["validate", str(sweep), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert tree(workdir) == before and not (workdir / "runs").exists()
    counts = {c["label"]: c["param_count"] for c in report["corners"]}
    assert counts["all-low"] == 64 * 8 + 8 + 8 * 10 + 10
    assert counts["all-high"] == 64 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10


BAD = [
    # (id, file text, field, what the message must hold)
    ("argument_addresses_nothing", HEAD + "  model.hiden: {values: [8, 16]}\n",
     "parameters.model.hiden", "model.hidden"),
    ("layer_key_on_constructor_model", HEAD + "  layers.dense.units: {values: [8, 16]}\n",
     "parameters.layers.dense.units", "cs_kinds>KindsNet"),
    ("name_is_no_hyperparameter", HEAD + "  model.name: {values: [a, b]}\n",
     "parameters.model.name", "no hyperparameter"),
    ("argument_out_of_range", HEAD + "  model.hidden: {values: [0, 8]}\n",
     "parameters.model.hidden", "all-low"),
    ("model_does_not_rebuild", "name: t\nmodel: {config: gone.json}\n", "model.config",
     "GoneNet"),
]


@pytest.mark.parametrize(("text", "field", "expected"), [c[1:] for c in BAD],
                         ids=[c[0] for c in BAD])
def test_bad_model_input_exits_2_and_creates_nothing(
        workdir: Path, text: str, field: str, expected: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    sweep = workdir / "sweep.yaml"
    sweep.write_text(text)
    before = tree(workdir)
    assert main(["validate", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"clonesweep: error: {sweep}"), err
    assert f"field '{field}'" in err and expected in err, err
    assert "\n  hint: " in err, err
    assert tree(workdir) == before and not (workdir / "runs").exists()


@pytest.mark.parametrize("case", ["argument_addresses_nothing", "layer_key_on_constructor_model"])
def test_run_refuses_the_same_input_before_creating_anything(
        workdir: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    text, field = next((c[1], c[2]) for c in BAD if c[0] == case)
    sweep = workdir / "sweep.yaml"
    sweep.write_text(text)
    before = tree(workdir)
    assert main(["run", str(sweep), "--backend", "inprocess"]) == 2
    assert f"field '{field}'" in capsys.readouterr().err
    assert tree(workdir) == before and not (workdir / "runs").exists()


def test_layer_key_on_a_layer_graph_model_key_is_refused(
        workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import keras

    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, name="out")])
    (workdir / "graph.json").write_text(json.dumps(keras.saving.serialize_keras_object(model)))
    sweep = workdir / "sweep.yaml"
    sweep.write_text("name: t\nmodel: {config: graph.json}\nparameters:\n"
                     "  model.units: {values: [8, 16]}\n")
    assert main(["validate", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert "field 'parameters.model.units'" in err and "layer graph" in err, err


def test_keras_hub_backbone_arguments_validate(workdir: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    hub = pytest.importorskip("keras_hub")
    backbone = hub.models.BertBackbone(vocabulary_size=50, num_layers=2, num_heads=2,
                                       hidden_dim=8, intermediate_dim=16, max_sequence_length=8)
    config: dict[str, Any] = json.loads(json.dumps(
        __import__("keras").saving.serialize_keras_object(backbone)))
    (workdir / "bert.json").write_text(json.dumps(config))
    sweep = workdir / "sweep.yaml"
    sweep.write_text("name: t\nmodel: {config: bert.json, imports: [keras_hub]}\nparameters:\n"
                     "  model.num_layers: {values: [1, 3]}\n"
                     "  model.dropout: {min: 0.0, max: 0.2}\n")
    assert main(["validate", str(sweep), "--json"]) == 0
    counts = {c["label"]: c["param_count"]
              for c in json.loads(capsys.readouterr().out)["corners"]}
    assert counts["all-low"] < counts["all-high"]


def test_layer_keys_address_a_keras_hub_backbone_from_a_factory(
        workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("keras_hub")
    from clonesweep.orchestrator.model import base_model_config
    from clonesweep.spec import load_sweep
    from clonesweep.workers.rebuild import rebuild

    sweep = workdir / "sweep.yaml"
    sweep.write_text(f"name: t\nmodel: {{factory: '{CODE}:bert', imports: [keras_hub]}}\n"
                     "parameters:\n  model.num_layers: {values: [1, 2]}\n"
                     "  layers.transformer_layer_0.dropout: {values: [0.0, 0.3]}\n"
                     "  layers[TransformerEncoder].intermediate_dim: {values: [8, 16]}\n")
    assert main(["validate", str(sweep), "--json"]) == 0, capsys.readouterr().err
    counts = {c["label"]: c["param_count"]
              for c in json.loads(capsys.readouterr().out)["corners"]}
    assert counts["all-low"] < counts["all-high"]
    config = base_model_config(load_sweep(sweep))
    assert config["class_name"] == "Functional"  # the backbone's graph, not its arguments
    model = rebuild(config, {"layers.transformer_layer_0.dropout": 0.3,
                             "layers[TransformerEncoder].intermediate_dim": 8}, seed=1).model
    encoders = [layer for layer in model.layers if "transformer_layer" in layer.name]
    assert model.get_layer("transformer_layer_0").dropout == 0.3
    assert [e.intermediate_dim for e in encoders] == [8]  # the base: num_layers 1

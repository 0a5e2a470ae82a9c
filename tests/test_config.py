"""The Config dataclass: every field a flag with its own help, recipes, checked values."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from lenet5.config import RECIPES, Config, from_dict, from_recipe, to_dict
from lenet5.errors import ConfigError

SRC = Path(__file__).resolve().parents[1] / "src" / "lenet5"


def test_every_field_has_help_and_a_flag(capsys):
    from lenet5.cli import main

    for f in fields(Config):
        assert f.metadata.get("help"), f"{f.name} has no help text"
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = capsys.readouterr().out
    for f in fields(Config):
        if f.name != "recipe":
            assert f"--{f.name.replace('_', '-')}" in shown, f.name
            assert " ".join(f.metadata["help"].split()[:3]) in " ".join(shown.split()), f.name


def test_train_help_groups_the_flags_and_says_each_default_once(capsys):
    """`lenet5 train --help` in groups (data, optimisation, schedule, ...), each Config flag in its
    field's group; every command's flags each say their default at most once."""
    import re

    from lenet5.cli import main
    from lenet5.config import GROUPS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    parts = re.split(r"^(\S[^\n]*):\n", out, flags=re.M)
    sections = dict(zip(parts[1::2], parts[2::2]))
    assert list(sections) == ["options", *GROUPS]
    for f in fields(Config):
        if f.name != "recipe":
            group = f.metadata["group"]
            assert re.search(rf"^  --{f.name.replace('_', '-')}\b", sections[group], re.M), (f.name, group)
    assert "--recipe" in sections["run"] and "--resume" in sections["run"] and "--overwrite" in sections["output"]
    assert out.count("(default:") == len(fields(Config))  # each field's flag once, --recipe's for its own
    for command in ("train", "evaluate", "predict", "show", "plot", "export", "serve", "info"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        for entry in re.split(r"^  (?=-)", capsys.readouterr().out, flags=re.M):
            assert entry.count("(default:") <= 1, (command, entry)


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_help_shows_the_chosen_recipes_defaults(recipe, capsys):
    from lenet5.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--recipe", recipe, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"passes over the training images (default: {from_recipe(recipe).epochs})" in out


def test_a_config_survives_plain_types_both_ways():
    cfg = from_recipe("fast", wandb_tags=["a", "b"], lr=0.1)
    assert from_dict(to_dict(cfg)) == cfg
    assert from_dict({**to_dict(cfg), "epochs": 7}).epochs == 7


@pytest.mark.parametrize("values, message", [
    ({"epochs": "3"}, "config key 'epochs' must be int"),
    ({"epochs": True}, "config key 'epochs' must be int"),
    ({"learning_rate": 1}, "unknown config key"),
    ({"optimizer": "adam"}, "--optimizer 'adam'"),
    ({"monitor": "val_acc", "val_size": 0}, "--monitor val_acc needs a validation split"),
    ({"std": 0.0}, "--std must be positive"),
    ({"name": "a/b"}, "--name 'a/b' must be a plain folder name"),
    ({"shift": 9}, "--shift 9"),
    ({"ema": 1.0}, "--ema must be a decay from 0"),
    ({"ema": -0.5}, "--ema must be a decay from 0"),
])
def test_wrong_values_are_refused_with_the_flag_named(values, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(values)


def test_an_int_is_taken_where_a_float_is_expected():
    assert from_dict({"lr": 1}).lr == 1.0 and isinstance(from_dict({"lr": 1}).lr, float)


def test_help_works_from_a_byte_compiled_install(tmp_path):
    """No .py sources at all (a byte-compiled install): help comes from the fields, not the source."""
    package = tmp_path / "lenet5"
    shutil.copytree(SRC, package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-b", str(package)], check=True)
    for source in package.rglob("*.py"):
        source.unlink()
    proc = subprocess.run([sys.executable, "-c", "from lenet5.cli import main; main(['train', '--help'])"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)},
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-1000:]
    assert "--epochs EPOCHS" in proc.stdout and "passes over the training images" in proc.stdout


def test_a_config_file_is_read_and_flags_override_it(tmp_path, capsys):
    from lenet5.cli import main

    (tmp_path / "c.json").write_text('{"recipe": "fast", "epochs": 3, "lr": 0.02}')
    (tmp_path / "c.yaml").write_text("recipe: seed\nepochs: 4\nwandb_tags: [a, b]\n")
    printed = []
    for argv in (["--config", str(tmp_path / "c.json")],
                 ["--config", str(tmp_path / "c.json"), "--epochs", "7"],
                 ["--config", str(tmp_path / "c.yaml")],
                 ["--config", str(tmp_path / "c.json"), "--recipe", "best"]):
        assert main(["train", *argv, "--print-config"]) == 0
        printed.append(json.loads(capsys.readouterr().out))
    assert (printed[0]["recipe"], printed[0]["epochs"], printed[0]["lr"], printed[0]["batch_size"]) == \
        ("fast", 3, 0.02, from_recipe("fast").batch_size)
    assert printed[1]["epochs"] == 7  # a flag beats the file
    assert (printed[2]["recipe"], printed[2]["epochs"], printed[2]["wandb_tags"]) == ("seed", 4, ["a", "b"])
    assert printed[3]["recipe"] == "best" and printed[3]["epochs"] == 3  # the file's values on best's defaults


def test_a_run_folders_config_json_reruns_that_run(tmp_path, capsys):
    from lenet5.cli import main

    cfg = from_recipe("fast", epochs=2, name="old", seed=5)
    (tmp_path / "config.json").write_text(json.dumps(to_dict(cfg)))
    assert main(["train", "--config", str(tmp_path / "config.json"), "--name", "new", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out) == {**to_dict(cfg), "name": "new"}


@pytest.mark.parametrize("content, said", [("[1, 2]", "holds a list"), ('{"epoch": 3}', "unknown config key"),
                                           ("{nope", "not valid JSON"), ('{"epochs": "3"}', "must be int")])
def test_a_wrong_config_file_is_one_line(tmp_path, capsys, content, said):
    from lenet5.cli import main

    (tmp_path / "c.json").write_text(content)
    assert main(["train", "--config", str(tmp_path / "c.json"), "--print-config"]) == 1
    err = capsys.readouterr().err
    assert said in err and err.count("\n") == 1 and "Traceback" not in err


def test_the_data_home_is_the_flag_then_here_then_the_variable_then_the_cache(tmp_path, monkeypatch):
    from lenet5.data import data_home

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LENET5_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_home("given") == Path("given")
    assert data_home() == tmp_path / "cache" / "lenet5" / "data"
    monkeypatch.setenv("LENET5_DATA", str(tmp_path / "mine"))
    assert data_home() == tmp_path / "mine"
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (SRC.parents[1] / "data" / "MNIST" / "raw").glob("*.gz"):
        (raw / f.name).symlink_to(f)
    assert data_home() == Path("data")  # ./data holds MNIST: it wins over the variable

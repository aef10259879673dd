"""scripts/defenses.py: the models' commands, reuse of finished work, and the table."""
import argparse

import pytest

from conftest import load_script
from scratchadv.checkpoint import save_model
from scratchadv.model import init_params

ds = load_script("defenses")


def _report(clean=0.99, sanity_ok=True):
    def row(eps, acc):
        return {"eps": eps, "accuracy": {"fgsm": acc + 0.1, "pgd": acc + 0.05, "autoattack": acc,
                                         "worst_case": acc, "noise": 0.9},
                "autoattack_after": {"apgd-ce": acc + 0.02, "apgd-t": acc + 0.01, "fab-t": acc, "square": acc},
                "autoattack": {"square_warning": False, "seconds": 3.0}}
    return {"n": 1000, "clean_accuracy": clean,
            "results": [row(0.0, clean), row(0.1, 0.5), row(0.2, 0.2), row(0.3, 0.0), row(0.5, 0.0)],
            "sanity": [{"name": "noise", "passed": True}, {"name": "zero gradients", "passed": sanity_ok}]}


def test_every_model_is_a_train_command_and_is_evaluated_at_01_and_03():
    names = [m[0] for m in ds.MODELS]
    assert names[:6] == ["natural", "pgd-eps0.1", "gradreg", "trades-eps0.1", "pgd-eps0.3", "trades-eps0.3"]
    assert len(set(names)) == len(names)
    for name, _, options, eps in ds.MODELS:
        assert {0.1, 0.3} <= set(eps)
        cmd = ds.train_command(options, argparse.Namespace(epochs=10, seed=0), f"out/{name}.npz")
        assert cmd[0] == "train" and cmd[-3:] == ["--out", f"out/{name}.npz", "--quiet"]
    assert 0.2 in dict((m[0], m[3]) for m in ds.MODELS)["gradreg"]


def test_table_rows_and_the_eps_02_table():
    model = ds.MODELS[2]                                     # gradreg: also eps 0.2
    rows = [ds.summarize(model, _report()), ds.summarize(ds.MODELS[0], _report(sanity_ok=False))]
    assert rows[0]["eps"]["0.1"]["autoattack"] == 0.5 and set(rows[0]["eps"]) == {"0.1", "0.2", "0.3"}
    table = ds.format_table(rows)
    line = next(t for t in table.splitlines() if t.startswith("| gradient-regularized (`--defense gradreg`)"))
    assert line.split(" | ")[1:5] == ["99.0", "60.0", "55.0", "50.0"]     # clean, FGSM, PGD, AA at 0.1
    assert "failed: zero gradients" in table and "all pass" in table
    assert "| gradient-regularized | 30.0 | 25.0 | 20.0 | 22.0 / 21.0 / 20.0 / 20.0 |" in table


def test_replace_block_keeps_the_rest_and_needs_the_markers():
    text = f"a\n{ds.MARK_BEGIN}\nold\n{ds.MARK_END}\nb\n"
    assert ds.replace_block(text, "new\n") == f"a\n{ds.MARK_BEGIN}\nnew\n{ds.MARK_END}\nb\n"
    with pytest.raises(ValueError, match="markers"):
        ds.replace_block("no markers", "new\n")


def test_a_model_file_is_reused_only_if_its_command_made_it(tmp_path):
    path = tmp_path / "m.npz"
    args = argparse.Namespace(epochs=10, seed=0)
    options = ["--defense", "pgd", "--eps", "0.3"]
    assert not ds._same_model(str(path), options, args)
    save_model(path, init_params(0), "lecture-cnn-v1", config={"epochs": 10, "seed": 0, "defense": "pgd", "eps": 0.3})
    assert ds._same_model(str(path), options, args)
    assert not ds._same_model(str(path), ["--defense", "pgd", "--eps", "0.1"], args)
    assert not ds._same_model(str(path), options, argparse.Namespace(epochs=2, seed=0))
    assert not ds._same_model(str(path), [], args)
    assert not ds._same_model(str(path), options + ["--pgd-steps", "10"], args)    # a variant of it


def test_only_names_unknown_models():
    with pytest.raises(SystemExit, match="unknown model"):
        ds._models(argparse.Namespace(only="natural,magic"))
    assert [m[0] for m in ds._models(argparse.Namespace(only="gradreg"))] == ["gradreg"]

"""The demo's README from a stored results.json: no training, no attack, milliseconds.

tests/data/demo-quick-results.json is the results.json of one
`scratchadv demo --quick` run (seed 0).
"""
import copy
import json
import os
import re
import time

import pytest

from scratchadv.demo import PRESETS, SECTIONS, SETTING_DOCS, TITLES, format_readme

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "demo-quick-results.json")


@pytest.fixture(scope="module")
def results():
    with open(FIXTURE, encoding="utf-8") as f:
        return json.load(f)


def table_row(readme, first_cell):
    """The cells of the Markdown table row whose first cell is ``first_cell``."""
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row starting with {first_cell!r}")


def table_rows(text, *first_cells):
    """The cells of every Markdown table row that starts with ``first_cells``."""
    out = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and tuple(cells[:len(first_cells)]) == first_cells:
            out.append(cells)
    return out


def pct(v):
    return f"{100 * v:.1f}%"


def section_text(readme, key):
    """The Markdown of one section: from its heading to the next one."""
    start = readme.index(f"## {TITLES[key]}")
    end = readme.find("\n## ", start + 1)
    return readme[start:end if end >= 0 else None]


def test_readme_is_a_fast_pure_function_of_the_results(results):
    before = copy.deepcopy(results)
    t0 = time.perf_counter()
    readme = format_readme(results)
    assert time.perf_counter() - t0 < 1.0
    assert results == before                      # the results are not changed
    assert format_readme(before) == readme        # and nothing but them counts
    for key in SECTIONS:
        assert f"## {TITLES[key]}" in readme
    assert "Incomplete report" not in readme


def test_every_figure_is_shown_once_with_its_number(results):
    readme = format_readme(results)
    listed = [f for k in SECTIONS for f in results["sections"][k]["figures"]]
    shown = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert shown == listed                         # same figures, same order, none extra
    numbers = [int(n) for n in re.findall(r"^\*Figure (\d+)\.", readme, flags=re.M)]
    assert numbers == list(range(1, len(listed) + 1))


def test_numbers_land_in_their_tables(results):
    readme = format_readme(results)
    s = results["sections"]
    val = table_row(section_text(readme, "train"), "validation accuracy")
    assert val[1] == f"{100 * s['train']['val_accuracy']:.1f}%" == "91.5%"
    softmax = next(t for t in s["shallow_vs_deep"]["table"] if t["architecture"] == "softmax-v1")
    row = table_row(section_text(readme, "shallow_vs_deep"), "softmax regression")
    assert row[3] == f"{softmax['median_linf']:.3f}" == "0.062"
    assert row[2] == str(softmax["n_correct"])
    at03 = next(r for r in s["untargeted"]["rows"] if r["eps"] == 0.3)
    row = table_row(section_text(readme, "untargeted"), "0.3")
    assert row[1:5] == [f"{100 * at03[k]:.1f}%" for k in ("fgsm", "pgd", "worst_case", "noise")]
    assert row[5] == "11.3%"                      # Ross & Doshi-Velez's natural model beside it
    fake = table_row(section_text(readme, "fake"), "P(target), the slides' loss")
    assert fake[1:] == [f"{p:.3f}" for p in s["fake"]["target_probability"]]
    fake_ce = table_row(section_text(readme, "fake"), "P(target), cross-entropy")
    assert fake_ce[1:] == [f"{p:.3f}" for p in s["fake"]["cross_entropy"]["target_probability"]]
    assert s["fake"]["loss"] == "lecture" and "What the slides' code computes" in section_text(readme, "fake")
    grid = table_row(section_text(readme, "targeted"), "P(target), slides' loss, L1 penalty")
    assert grid[1:] == [f"{p:.2f}" for p in s["targeted"]["grid"]["lecture-l1"]["target_probability"]]
    comp = table_row(section_text(readme, "gradient_regularization"), "pgd-trained")
    assert comp[1] == f"{100 * s['adversarial_training']['clean_accuracy']:.1f}%"


def test_settings_table_lists_the_preset(results):
    readme = format_readme(results)
    for k, v in results["settings"].items():
        assert f"| `{k}` | {v} |" in readme


def test_a_partial_run_says_what_is_missing(results):
    partial = {**results, "sections": {k: results["sections"][k] for k in ("train", "fake")}}
    readme = format_readme(partial)
    assert "**Incomplete report**" in readme and TITLES["targeted"] in readme
    assert f"## {TITLES['targeted']}" not in readme
    assert re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme) == [
        f for k in ("train", "fake") for f in results["sections"][k]["figures"]]


def test_ascent_text_states_the_settings_it_ran_with(results):
    """The ascent's step, step budget and snapshot steps come from the results, not the text."""
    text = section_text(format_readme(results), "untargeted")
    assert "x + 0.05 * g / max|g|" in text and "at most 20 steps" in text and "0/5/10/15/20" in text
    other = copy.deepcopy(results)
    other["sections"]["untargeted"]["ascent"].update(step=0.1, max_steps=12, snapshot_steps=[0, 6, 12])
    text = section_text(format_readme(other), "untargeted")
    assert "x + 0.1 * g / max|g|" in text and "at most 12 steps" in text and "within 12 steps" in text
    assert "0/6/12" in text and "0.05" not in text


def test_every_setting_of_both_presets_is_documented():
    assert set(SETTING_DOCS) == set(PRESETS["full"]) == set(PRESETS["quick"])
    assert all(isinstance(v, str) and v.strip() for v in SETTING_DOCS.values())


def test_minimal_norm_comparison_lands_in_section_4(results):
    m = results["sections"]["shallow_vs_deep"]["minimal_norms"]
    text = section_text(format_readme(results), "shallow_vs_deep")
    assert f"On the first {m['n']} test images" in text
    head = table_rows(text, "model", "norm")
    assert len(head) == 1 and head[0][3:] == [*m["attacks"], "smallest"]
    assert len(m["rows"]) == 6
    for r in m["rows"]:
        (row,) = table_rows(text, r["model"], r["norm"])
        assert row[2] == str(r["n_correct"])
        for a, cell in zip(m["attacks"], row[3:]):
            assert cell == (f"{r['by_attack'][a]['median']:.4g}" if a in r["by_attack"] else "—")
        assert row[-1] == r["smallest"]
    assert "cw" not in next(r for r in m["rows"] if r["norm"] == "linf")["by_attack"]
    # which attack is smallest comes from the results, not the text
    other = copy.deepcopy(results)
    o = other["sections"]["shallow_vs_deep"]["minimal_norms"]
    o["rows"][0]["smallest"] = "cw" if o["rows"][0]["smallest"] != "cw" else "pgd"
    o["smallest"][o["rows"][0]["model"]]["l2"] = o["rows"][0]["smallest"]
    changed = section_text(format_readme(other), "shallow_vs_deep")
    assert table_rows(changed, o["rows"][0]["model"], "l2")[0][-1] == o["rows"][0]["smallest"]
    assert changed != text


def check_autoattack_row(row, a):
    assert row[1] == pct(a["clean_accuracy"])
    assert row[2:6] == [pct(a["after"][k]) for k in ("apgd-ce", "apgd-t", "fab-t", "square")]
    assert row[5] == pct(a["robust_accuracy"])
    assert row[6:8] == [pct(a["fgsm"]), pct(a["pgd_worst_case"])]


def test_autoattack_numbers_land_in_sections_6_and_7(results):
    readme = format_readme(results)
    adv, reg = results["sections"]["adversarial_training"], results["sections"]["gradient_regularization"]
    six, seven = section_text(readme, "adversarial_training"), section_text(readme, "gradient_regularization")
    pgd_part, trades_part = six.split("### TRADES")
    check_autoattack_row(table_row(pgd_part, "PGD-trained"), adv["autoattack"])
    check_autoattack_row(table_row(pgd_part, "natural"), adv["autoattack_natural"])
    check_autoattack_row(table_row(trades_part, "TRADES"), adv["trades"]["autoattack"])
    check_autoattack_row(table_row(seven, "gradient-regularized"), reg["autoattack"])
    for part, a in ((pgd_part, adv["autoattack"]), (trades_part, adv["trades"]["autoattack"]),
                    (seven, reg["autoattack"])):
        assert f"AutoAttack** at Linf eps {a['eps']:g} on the first {a['n']} test images" in part
        assert ("**Square warning**" in part) is a["square_warning"]
        assert ("No Square warning" in part) is (not a["square_warning"])
        for c in a["sanity"]:
            assert f"{'passed' if c['passed'] else '**FAILED**'}: {c['name']} ({c['detail']})" in part
    # the comparison: every model, its AutoAttack number and both sets of checks
    comp_text = seven.split("side by side")[1]
    comp = reg["comparison"]
    assert list(comp) == ["natural", "pgd-trained", "trades", "gradreg"]
    aa = comp["natural"]["autoattack"]
    assert f"AutoAttack eps {aa['eps']:g} ({aa['n']} images)" in table_rows(comp_text, "model")[0]
    for name, m in comp.items():
        row = table_row(comp_text, name)
        assert row[5] == pct(m["autoattack"]["robust_accuracy"]) and row[6] == pct(m["autoattack"]["pgd_worst_case"])
        assert row[8] == ("all passed" if m["autoattack"]["sanity_passed"] else
                          f"{sum(not c['passed'] for c in m['autoattack']['sanity'])} failed")
    assert "trades" in next(ln for ln in readme.splitlines() if ln.startswith("- training time per model:"))


def test_a_square_warning_is_shown_where_it_was_raised(results):
    warned = copy.deepcopy(results)
    reg = warned["sections"]["gradient_regularization"]
    for a in (reg["autoattack"], reg["comparison"]["gradreg"]["autoattack"]):
        a["square_warning"] = True
        a["sanity"][-1].update(passed=False, detail="Square lowered the white-box result at eps 0.1")
        a["sanity_passed"] = False
    readme = format_readme(warned)
    seven = section_text(readme, "gradient_regularization")
    assert "**Square warning**" in seven and "No Square warning" not in seven
    assert "**FAILED**: black-box Square does not beat the white-box attacks" in seven
    row = table_row(seven.split("side by side")[1], "gradreg")
    assert row[5].endswith("(Square warning)") and row[8] == "1 failed"
    # the other sections keep their own verdict
    assert "**Square warning**" not in section_text(readme, "adversarial_training")


def test_the_run_time_line_says_which_sections_ran_beside(results):
    line = next(ln for ln in format_readme(results).splitlines() if ln.startswith("- run time:"))
    assert "second process" not in line                     # a run without them
    r = copy.deepcopy(results)
    r["beside"] = ["fake", "shallow_vs_deep", "targeted"]
    line = next(ln for ln in format_readme(r).splitlines() if ln.startswith("- run time:"))
    assert line.endswith("; sections 2, 4 and 5 ran in a second process, beside the others"), line
    r["beside"] = ["targeted"]
    line = next(ln for ln in format_readme(r).splitlines() if ln.startswith("- run time:"))
    assert line.endswith("; section 5 ran in a second process, beside the others"), line

"""The evaluation's protocol against the paper and its reference code (issue 16), on the micro
preset: the fine-tuning schedule each preset uses, Table 7's 10-class row as the paper prints
it, before-fine-tuning accuracy with BatchNorm recalibrated, and results keyed by protocol."""

import csv
import json
from dataclasses import replace

import pytest
import torch

from mwt.cli import main
from mwt.experiments import presets
from mwt.experiments.rq3 import finetune_tag


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """RQ2 and RQ3 on the micro preset, sharing their runs."""
    from mwt.data import registry

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    datasets = dict(registry.DATASETS)
    base = tmp_path_factory.mktemp("protocol")
    try:
        for rq in ("rq2", "rq3"):
            assert main(["experiment", rq, "--preset", "micro", "--out", str(base / rq),
                         "--runs", str(base / "runs"), "--device", "cpu", "--no-progress"]) == 0
        yield base
    finally:
        torch.set_num_threads(threads)
        registry.DATASETS.clear()
        registry.DATASETS.update(datasets)


@pytest.fixture(scope="module")
def rq3(micro):
    return micro / "rq3"


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_paper_preset_fine_tunes_as_the_reference_code():
    p = presets.PAPER
    assert (p.finetune_epochs, p.finetune_lr, p.finetune_cosine_span) == (10, 0.05, 2.0)
    assert p.hflip is True  # the reference flips SVHN as well
    assert presets.CPU.finetune_cosine_span >= 1.0
    with pytest.raises(Exception, match="finetune_start"):
        replace(presets.MICRO, finetune_start="half")


def test_rq1_takes_extra_seeds_per_model_and_seeds_overrides_them(tmp_path):
    p = replace(presets.MICRO, rq1_seeds={"vgg16": (0, 1)})
    assert p.rq1_seeds_for("vgg16") == (0, 1) and p.rq1_seeds_for("simcnn") == (0,)
    assert p.with_options(seeds=[3]).rq1_seeds_for("vgg16") == (3,)
    assert presets.CPU.rq1_seeds_for("resnet18") == (0, 1) and presets.CPU.subtasks >= 5
    # RQ1 trains both seeds of vgg16 and one of simcnn, and Table 2 says how many it averaged
    from mwt.data import registry
    from mwt.experiments.common import run_experiment

    datasets = dict(registry.DATASETS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        presets.register_micro_dataset()
        run_experiment("rq1", preset=replace(p, baseline_models=()), out=tmp_path / "rq1",
                       runs=tmp_path / "runs", device="cpu", progress=False)
    finally:
        torch.set_num_threads(threads)
        registry.DATASETS.clear()
        registry.DATASETS.update(datasets)
    table2 = {r["model"]: r for r in _rows(tmp_path / "rq1" / "table2.csv")
              if r["source"] == "ours"}
    assert table2["vgg16"]["seeds"] == "2" and table2["simcnn"]["seeds"] == "1"
    assert float(table2["vgg16"]["modular_acc_std"]) >= 0


def test_table7_prints_the_papers_ten_class_row_beside_ours(rq3):
    table7 = _rows(rq3 / "table7.csv")
    ours = [r for r in table7 if r["source"] == "ours" and r["m"] == "10"]
    kinds = sorted(r["module"] for r in ours)
    assert kinds == ["fine-tuned mixed module", "modular model (the paper's form)"]
    whole = next(r for r in ours if r["module"].startswith("modular model"))
    run = next((rq3.parent / "runs").glob("vgg16-*-modular-*"))
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert float(whole["module_acc"]) == pytest.approx(100 * last["test_acc"], abs=1e-6)
    std = next((rq3.parent / "runs").glob("vgg16-*-standard-*"))
    std_last = [json.loads(x) for x in (std / "metrics.jsonl").read_text().splitlines()][-1]
    assert float(whole["loss"]) == pytest.approx(100 * (std_last["test_acc"] - last["test_acc"]),
                                                 abs=1e-6)
    paper_ten = [r for r in table7 if r["source"] != "ours" and r["m"] == "10"]
    assert paper_ten and all(r["module"] == "modular model (Table 2)" for r in paper_ten)
    assert "the 10-class \"module\" is the modular model itself" in (rq3 / "table7.md").read_text()


def test_before_fine_tuning_reports_recalibrated_modules(rq3):
    rows = _rows(rq3 / "before_finetune.csv")
    assert {"acc_removed_recal", "acc_kept_recal", "acc_folded_recal"} <= set(rows[0])
    assert all(r["acc_folded_recal"] != "" for r in rows if r["source"] == "ours")


def test_results_are_keyed_by_the_fine_tuning_protocol(rq3):
    tag = finetune_tag(presets.MICRO)
    assert tag == "ft-e1-lr0.01-span1-removed-min2"
    files = list((rq3 / "reuse").rglob("*.json"))
    assert files and all(f.name.endswith(f"-{tag}.json") for f in files)
    other = replace(presets.MICRO, finetune_cosine_span=2.0, finetune_recalibrate=True)
    assert finetune_tag(other) == "ft-e1-lr0.01-span2-removed-bn-min2"


def test_table4_gives_the_papers_form_of_the_search_time_beside_ours(micro):
    rows = _rows(micro / "rq2" / "table4.csv")
    ours = next(r for r in rows if r["source"] == "ours")
    saved = json.loads(next((micro / "runs").rglob("cnnsplitter.json")).read_text())["results"]
    per_generation = saved["seconds"]["generations"] / saved["generations_run"]
    assert float(ours["cnnsplitter_best_generation"]) == saved["best_generation"]
    assert float(ours["cnnsplitter_paper_form_s"]) == pytest.approx(
        per_generation * saved["best_generation"], rel=1e-6, abs=1e-9)
    assert float(ours["cnnsplitter_s"]) == pytest.approx(saved["search_seconds"], rel=1e-6)
    published = {(r["model"], r["dataset"]): r for r in rows if r["source"] != "ours"}
    simcnn = published[("simcnn", "cifar10")]
    assert float(simcnn["cnnsplitter_paper_form_s"]) == 83 * 123
    assert float(simcnn["cnnsplitter_best_generation"]) == 123

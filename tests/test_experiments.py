"""The Omniglot study's quick mode runs end to end on the real data (skipped without it)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "experiments" / "omniglot"


def test_omniglot_study_quick_mode_runs_end_to_end(omniglot_zip, tmp_path):
    data = omniglot_zip("images_background_small1.zip").parent
    omniglot_zip("images_background_small2.zip")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(
        ["bash", str(STUDY / "run.sh"), "--quick", "--out", str(tmp_path), "--data", str(data)],
        check=True,
        cwd=ROOT,
        env=env,
    )
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["settings"] == ["5w1s", "5w5s", "20w1s", "20w5s", "20w1s-within"]
    assert report["baseline"] == "linear-probe" and len(report["methods"]) == 22
    assert {
        "maml-10steps",
        "maml-pretrained-10steps",
        "reptile-30steps",
        "protomaml-pretrained",
        "protomaml-protonet",
        "maml20-pretrained-10steps",
    } <= set(report["methods"])
    for key in report["settings"]:
        assert set(report["results"][key]) == set(report["methods"])
    for manifest in ("small1_split.json", "small2_novel.json"):  # the committed manifests are reproduced
        assert json.loads((tmp_path / manifest).read_text()) == json.loads((STUDY / manifest).read_text())
    timings = (tmp_path / "timings.tsv").read_text().split()
    assert "evaluate" in timings and "maml-pretrained" in timings
    # the test-step sweep on the validation characters runs on a finished run
    sweep = [sys.executable, str(STUDY / "test_steps_on_val.py"), "--run", str(tmp_path / "reptile")]
    sweep += ["--ways", "5", "--shots", "1", "--steps", "1", "2", "--lrs", "0.01", "0.1", "--episodes", "2"]
    lines = subprocess.run(sweep, check=True, cwd=ROOT, capture_output=True, text=True).stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        f"5-way 1-shot, {steps} test steps of lr {lr}" for lr in (0.01, 0.1) for steps in (1, 2)
    ]
    # the collapse diagnosis re-runs evaluation episodes of full-finetune and gets their scores again
    diagnose = [sys.executable, str(STUDY / "finetune_collapse.py"), "--run", str(tmp_path / "pretrain")]
    diagnose += ["--setting", "5w1s", "--episodes", "0", "1", "--epochs", "1"]
    diagnose += ["--data-root", str(data / "images_background_small2.zip"), "--manifest"]
    diagnose += [str(tmp_path / "small2_novel.json"), "q_query=2"]
    out = subprocess.run(diagnose, check=True, cwd=ROOT, capture_output=True, text=True).stdout.splitlines()
    with open(tmp_path / "eval" / "results.csv") as f:
        rows = [r for r in csv.DictReader(f) if (r["method"], r["setting"]) == ("full-finetune", "5w1s")]
    scores = [round(100 * float(r["accuracy"]), 2) for r in sorted(rows, key=lambda r: int(r["episode"]))]
    assert out[0] == "5w1s, episodes [0, 1]" and out[1].startswith(f"   1 epochs  accuracy % {scores}")
    # an unfinished evaluation (every chunk saved but scratch's): started again, run.sh resumes it
    finished = torch.load(tmp_path / "eval" / "scores.pt", weights_only=True)
    saved = {
        key: {
            label: {"chunks": {0: {m: v for m, v in entry.items() if m != "seconds"}}, "seconds": 1.0}
            for label, entry in by_label.items()
            if label != "scratch"
        }
        for key, by_label in finished.items()
    }
    saved["5w1s"]["linear-probe"]["chunks"][0]["accuracy"] = torch.full((2,), 0.125)  # proves it is read
    (tmp_path / "eval" / "partial").mkdir()
    torch.save(saved, tmp_path / "eval" / "partial" / "rank0.pt")
    (tmp_path / "eval" / "scores.pt").unlink()
    quick = ["bash", str(STUDY / "run.sh"), "--quick", "--out", str(tmp_path), "--data", str(data)]
    subprocess.run(quick, check=True, cwd=ROOT, env=env)
    resumed = torch.load(tmp_path / "eval" / "scores.pt", weights_only=True)
    assert resumed["5w1s"]["linear-probe"]["accuracy"].tolist() == [0.125, 0.125]
    for key in report["settings"]:
        assert torch.equal(resumed[key]["scratch"]["accuracy"], finished[key]["scratch"]["accuracy"])
    assert "evaluate (resumed)" in (tmp_path / "timings.tsv").read_text()
    # again, for two methods: the runs are finished, and the last evaluation's scores are reused
    subprocess.run(
        ["bash", str(STUDY / "run.sh"), "--quick", "--out", str(tmp_path), "--data", str(data)]
        + ["--methods", "linear-probe", "--methods", "scratch", "--reuse", str(tmp_path / "eval.prev")],
        check=True,
        cwd=ROOT,
        env=env,
    )
    again = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert again["methods"] == ["linear-probe", "scratch"]
    for key in report["settings"]:
        assert again["reused"][key] == {m: str(tmp_path / "eval.prev") for m in again["methods"]}
        assert again["results"][key]["scratch"]["accuracy"] == report["results"][key]["scratch"]["accuracy"]

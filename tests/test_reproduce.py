"""tools/reproduce.py: collecting runs into md/csv/png, commands, released-model checks, smoke."""

import csv
import importlib.util
import json
import os

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "reproduce", os.path.join(REPO, "tools", "reproduce.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reproduce = _load_tool()


def _fake_run(root, name, row, results=None, metrics_lines=None, kind="trained"):
    d = root / name
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({**{k: row[k] for k in
                                              ("task", "backbone", "config", "dataset")},
                                           "kind": kind}))  # fmt: skip
    if results is not None:
        (d / "results.json").write_text(json.dumps({"weights": "x", "results": results}))
    if metrics_lines is not None:
        (d / "metrics.json").write_text("\n".join(json.dumps(m) for m in metrics_lines) + "\n")


def _row(task, backbone):
    return next(r for r in reproduce.paper_rows() if (r["task"], r["backbone"]) == (task, backbone))


def test_collect_fabricated_runs_writes_md_csv_png(tmp_path):
    root = tmp_path / "runs"
    _fake_run(root, "mr50", _row("Mask R-CNN", "R-50"),
              results={"bbox": {"AP": 39.9}, "segm": {"AP": 36.0}})  # fmt: skip
    _fake_run(root, "ms50", _row("Mask R-CNN", "S-50"),
              results={"bbox": {"AP": 42.85}, "segm": {"AP": 38.2}})  # fmt: skip
    # A plain train_net run without results.json: the last eval scalars of metrics.json count.
    _fake_run(root, "dr50", _row("DeepLabV3", "R-50"), metrics_lines=[
        {"iteration": 10, "total_loss": 1.0},
        {"iteration": 19, "sem_seg/mIoU": 40.0, "sem_seg/pACC": 79.0},
        {"iteration": 39, "sem_seg/mIoU": 42.0, "sem_seg/pACC": 80.5},
    ])  # fmt: skip
    _fake_run(root, "ds50", _row("DeepLabV3", "S-50"),
              results={"sem_seg": {"mIoU": 45.0, "pACC": 81.25}})  # fmt: skip
    lines = reproduce.collect(str(root), str(tmp_path / "table"))
    by = {(line["task"], line["backbone"], line["metric"]): line for line in lines}
    assert len(lines) == 8
    assert by[("Mask R-CNN", "S-50", "box_AP")]["measured"] == 42.85
    assert by[("Mask R-CNN", "S-50", "box_AP")]["measured_gain"] == pytest.approx(2.95)
    assert by[("Mask R-CNN", "S-50", "mask_AP")]["paper_gain"] == pytest.approx(38.14 - 36.05)
    assert by[("DeepLabV3", "R-50", "mIoU")]["measured"] == 42.0
    assert by[("DeepLabV3", "S-50", "pixAcc")]["measured_gain"] == pytest.approx(0.75)
    assert by[("DeepLabV3", "R-50", "mIoU")]["measured_gain"] is None  # baselines have none
    out = tmp_path / "table"
    md = (out / "results.md").read_text()
    assert "| Mask R-CNN | S-50 | S-50 | box_AP | 42.85 | 42.81 | 2.95 | 2.84 |" in md
    assert "TOY" not in md
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 8 and rows[0]["paper"]
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_collect_labels_toy_runs_and_rejects_empty_root(tmp_path):
    _fake_run(tmp_path / "r", "a", _row("Faster R-CNN", "S-50"),
              results={"bbox": {"AP": 3.0}}, kind="toy")  # fmt: skip
    reproduce.collect(str(tmp_path / "r"))
    assert reproduce.TOY_LABEL in (tmp_path / "r" / "results.md").read_text()
    with pytest.raises(FileNotFoundError, match="nothing to collect"):
        reproduce.collect(str(tmp_path / "empty"))


def test_train_dry_run_prints_the_8_gpu_commands(capsys):
    assert reproduce.main(["--train", "--dry-run", "--output", "out"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(reproduce.paper_rows(beyond=True)) == 32 + 6
    assert (
        "python tools/train_net.py --config-file "
        "configs/COCO-Detection/faster_rcnn_ResNeSt_50_FPN_syncbn_range-scale_1x.yaml "
        "--num-gpus 8 OUTPUT_DIR out/train/faster_rcnn_ResNeSt_50_FPN_syncbn_range-scale_1x"
    ) in lines
    # Beyond the paper: the ResNeSt new baselines, LazyConfig files on lazyconfig_train_net.
    assert (
        "python tools/lazyconfig_train_net.py --config-file "
        "configs/lazy/new_baselines/mask_rcnn_ResNeSt_101_FPN_400ep_LSJ.py "
        "--num-gpus 8 train.output_dir=out/train/mask_rcnn_ResNeSt_101_FPN_400ep_LSJ"
    ) in lines


def test_beyond_paper_rows_show_detectron2_reference(tmp_path):
    row = next(r for r in reproduce.paper_rows(beyond=True) if r["task"] == "Mask R-CNN LSJ 400ep"
               and r["backbone"] == "S-101")  # fmt: skip
    assert row["metrics"] == {"box_AP": 48.9, "mask_AP": 43.7}  # detectron2's R-101, 400 ep
    assert os.path.isfile(os.path.join(REPO, "configs", row["config"]))
    _fake_run(tmp_path / "r", "s101", row, results={"bbox": {"AP": 49.5}, "segm": {"AP": 44.0}})
    lines = reproduce.collect(str(tmp_path / "r"), str(tmp_path / "t"))
    assert {(line["metric"], line["paper"], line["reference"]) for line in lines} == {
        ("box_AP", 48.9, row["reference"]),
        ("mask_AP", 43.7, row["reference"]),
    }
    assert "a reference, not a ResNeSt result" in (tmp_path / "t" / "results.md").read_text()


@pytest.mark.parametrize("lazy", [False, True], ids=["yaml", "lazy_twin"])
def test_eval_released_says_what_is_missing(lazy, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("RESNEST_DENSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RESNEST_DENSE_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("RESNEST_DENSE_REGISTRY", raising=False)
    caplog.set_level("INFO", logger="reproduce")
    # Not evaluated (no dataset, no weights): exit 1, saying what is missing, nothing written.
    out = tmp_path / "o"
    assert reproduce.main(["--eval-released", "--only", "deeplab_resnest50_ade",
                           "--output", str(out)] + ["--lazy"] * lazy) == 1  # fmt: skip
    assert not out.exists()
    text = caplog.text
    config = "ADE20K-SemanticSegmentation/deeplabv3_S_50_OS8_syncbn_120ep"
    run = out / "released" / "deeplab_resnest50_ade"
    if lazy:
        assert (
            f"tools/lazyconfig_train_net.py --config-file configs/lazy/{config}.py --eval-only "
            "--num-gpus 1 train.init_checkpoint=resnest://deeplab_resnest50_ade "
            f"train.output_dir={run}"
        ) in text
    else:
        assert (
            f"tools/train_net.py --config-file configs/{config}.yaml --eval-only --num-gpus 1 "
            f"MODEL.WEIGHTS resnest://deeplab_resnest50_ade OUTPUT_DIR {run}"
        ) in text
    assert "deeplab_resnest50_ade-2225f09d.zip" in text  # where to get the weights
    assert os.path.join(str(tmp_path / "cache"), "deeplab_resnest50_ade-2225f09d.pth") in text
    assert "Dataset 'ade20k_sem_seg_val'" in text and "sem_seg_root" in text
    assert "Evaluated 0 of 1" in text


def test_lazy_flag_is_for_eval_released_only(capsys):
    with pytest.raises(SystemExit) as e:
        reproduce.main(["--train", "--dry-run", "--lazy"])
    assert e.value.code == 2
    assert "--lazy applies to --eval-released" in capsys.readouterr().err


def test_bad_only_pattern_is_one_line_error(capsys):
    with pytest.raises(SystemExit) as e:
        reproduce.main(["--train", "--dry-run", "--only", "faster_rcnn[("])
    assert e.value.code == 2
    assert "--only 'faster_rcnn[(' is not a valid regular expression" in capsys.readouterr().err


def test_eval_released_dry_run_downloads_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNEST_DENSE_CACHE", str(tmp_path / "cache"))
    import urllib.request

    def no_network(*args, **kwargs):
        raise AssertionError("--dry-run opened a URL")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    assert reproduce.main(["--eval-released", "--dry-run", "--output", str(tmp_path / "o")]) == 0
    assert not (tmp_path / "cache").exists() and not (tmp_path / "o").exists()


def test_smoke_segmentation_pair_end_to_end(tmp_path, monkeypatch):
    """The DeepLabV3 R/S pair of the smoke matrix: train, eval, table (a few seconds)."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    assert reproduce.main(["--smoke", "--only", "deeplabv3", "--iters", "4",
                           "--output", str(tmp_path)]) == 0  # fmt: skip
    out = tmp_path / "smoke"
    md = (out / "results.md").read_text()
    for run in ("deeplabv3_R_50_OS8_syncbn_120ep", "deeplabv3_S_50_OS8_syncbn_120ep"):
        results = json.load(open(out / run / "results.json"))["results"]["sem_seg"]
        # The table reports the run's own numbers (measured, then paper, per row).
        backbone = "S-50 | S-14" if "_S_" in run else "R-50 | R-50 (width 16)"
        for metric, key in (("mIoU", "mIoU"), ("pixAcc", "pACC")):
            assert f"| DeepLabV3 | {backbone} | {metric} | {results[key]:.2f} |" in md, run
        # The S run trained split attention; the R baseline has none.
        state = torch.load(out / run / "model_final.pth", weights_only=False)["model"]
        assert any(".conv2.fc1." in k for k in state) == ("_S_" in run), run
    assert reproduce.TOY_LABEL in md
    assert (out / "results.csv").is_file() and (out / "results.png").is_file()


@pytest.mark.slow
def test_smoke_full_matrix(tmp_path, monkeypatch):
    """All five tasks x ResNet/ResNeSt at toy scale (the CI acceptance run)."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    assert reproduce.main(["--smoke", "--iters", "8", "--output", str(tmp_path)]) == 0
    lines = list(csv.DictReader(open(tmp_path / "smoke" / "results.csv")))
    tasks = {line["task"] for line in lines}
    assert tasks == {"Faster R-CNN", "Cascade R-CNN", "Mask R-CNN", "Cascade Mask R-CNN",
                     "DeepLabV3"}  # fmt: skip
    # Every cell holds its run's evaluation; ResNeSt rows trained split attention, ResNet none.
    metrics = {"box_AP": ("bbox", "AP"), "mask_AP": ("segm", "AP"),
               "mIoU": ("sem_seg", "mIoU"), "pixAcc": ("sem_seg", "pACC")}  # fmt: skip
    for run in (tmp_path / "smoke").iterdir():
        if not (run / "run.json").is_file():
            continue
        info = json.load(open(run / "run.json"))
        results = json.load(open(run / "results.json"))["results"]
        state = torch.load(run / "model_final.pth", weights_only=False)["model"]
        assert any(".conv2.fc1." in k for k in state) == info["backbone"].startswith("S-")
        cells = [x for x in lines if (x["task"], x["backbone"]) == (info["task"], info["backbone"])]
        assert cells, info
        for line in cells:
            task, key = metrics[line["metric"]]
            assert float(line["measured"]) == round(results[task][key], 2), (info, line)


def test_collect_reports_the_panoptic_row_with_pq(tmp_path):
    row = _row("Panoptic FPN", "S-200")
    results = {"bbox": {"AP": 50.9}, "segm": {"AP": 43.7}, "panoptic_seg": {"PQ": 47.85}}
    _fake_run(tmp_path / "r", "p", row, results=results, kind="released")
    by = {
        (r["task"], r["backbone"], r["metric"]): r for r in reproduce.collect(str(tmp_path / "r"))
    }
    assert by[("Panoptic FPN", "S-200", "PQ")]["measured"] == 47.85
    assert by[("Panoptic FPN", "S-200", "PQ")]["paper"] == 47.90
    assert by[("Panoptic FPN", "S-200", "box_AP")]["measured_gain"] is None  # no ResNet row
    assert "| Panoptic FPN | S-200 |" in (tmp_path / "r" / "results.md").read_text()

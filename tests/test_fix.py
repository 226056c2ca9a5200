"""Acting on the issues: `denoise issues`' columns, `denoise fix` and the `csv:` manifest it writes.

Two of the user's own data sets with 30 % wrong labels, made here: digits as an ``npz:`` file whose ``split``
array alternates train and test rows, and a folder of small images with 30 % of the files in another class's
folder. Each goes run -> issues -> fix -> train.
"""

import contextlib
import csv
import io
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from denoise.cli.data import load_data
from denoise.cli.files.stage_files import load_npz
from denoise.core.suspects import class_summary, issue_order, label_score

COLORS = {"blue": (40, 40, 200), "green": (40, 200, 40), "red": (200, 40, 40), "yellow": (200, 200, 40)}


def cli(*args) -> str:
    """``denoise ARGS...`` in this process (for module fixtures, which cannot use ``denoise``); its stdout."""
    from denoise.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        patch.setattr(sys, "argv", ["denoise", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code
    assert code == 0, err.getvalue()
    return out.getvalue()


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_csv(path, rows, columns=None):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def cleaned(work, model, data):
    """``denoise run`` of ``model`` on ``data`` in ``work``: the issues CSV of its last round, suggested by that
    round's fine-tuned model, and the run's record."""
    run = json.loads(cli("run", "--model", model, "--data", data, "--workdir", work, "--json"))
    last = work / f"round{len(run['rounds'])}"
    issues = work / "issues.csv"
    cli("issues", "--scores", last / "scores.npz", "--partition", last / "partition.npz", "--data", data,
        "--model", last / "clean.safetensors", "--out", issues)
    return issues, run


@pytest.fixture(scope="module")
def npz_run(tmp_path_factory):
    """digits as an npz: file with interleaved splits (even rows train), 30 % of the train rows given another
    label at random (symmetric); a model trained on it to memorize, cleaned by `denoise run`."""
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("npz")
    digits = load_digits()
    x = (digits.data / 16.0).reshape(-1, 1, 8, 8).astype(np.float32)
    true = digits.target.astype(np.int64)
    split = np.where(np.arange(len(true)) % 2 == 0, "train", "test")
    rng = np.random.default_rng(0)
    train = np.flatnonzero(split == "train")
    wrong = rng.choice(train, size=int(0.3 * len(train)), replace=False)
    y = true.copy()
    y[wrong] = (true[wrong] + rng.integers(1, 10, size=len(wrong))) % 10
    data = folder / "data.npz"
    np.savez(data, x=x, y=y, split=split, classes=np.array([f"digit {k}" for k in range(10)]))
    model = folder / "noisy.safetensors"
    cli("train", "--data", f"npz:{data}", "--arch", "mlp", "--epochs", 300, "--out", model)
    issues, run = cleaned(folder / "work", model, f"npz:{data}")
    return {"folder": folder, "data": data, "true": true, "y": y, "split": split, "model": model, "issues": issues,
            "run": run}


def make_images(root, per_class, seed=0, wrong_share=0.3):
    """``per_class`` 16 x 16 images of each colour (a shaded patch: separable by colour, alike in texture), PNG
    and JPEG alternating; ``wrong_share`` of them saved in another colour's folder. Returns path -> true class."""
    rng = np.random.default_rng(seed)
    names = sorted(COLORS)
    yy, xx = np.mgrid[0:16, 0:16] / 15.0
    truth = {}
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        for i in range(per_class):
            shade = 0.8 + 0.2 * (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))
            pixels = shade[..., None] * np.array(COLORS[name]) + rng.normal(0, 2, (16, 16, 3))
            folder = names[(k + rng.integers(1, len(names))) % len(names)] if rng.random() < wrong_share else name
            file = f"{folder}/{name}{i:03d}.{'png' if i % 2 else 'jpg'}"
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / file, quality=95)
            truth[file] = name
    return truth


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """An imagefolder: of 4 x 60 images, 30 % in the wrong class folder; a model trained on it, cleaned."""
    folder = tmp_path_factory.mktemp("images")
    truth = make_images(folder / "images", 60)
    data = f"imagefolder:{folder / 'images'}?size=16"
    model = folder / "noisy.safetensors"
    cli("train", "--data", data, "--arch", "mlp", "--epochs", 100, "--out", model)
    issues, run = cleaned(folder / "work", model, data)
    return {"folder": folder, "root": folder / "images", "data": data, "truth": truth, "model": model,
            "issues": issues, "run": run}


def test_label_score_is_a_rank_blend_that_never_reaches_0_or_1():
    prob = np.array([0.9, 1e-300, 1e-9, 0.2, 0.2, 0.9, 1.0, 1.0])
    loss = np.array([0.1, 0.5, 2.0, 1.0, 3.0, 0.1, 0.0, 0.2])
    memorized = label_score(prob, loss, fit=1.0)  # the posterior's mid-rank percentile alone, ties kept
    assert memorized.tolist() == [x / 16 for x in (10, 1, 3, 6, 6, 10, 14, 14)]
    generalizing = label_score(prob, loss, fit=0.5)  # mean with the loss's percentile
    by_prob = np.array([10, 1, 3, 7, 5, 10, 15, 13]) / 16  # ties of prob ordered by descending loss
    by_loss = np.array([12, 7, 3, 5, 1, 12, 15, 9]) / 16
    assert np.allclose(generalizing, (by_prob + by_loss) / 2)
    assert ((generalizing > 0) & (generalizing < 1)).all() and ((memorized > 0) & (memorized < 1)).all()
    order = issue_order(generalizing, loss)
    assert (np.diff(generalizing[order]) >= 0).all() and order[:2].tolist() == [4, 2] and order[-1] == 6
    assert issue_order(memorized, loss).tolist()[-2:] == [7, 6], "equal scores: the higher loss first"
    assert label_score(np.zeros(0), np.zeros(0), 0.5).shape == (0,)
    summary = class_summary(np.array([0, 0, 0, 1, 2]), np.array([1, 1, 2, 1, 2]), np.array([1, 1, 1, 0, 0], bool), 4)
    assert summary["size"].tolist() == [3, 1, 1, 0] and summary["flagged"].tolist() == [3, 0, 0, 0]
    assert summary["noise_rate"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert summary["swap_to"].tolist() == [1, -1, -1, -1] and summary["swap_count"].tolist() == [2, 0, 0, 0]


@pytest.mark.slow
def test_label_score_ranks_the_wrong_labels_at_least_as_well_as_the_posterior(npz_run):
    """In every round of the run: label_score's AUROC against the injected truth is at least clean_prob's, and
    no sample sits at exactly 0 or 1 (the posterior: most of them)."""
    train = npz_run["split"] == "train"
    wrong = (npz_run["y"] != npz_run["true"])[train]
    lines = []
    for number in range(1, len(npz_run["run"]["rounds"]) + 1):
        round = npz_run["folder"] / "work" / f"round{number}"
        split, _ = load_npz(round / "partition.npz", "partition")
        scores, _ = load_npz(round / "scores.npz", "scores", on_disk=("attribution",))
        fit = np.mean(scores["predicted"] == scores["label"])
        prob, score = split["clean_prob"], label_score(split["clean_prob"], scores["loss"], fit)
        ours, posterior = roc_auc_score(wrong, -score), roc_auc_score(wrong, -prob)
        saturated, at_ends = np.mean((prob == 0) | (prob == 1)), np.mean((score == 0) | (score == 1))
        lines.append(f"round {number} (fits {fit:.1%}): AUROC label_score {ours:.4f}, clean_prob {posterior:.4f}; "
                     f"at exactly 0 or 1: label_score {at_ends:.1%}, clean_prob {saturated:.1%}")
        assert ours >= posterior, lines[-1]
        assert at_ends < 0.5, lines[-1]
    print("\n" + "\n".join(lines))


@pytest.mark.slow
def test_npz_round_trip_with_interleaved_splits(npz_run, tmp_path):
    run, data, true = npz_run, npz_run["data"], npz_run["true"]
    rows = read_csv(run["issues"])
    train = run["split"] == "train"
    assert {"row", "path", "index", "given_label", "suggested_label", "suggested_prob", "label_score",
            "is_label_issue", "clean_prob", "loss"} <= set(rows[0])
    row = np.array([int(r["row"]) for r in rows])
    assert (row % 2 == 0).all(), "rows of the file: the train rows are the even ones"
    assert (row == 2 * np.array([int(r["index"]) for r in rows])).all()
    assert [r["given_label"] for r in rows] == [f"digit {k}" for k in run["y"][row]]
    scores = [float(r["label_score"]) for r in rows]
    assert scores == sorted(scores) and all(0 < s < 1 for s in scores)
    assert all(r["path"] == "" and r["is_label_issue"] == "True" for r in rows)
    summary = read_csv(run["issues"].with_name("issues.summary.csv"))
    assert [s["class"] for s in summary] == [f"digit {k}" for k in range(10)]
    assert sum(int(s["flagged"]) for s in summary) == len(rows)

    fixed = tmp_path / "fixed.npz"
    result = json.loads(cli("fix", "--issues", run["issues"], "--data", f"npz:{data}", "--out", fixed, "--json"))
    assert result["data"] == f"npz:{fixed}" and result["dropped"] == 0
    assert result["relabeled"] + result["kept"] == len(rows)
    before, after = np.load(data), np.load(fixed)
    assert sorted(after.files) == sorted(before.files)
    assert np.array_equal(after["x"], before["x"]) and np.array_equal(after["split"], before["split"])
    assert np.array_equal(after["classes"], before["classes"])
    suggested = np.array([int(r["suggested_label"].split()[-1]) for r in rows])
    assert np.array_equal(after["y"][row], suggested), "every listed row relabeled, at its own row"
    untouched = np.ones(len(true), dtype=bool)
    untouched[row] = False
    assert np.array_equal(after["y"][untouched], before["y"][untouched])
    accuracy_before, accuracy_after = (np.mean(y[train] == true[train]) for y in (before["y"], after["y"]))
    assert accuracy_before < 0.72 and accuracy_after > 0.9, (accuracy_before, accuracy_after)

    model = tmp_path / "fixed.safetensors"
    cli("train", "--data", result["data"], "--arch", "mlp", "--epochs", 100, "--out", model)
    evaluate = [json.loads(cli("evaluate", "--model", m, "--data", f"npz:{data}", "--json"))["accuracy"]
                for m in (run["model"], model)]
    assert evaluate[1] > evaluate[0] + 0.05, evaluate


@pytest.mark.slow
def test_imagefolder_round_trip(folder_run, tmp_path):
    run, truth = folder_run, folder_run["truth"]
    rows = read_csv(run["issues"])
    assert rows and all(r["path"] in truth for r in rows)
    listing = sorted(truth, key=lambda p: (p.split("/")[0], p))
    assert all(listing[int(r["row"])] == r["path"] for r in rows), "row: the position in the sorted listing"
    assert all(r["given_label"] == r["path"].split("/")[0] for r in rows)

    fixed = tmp_path / "out" / "fixed.csv"
    fixed.parent.mkdir()
    result = json.loads(cli("fix", "--issues", run["issues"], "--data", run["data"], "--out", fixed, "--json"))
    assert result["data"] == f"csv:{fixed}?size=16"
    manifest = read_csv(fixed)
    assert list(manifest[0]) == ["path", "label"] and len(manifest) == len(truth)
    by_path = {(fixed.parent / m["path"]).resolve(): m["label"] for m in manifest}
    files = [(run["root"] / path).resolve() for path in listing]
    assert list(by_path) == files, "every file, in the folder's order, relative to the manifest"
    for r in rows:  # each relabel lands on its own file
        assert by_path[(run["root"] / r["path"]).resolve()] == r["suggested_label"]
    accuracy_before = np.mean([path.split("/")[0] == truth[path] for path in listing])
    accuracy_after = np.mean([by_path[(run["root"] / path).resolve()] == truth[path] for path in listing])
    assert accuracy_before < 0.75 and accuracy_after > 0.9, (accuracy_before, accuracy_after)

    fixed_data = load_data(result["data"], "train")
    assert fixed_data.classes == sorted(COLORS) and fixed_data.transform == load_data(run["data"]).transform
    model = tmp_path / "fixed.safetensors"
    cli("train", "--data", result["data"], "--arch", "mlp", "--epochs", 30, "--out", model)
    cli("evaluate", "--model", run["model"], "--data", result["data"], "--split", "train")  # the folder's model fits it


def test_csv_and_imagefolder_give_the_same_data(tmp_path):
    make_images(tmp_path / "images" / "train", 4, seed=1, wrong_share=0)
    make_images(tmp_path / "images" / "test", 3, seed=2, wrong_share=0)
    (tmp_path / "images" / "train" / "notes.txt").write_text("not an image")  # neither reader takes it
    root = tmp_path / "images"
    entries = []
    for split in ("train", "test"):
        listing = load_data(f"imagefolder:{root}?size=12", split).origin.paths
        entries += [{"label": p.split("/")[1], "note": "ignored", "split": split, "path": f"images/{p}"}
                    for p in listing]
    write_csv(tmp_path / "manifest.csv", entries[::-1])  # any row order, extra columns
    for split in ("train", "test"):
        folder = load_data(f"imagefolder:{root}?size=12", split)
        manifest = load_data(f"csv:{tmp_path / 'manifest.csv'}?size=12", split)
        order = np.argsort([p.removeprefix("images/") for p in manifest.origin.paths])
        assert manifest.classes == folder.classes and manifest.transform == folder.transform
        assert [manifest.origin.paths[k].removeprefix("images/") for k in order] == folder.origin.paths
        assert torch.equal(manifest.labels[order], folder.labels)
        assert torch.equal(manifest.inputs[:][order], folder.inputs[:])
        rows = manifest.origin.rows
        assert all(entries[::-1][r]["split"] == split for r in rows) and len(set(rows)) == len(rows)
    # without a split column both splits are the whole manifest, rows in file order; integer labels by value
    write_csv(tmp_path / "numbers.csv", [{"path": e["path"], "label": str(10 - k % 3 * 4)}
                                         for k, e in enumerate(entries)])
    numbers = load_data(f"csv:{tmp_path / 'numbers.csv'}", "test")
    assert numbers.classes == ["2", "6", "10"] and numbers.origin.rows.tolist() == list(range(len(entries)))
    assert numbers.inputs.shape[1:] == (3, 32, 32), "imagefolder's default size"


@pytest.mark.parametrize("text, problem", [
    ("", "is empty"),
    ("file,label\nimages/train/red/red000.jpg,red\n", "has no column 'path'"),
    ("row,path,given_label\n1,images/train/red/red000.jpg,red\n", "has no column 'label'"),
    ("path,label\n", "no data rows"),
    ("path,label\nimages/train/red/red000.jpg,red\n,red\n", "row 1 (line 3): empty path"),
    ("path,label\nimages/train/red/red000.jpg,\n", "row 0 (line 2): empty label"),
    ("path,label,split\nimages/train/red/red000.jpg,red,val\n", "split must be train or test, not 'val'"),
    ("path,label\nimages/train/red/red000.jpg,red\nimages/red/gone.png,red\n", "row 1 (line 3): images/red/gone.png"),
])
def test_a_bad_manifest_is_one_line_naming_it(denoise, tmp_path, text, problem):
    make_images(tmp_path / "images" / "train", 1, wrong_share=0)
    (tmp_path / "m.csv").write_text(text)
    result = denoise("train", "--data", f"csv:{tmp_path / 'm.csv'}", "--arch", "mlp", "--epochs", 1,
                     "--out", tmp_path / "m.safetensors")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
    assert str(tmp_path / "m.csv") in result.err and problem in result.err, result.err
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.slow
def test_a_hand_edited_issues_csv_reads_back(folder_run, denoise, tmp_path):
    """One label corrected by hand (action relabel, to a class the person chose), one row dropped, the rest
    kept: fix applies just that, and --data csv: reads it back."""
    rows = read_csv(folder_run["issues"])
    chosen, gone = rows[0], rows[1]
    other = next(name for name in sorted(COLORS) if name not in (chosen["given_label"], chosen["suggested_label"]))
    edited = [{**r, "action": "keep"} for r in rows]
    edited[0].update(action="relabel", suggested_label=other)
    edited[1].update(action="DROP")
    write_csv(tmp_path / "edited.csv", edited)
    out = tmp_path / "fixed.csv"
    result = denoise("fix", "--issues", tmp_path / "edited.csv", "--data", folder_run["data"], "--out", out, "--json")
    assert result.code == 0, result.err
    assert {k: result.json[k] for k in ("listed", "relabeled", "dropped", "kept")} == {
        "listed": len(rows), "relabeled": 1, "dropped": 1, "kept": len(rows) - 2}
    before = load_data(folder_run["data"], "train")
    after = load_data(result.json["data"], "train")
    labels = {p: before.classes[int(k)] for p, k in zip(before.origin.paths, before.labels)}
    read = {str((out.parent / p).resolve().relative_to(folder_run["root"].resolve())): after.classes[int(k)]
            for p, k in zip(after.origin.paths, after.labels)}
    assert set(labels) - set(read) == {gone["path"]}
    assert read.pop(chosen["path"]) == other and labels.pop(chosen["path"]) == chosen["given_label"]
    del labels[gone["path"]]
    assert read == labels, "nothing else changed"
    # thresholds: no row has a label_score of at most 0, so nothing is relabeled
    none = denoise("fix", "--issues", folder_run["issues"], "--data", folder_run["data"], "--out", out, "--max-score",
                   0, "--json")
    assert none.code == 0 and none.json["relabeled"] == 0 and none.json["kept"] == len(rows), none.err
    some = denoise("fix", "--issues", folder_run["issues"], "--data", folder_run["data"], "--out", out,
                   "--min-suggested-prob", 0.99, "--json").json
    assert some["relabeled"] == sum(float(r["suggested_prob"]) >= 0.99 and r["suggested_label"] != r["given_label"]
                                    for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("edit, mention", [
    (lambda rows: rows[0].update(given_label="blue" if rows[0]["given_label"] != "blue" else "red"),
     "has given_label"),
    (lambda rows: rows[0].update(row="100000"), "row 100000 is not a row of the train split"),
    (lambda rows: rows[1].update(row=rows[0]["row"]), "is listed twice (lines 2 and 3)"),
    (lambda rows: rows[0].update(suggested_label="purple"), "suggested_label 'purple' is not a class"),
    (lambda rows: rows[0].update(path="red/elsewhere.png"), "red/elsewhere.png here but"),
    (lambda rows: rows[0].update(row=""), "no row (write the CSV with `denoise issues --data SPEC`)"),
    (lambda rows: rows[0].update(action="fix it"), "action must be one of relabel, drop, keep"),
])
def test_fix_refuses_an_issues_csv_that_does_not_match_the_data(folder_run, denoise, tmp_path, edit, mention):
    rows = [dict(r, action="") for r in read_csv(folder_run["issues"])]
    edit(rows)
    write_csv(tmp_path / "bad.csv", rows)
    result = denoise("fix", "--issues", tmp_path / "bad.csv", "--data", folder_run["data"], "--out",
                     tmp_path / "fixed.csv")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
    assert str(tmp_path / "bad.csv") in result.err and mention in result.err, result.err
    assert not (tmp_path / "fixed.csv").exists()


@pytest.mark.slow
def test_fix_refuses_other_data_and_never_writes_over_its_input(folder_run, npz_run, denoise, tmp_path):
    other = denoise("fix", "--issues", folder_run["issues"], "--data", f"npz:{npz_run['data']}", "--out",
                    tmp_path / "fixed.npz")
    assert other.code == 2 and f"{folder_run['issues']}: was made from other data" in other.err, other.err
    assert not (tmp_path / "fixed.npz").exists()
    for out in (npz_run["data"], npz_run["issues"]):
        same = denoise("fix", "--issues", npz_run["issues"], "--data", f"npz:{npz_run['data']}", "--out", out)
        assert same.code == 1 and "fix never edits it in place" in same.err, same.err
    digits = denoise("fix", "--issues", npz_run["issues"], "--data", "digits", "--out", tmp_path / "d.npz")
    assert digits.code == 1 and "not 'digits'" in digits.err
    assert np.array_equal(np.load(npz_run["data"])["y"], npz_run["y"]), "the input is untouched"


def test_fix_of_an_npz_drops_rows_from_every_per_row_array_and_keeps_its_classes(denoise, tmp_path):
    """A hand-made CSV (no is_label_issue column: every listed row acts) on an npz without ``classes``: a
    dropped row leaves every per-row array; where a label value is left with no sample, ``classes`` is added so
    that the classes read back are the file's."""
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    y = np.array([3, 5, 5, 7, 3, 5])
    weight = np.linspace(0, 1, 6)
    data = tmp_path / "mine.npz"
    np.savez_compressed(data, x=x, y=y, weight=weight)
    write_csv(tmp_path / "issues.csv", [{"row": 1, "given_label": "5", "suggested_label": "3", "action": ""},
                                       {"row": 4, "given_label": "3", "suggested_label": "5", "action": "drop"}])
    out = tmp_path / "fixed.npz"
    result = denoise("fix", "--issues", tmp_path / "issues.csv", "--data", f"npz:{data}", "--out", out, "--json")
    assert result.code == 0, result.err
    assert {k: result.json[k] for k in ("relabeled", "dropped", "kept", "samples")} == {
        "relabeled": 1, "dropped": 1, "kept": 0, "samples": 5}
    fixed = np.load(out)
    assert sorted(fixed.files) == ["weight", "x", "y"], "the same arrays"
    assert fixed["y"].tolist() == [3, 3, 5, 7, 5] and fixed["x"].tolist() == x[[0, 1, 2, 3, 5]].tolist()
    assert fixed["weight"].tolist() == weight[[0, 1, 2, 3, 5]].tolist()
    # relabeling the only 7 to 3 leaves no 7: `classes` keeps the file's three classes
    write_csv(tmp_path / "seven.csv", [{"row": 3, "given_label": "7", "suggested_label": "3"}])
    result = denoise("fix", "--issues", tmp_path / "seven.csv", "--data", f"npz:{data}", "--out", out, "--json")
    assert result.code == 0 and len(result.json["notes"]) == 2 and "checked one by one" in result.json["notes"][0]
    assert load_data(f"npz:{out}").classes == load_data(f"npz:{data}").classes == ["3", "5", "7"]
    assert load_data(f"npz:{out}").labels.tolist() == [0, 1, 1, 0, 0, 1]
    assert np.load(data)["y"].tolist() == y.tolist(), "the input is untouched"


@pytest.mark.slow
def test_fix_refuses_data_changed_since_the_issues_were_listed(npz_run, denoise, tmp_path):
    """The data record beside the CSV names the labels it was made from: a label changed since, even of a row the
    CSV does not list, is refused; without the record the rows are checked one by one and a note says so."""
    import shutil

    listed = {int(r["row"]) for r in read_csv(npz_run["issues"])}
    arrays = dict(np.load(npz_run["data"]))
    row = next(r for r in np.flatnonzero(arrays["split"] == "train") if r not in listed)
    arrays["y"][row] = (arrays["y"][row] + 1) % 10
    changed = tmp_path / "changed.npz"
    np.savez(changed, **arrays)
    result = denoise("fix", "--issues", npz_run["issues"], "--data", f"npz:{changed}", "--out", tmp_path / "f.npz")
    assert result.code == 2 and "was made from other data" in result.err and not (tmp_path / "f.npz").exists()
    alone = tmp_path / "issues.csv"
    shutil.copy(npz_run["issues"], alone)
    result = denoise("fix", "--issues", alone, "--data", f"npz:{changed}", "--out", tmp_path / "f.npz", "--json")
    assert result.code == 0 and any("checked one by one" in note for note in result.json["notes"]), result.err

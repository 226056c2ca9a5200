"""`denoise issues` and `denoise report`: the suspects CSV and the HTML page, through the command line."""

import base64
import csv
import html as html_text
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import soundfile
from PIL import Image

from denoise.cli.files.paths import file_sha256
from denoise.cli.data import load_data
from denoise.cli.files.stage_files import load_npz
from denoise.cli.report.build import SECTIONS
from denoise.core.suspects import suspect_order, swap_counts
from conftest import TINY

IMAGES = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _ok(result):
    assert result.code == 0, result.err
    return result


def decoded_images(html: str) -> list[Image.Image]:
    """Every inline PNG of the page, fully decoded (Pillow raises on a broken one)."""
    images = []
    for encoded in IMAGES.findall(html):
        image = Image.open(io.BytesIO(base64.b64decode(encoded, validate=True)))
        image.load()
        images.append(image)
    return images


def check_page(html: str, *, speech: bool) -> None:
    """The page holds every section, no script, and only inline images that decode to a non-empty picture."""
    for anchor in SECTIONS:
        assert f'<section id="{anchor}">' in html, f"section {anchor} missing"
    assert "<script" not in html.lower() and 'src="http' not in html
    images = decoded_images(html)
    assert len(images) == html.count("<img "), "an <img> is not an inline PNG"
    assert len(images) >= 2 * 16 + 5, "galleries or figures missing"  # two galleries, at least five figures
    assert all(image.width > 0 and image.height > 0 for image in images)
    assert ("spectrograms" in html) == speech


def small_run(denoise, tmp_path, data, epochs):
    """inject-noise, train, and a two-round `denoise run --report` with the truth; returns the work directory."""
    noise, model, work = tmp_path / "noise.npz", tmp_path / "noisy.safetensors", tmp_path / "work"
    _ok(denoise("inject-noise", "--data", data, "--kind", "symmetric", "--rate", 0.3, "--out", noise))
    _ok(denoise("train", "--data", data, "--noise", noise, "--arch", "mlp", "--epochs", epochs, "--out", model))
    # the attribution block in every round and a head-only first round, whose model still fits every label: on
    # the tiny speech set round 1's automatic choice leaves the block out, and a first round of all layers forgets
    # enough that round 2 clears flagged samples by prediction; either way too few are flagged for a full gallery
    run = _ok(denoise("run", "--model", model, "--data", data, "--noise", noise, "--truth", noise, "--workdir", work,
                      "--rounds", 2, "--epochs", 3, "--round-epochs", 3, "--round-train", "head",
                      "--features", "prototype,attribution,loss", "--report", "--json")).json
    assert run["report"] == str(work / "report.html")
    return work


@pytest.mark.slow
def test_report_of_a_small_image_run(denoise, tmp_path):
    work = small_run(denoise, tmp_path, f"npz:{TINY}", 60)
    html = (work / "report.html").read_text()
    check_page(html, speech=False)
    assert "two" in html  # the fixture's class names, not label numbers
    assert "No truth" not in html  # the run's --truth was found in its partition's provenance


def fsdd_like(folder, digits=3, speakers=2, takes=14, rate=8000):
    """Free Spoken Digit-style recordings {digit}_{speaker}_{take}.wav (takes 0-4: the test split): a tone per
    digit, with noise."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    time = np.arange(rate) / rate
    for digit in range(digits):
        for speaker in range(speakers):
            for take in range(takes):
                tone = np.sin(2 * np.pi * (300 + 400 * digit + 20 * speaker) * time) * np.exp(-3 * time)
                soundfile.write(folder / f"{digit}_{'ab'[speaker]}_{take}.wav",
                                (0.5 * tone + 0.05 * rng.standard_normal(rate)).astype(np.float32), rate)
    return folder


@pytest.mark.slow
def test_report_of_a_small_speech_run_from_its_workdir_and_from_files(denoise, tmp_path):
    data = f"fsdd:{fsdd_like(tmp_path / 'recordings')}"
    work = small_run(denoise, tmp_path, data, 40)
    out, figures = tmp_path / "again.html", tmp_path / "figures"
    summary = _ok(denoise("report", "--workdir", work, "--out", out, "--figures-dir", figures, "--json")).json
    assert summary["sections"] == list(SECTIONS) and summary["suggested_by"].startswith("model ")
    check_page(out.read_text(), speech=True)
    assert {p.name for p in figures.iterdir()} >= {"mixture.png", "class-swaps.png", "detection.png", "rounds.png"}
    last = work / "round2"
    one_by_one = tmp_path / "files.html"
    _ok(denoise("report", "--scores", last / "scores.npz", "--partition", last / "partition.npz",
                "--sensitivity", last / "sensitivity.npz", "--model", last / "pruned.safetensors", "--data", data,
                "--truth", tmp_path / "noise.npz", "--out", one_by_one))
    check_page(one_by_one.read_text(), speech=True)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo's work directory (digits, 40 % symmetric noise; the README's setting)."""
    from denoise.cli.demo import demo

    workdir = tmp_path_factory.mktemp("demo")
    demo(workdir, device="cpu")
    return workdir


def read_csv(text):
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.slow
def test_demo_writes_its_report(demo_run):
    check_page((demo_run / "report.html").read_text(), speech=False)
    assert all((demo_run / "denoise" / f"round{r}" / "evaluate-test.json").is_file() for r in (1, 2, 3, 4))


def page_text(html: str, anchor: str) -> str:
    """The text of one section of the page: each run of tags between two texts (a cell, a card) made one " | "."""
    section = re.search(rf'<section id="{anchor}">(.*?)</section>', html, re.S)[1]
    return re.sub(r"\s*(<[^>]+>\s*)+", " | ", html_text.unescape(section)).strip()


@pytest.mark.slow
def test_the_summary_names_the_input_models_regime_and_what_each_round_decided(demo_run):
    """The demo's input model memorized its labels (round 1), its later rounds' models generalize: the summary
    names round 1's regime, and a table says what each round found and did, and which model was handed back."""
    work = demo_run / "denoise"
    run = json.loads((work / "run.json").read_text())
    regimes = [load_npz(work / f"round{r}" / "partition.npz", "partition")[1]["results"]["regime"]
               for r in (1, 2, 3, 4)]
    assert regimes[0] == "memorized" and regimes[-1] == "generalizing", "the case this test is for"
    summary = page_text((demo_run / "report.html").read_text(), "summary")
    assert "| memorized (fits 100.0%) | input model's regime (round 1) |" in summary
    assert "generalizing (fits" not in summary.split("input model's regime")[0], "the headline shows a later round's"
    header = "| round | scored model | regime | detector | features | flagged | pruned | fine-tuning | wall seconds |"
    assert header in summary
    rows = summary[summary.index(header) + len(header) - 1:]  # from the header's last "|"
    for r, plan in zip((1, 2, 3, 4), run["plan"]):
        scored = "input model" if r == 1 else f"round {r - 1}'s model"
        pruned = f"yes ({run['rounds'][3]['prune']['removed']} units)" if plan["prune"] else "no"
        recipe = f"all layers, {plan['finetune']['epochs']} epochs, shrink {plan['finetune']['shrink']:g}"
        assert f"| {r} | {scored} | {regimes[r - 1]} (fits" in rows
        assert f"| {pruned} | {recipe} |" in rows
    assert [p["prune"] for p in run["plan"]] == [False, False, False, True] and run["chosen"] == "round4"
    held = run["no_harm"]["held_out"]
    assert f"Handed back: round4's model, which passed the no-harm check on {held} held-out samples" in rows


@pytest.mark.slow
def test_a_re_run_that_reuses_every_stage_keeps_the_timings_of_the_run_that_made_them(denoise, demo_run, tmp_path):
    """A copy of the demo's run (mtimes kept), run again as the demo ran it: every stage is current, and run.json
    keeps each stage's summary and wall time from the first run, marked reused; the report says so."""
    from denoise.cli.stage_timing import MADE

    work = tmp_path / "denoise"
    shutil.copytree(demo_run / "denoise", work)
    first = json.loads((work / "run.json").read_text())
    again = _ok(denoise("run", "--model", demo_run / "noisy.safetensors", "--data", "digits", "--noise",
                        demo_run / "noise.npz", "--truth", demo_run / "noise.npz", "--workdir", work, "--device", "cpu",
                        "--json")).json
    assert json.loads((work / "run.json").read_text())["rounds"] == again["rounds"]
    assert len(again["rounds"]) == len(first["rounds"]) == 4 and again["plan"] == first["plan"]
    for before, after in zip(first["rounds"], again["rounds"]):
        assert before.keys() == after.keys()
        for stage in set(before) - {"round"}:
            made, kept = before[stage], after[stage]
            assert not made.get("skipped") and kept["skipped"] and kept["reused"] and kept["check_seconds"] >= 0, stage
            assert kept["wall_seconds"] == made["wall_seconds"] > 0 and kept["wall_seconds_of"] == MADE, stage
            same = set(made) - {"out"}  # the copy's path
            assert {k: kept[k] for k in same} == {k: made[k] for k in same}, "the first run's summary is kept"
    assert again["rounds"][0]["partition"]["regime"] == "memorized"  # a skipped partition's summary has its record
    out = tmp_path / "again.html"
    _ok(denoise("report", "--workdir", work, "--out", out))
    summary = page_text(out.read_text(), "summary")
    stages = sum(len(entry) - 1 for entry in first["rounds"])
    assert f"in its stages, {stages} of {stages} reused (this re-run:" in summary and "(reused) |" in summary


def test_a_skipped_stage_keeps_an_earlier_timing_only_of_the_file_it_reuses(tmp_path):
    """``stage_record``: an earlier record whose file was since remade (another mtime) is not this file's; a
    record of an older denoise (no out_stamp) is, when the file is no newer than its run.json."""
    import os

    from denoise.cli.stage_timing import CHECKED, MADE, earlier_stages, out_stamp, stage_record

    out, record = tmp_path / "partition.npz", tmp_path / "run.json"
    out.write_bytes(b"made")
    made = stage_record({"out": str(out), "flagged_noisy": 7}, 2.5, None)
    assert made["wall_seconds"] == 2.5 and made["out_stamp"] == out_stamp(out) and "reused" not in made
    kept = stage_record({"out": str(out), "skipped": True}, 0.01, made)
    assert (kept["wall_seconds"], kept["wall_seconds_of"], kept["check_seconds"], kept["flagged_noisy"]) == \
        (2.5, MADE, 0.01, 7) and kept["skipped"] and kept["reused"]
    assert stage_record({"out": str(out), "skipped": True}, 0.02, kept)["wall_seconds"] == 2.5  # a third run
    os.utime(out, ns=(made["out_stamp"]["mtime_ns"] + 10**9,) * 2)  # remade since the earlier record
    other = stage_record({"out": str(out), "skipped": True}, 0.01, made)
    assert (other["wall_seconds"], other["wall_seconds_of"]) == (0.01, CHECKED) and "flagged_noisy" not in other
    older = {"out": str(out), "flagged_noisy": 7, "wall_seconds": 2.5}  # an older denoise's run.json
    record.write_text(json.dumps({"rounds": [{"round": 1, "partition": older}]}))
    os.utime(out, ns=(record.stat().st_mtime_ns - 10**9,) * 2)
    assert stage_record({"out": str(out), "skipped": True}, 0.01,
                        earlier_stages(record)[(1, "partition")])["wall_seconds_of"] == MADE
    os.utime(out, ns=(record.stat().st_mtime_ns + 10**9,) * 2)  # remade after that run.json was written
    assert stage_record({"out": str(out), "skipped": True}, 0.01,
                        earlier_stages(record)[(1, "partition")])["wall_seconds_of"] == CHECKED
    assert earlier_stages(tmp_path / "missing.json") == {}


@pytest.mark.slow
def test_issues_on_the_demo_run(denoise, demo_run):
    last = demo_run / "denoise" / "round4"
    split, _ = load_npz(last / "partition.npz", "partition")
    noise, _ = load_npz(demo_run / "noise.npz", "noise")
    args = ("issues", "--scores", last / "scores.npz", "--partition", last / "partition.npz", "--data", "digits",
            "--model", last / "clean.safetensors")
    rows = read_csv(_ok(denoise(*args)).out)
    assert len(rows) == int((~split["is_clean"]).sum()) > 0, "one row per flagged sample"
    assert {row["given_label"] for row in rows} | {row["suggested_label"] for row in rows} <= {str(d) for d in range(10)}
    index = np.array([int(row["index"]) for row in rows])
    assert len(set(index)) == len(index) and not split["is_clean"][index].any()
    assert [row["given_label"] for row in rows] == [str(label) for label in noise["labels"][index]]
    score = np.array([float(row["label_score"]) for row in rows])
    loss = np.array([float(row["loss"]) for row in rows])
    assert (np.diff(score) >= 0).all() and ((score > 0) & (score < 1)).all(), "not sorted by label score"
    assert (np.diff(loss)[np.diff(score) == 0] <= 0).all(), "ties not sorted by loss"
    assert [int(row["row"]) for row in rows] == load_data("digits", "train").origin.rows[index].tolist()
    assert all(row["is_label_issue"] == "True" and row["path"] == "" for row in rows)
    mislabeled = noise["is_noisy"][index]
    suggested = np.array([int(row["suggested_label"]) for row in rows])
    given = noise["labels"][index]
    # where the noise file says a flagged label is wrong, the suggestion differs from it (and is mostly the truth)
    assert (suggested[mislabeled] != given[mislabeled]).mean() > 0.9
    assert (suggested[mislabeled] == noise["true_labels"][index][mislabeled]).mean() > 0.8
    every = read_csv(_ok(denoise(*args, "--all")).out)
    assert len(every) == len(split["index"]) and [row for row in every if row["is_label_issue"] == "True"] == rows
    assert sorted(float(row["label_score"]) for row in every) == [float(row["label_score"]) for row in every]
    out = demo_run / "issues.csv"
    summary = _ok(denoise(*args, "--out", out, "--json")).json
    assert summary["flagged"] == len(rows) and read_csv(out.read_text()) == rows
    per_class = read_csv((demo_run / "issues.summary.csv").read_text())
    cell = lambda value: "" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)
    assert per_class == [{key: cell(value) for key, value in entry.items()} for entry in summary["classes"]]
    assert sum(int(entry["flagged"]) for entry in per_class) == len(rows)


@pytest.mark.slow
@pytest.mark.parametrize("build, mention", [
    (lambda d, tmp: ("report", "--workdir", tmp, "--out", tmp / "r.html"), "holds no denoise run"),
    (lambda d, tmp: ("report", "--scores", d / "denoise/round4/scores.npz", "--partition",
                     d / "denoise/round2/partition.npz", "--out", tmp / "r.html"), "round2/partition.npz"),
    (lambda d, tmp: ("issues", "--scores", d / "denoise/round2/scores.npz", "--partition",
                     d / "denoise/round4/partition.npz"), "round4/partition.npz"),
    (lambda d, tmp: ("report", "--scores", d / "denoise/round4/scores.npz", "--partition",
                     d / "denoise/round4/partition.npz", "--sensitivity", d / "finetune-only/round1/partition.npz",
                     "--out", tmp / "r.html"), "not a sensitivity file"),
    (lambda d, tmp: ("report", "--scores", d / "denoise/round4/scores.npz", "--partition",
                     d / "denoise/round4/partition.npz", "--truth", tmp / "other-noise.npz", "--out", tmp / "r.html"),
     "other-noise.npz"),
])
def test_bad_report_input_is_one_line(denoise, demo_run, tmp_path, build, mention):
    _ok(denoise("inject-noise", "--data", "digits", "--kind", "symmetric", "--rate", 0.4, "--seed", 7,
                "--out", tmp_path / "other-noise.npz"))
    result = denoise(*build(demo_run, tmp_path))
    assert result.code == 2, result.err
    assert mention in result.err and len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists(), "a report was written from bad input"


def test_report_only_reads_its_workdir(denoise, tmp_path):
    """`report --workdir` takes no lock: a missing folder is named as such (and not made), and a folder that
    another process holds is read, not refused as busy."""
    from denoise.cli.files.lock import hold

    missing = tmp_path / "missing"
    result = denoise("report", "--workdir", missing, "--out", tmp_path / "r.html")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
    assert f"{missing}: no such directory" in result.err and not missing.exists()
    busy = tmp_path / "busy"
    with hold(busy, directory=True, command="denoise run (the holder)"):
        result = denoise("report", "--workdir", busy, "--out", tmp_path / "r.html")
    assert result.code == 2 and "holds no denoise run" in result.err, result.err


def chromium_check(page, tmp_path):
    """Render ``page`` (HTML text) in headless Chromium: ``(images, images without a natural size, console lines)``.

    A copy of the page gets a script that, once loaded, records on <body> how many images have no natural size.
    """
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("chromium not installed (Debian: apt-get install chromium; scripts/test.sh tries to)")
    probe = ("<script>window.addEventListener('load', () => { const bad = [...document.images].filter(i => "
             "!(i.naturalWidth > 0 && i.naturalHeight > 0)).length; "
             "document.body.setAttribute('data-images', document.images.length + ':' + bad); });</script>")
    copy = tmp_path / "probe.html"
    copy.write_text(page.replace("</body>", probe + "</body>"))
    done = subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                           "--virtual-time-budget=5000", "--dump-dom", copy.as_uri()],
                          capture_output=True, text=True, timeout=120)
    found = re.search(r'data-images="(\d+):(\d+)"', done.stdout)
    assert found, f"chromium did not render the page: {done.stderr[-500:]}"
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return int(found[1]), int(found[2]), console


@pytest.mark.slow
def test_report_renders_in_headless_chromium(demo_run, tmp_path):
    html = (demo_run / "report.html").read_text()
    images, broken, console = chromium_check(html, tmp_path)
    assert images == html.count("<img ") > 0 and broken == 0 and console == []
    # the check itself sees a broken image and a console error
    bad = html.replace("</body>", '<img src="data:image/png;base64,AAAA"><script>console.error("x")</script></body>')
    images, broken, console = chromium_check(bad, tmp_path)
    assert broken == 1 and len(console) == 1


def test_suspects_rank_and_swaps():
    prob = np.array([0.9, 1e-300, 1e-9, 0.2, 0.2])
    loss = np.array([0.1, 0.5, 2.0, 1.0, 3.0])
    # 1e-300 and 1e-9 are tied below TIED_BELOW: the larger loss comes first; 0.2 and 0.2 likewise
    assert suspect_order(prob, loss).tolist() == [2, 1, 4, 3, 0]
    counts = swap_counts(np.array([0, 0, 1, 2]), np.array([1, 1, 1, 0]), 3)
    assert counts.tolist() == [[0, 2, 0], [0, 1, 0], [1, 0, 0]]


def test_issues_names_classes_and_refuses_a_model_without_data(denoise, tmp_path):
    data, noise, model = f"npz:{TINY}", tmp_path / "noise.npz", tmp_path / "m.safetensors"
    _ok(denoise("inject-noise", "--data", data, "--kind", "symmetric", "--rate", 0.3, "--out", noise))
    _ok(denoise("train", "--data", data, "--noise", noise, "--arch", "mlp", "--epochs", 20, "--out", model))
    _ok(denoise("attribute", "--model", model, "--data", data, "--noise", noise, "--out", tmp_path / "s.npz"))
    split = _ok(denoise("partition", "--scores", tmp_path / "s.npz", "--out", tmp_path / "p.npz", "--json")).json
    args = ("issues", "--scores", tmp_path / "s.npz", "--partition", tmp_path / "p.npz")
    named = read_csv(_ok(denoise(*args, "--data", data)).out)
    assert len(named) == split["flagged_noisy"] > 0
    assert {row["given_label"] for row in named} <= {"zero", "one", "two"}
    numbered = read_csv(_ok(denoise(*args)).out)  # without --data: label numbers, the scores' predictions
    assert [row["index"] for row in numbered] == [row["index"] for row in named]
    assert {row["given_label"] for row in numbered} <= {"0", "1", "2"}
    refused = denoise(*args, "--model", model)
    assert refused.code == 1 and "--model needs --data" in refused.err


@pytest.mark.slow
def test_a_score_file_without_the_input_check_of_an_input_energy_split_is_one_line(denoise, tmp_path):
    """A run whose partition split corrupted inputs, reported from a score file without ``input_high_pass`` (as an
    older denoise wrote it): one line naming the file, exit 2, no report."""
    noise, model, work = tmp_path / "noise.npz", tmp_path / "noisy.safetensors", tmp_path / "work"
    _ok(denoise("inject-noise", "--data", f"npz:{TINY}", "--kind", "input-gaussian", "--rate", 0.5, "--out", noise))
    _ok(denoise("train", "--data", f"npz:{TINY}", "--noise", noise, "--arch", "mlp", "--epochs", 3, "--out", model))
    _ok(denoise("run", "--model", model, "--data", f"npz:{TINY}", "--noise", noise, "--workdir", work))
    with np.load(work / "round1" / "scores.npz", allow_pickle=False) as arrays:
        older = {name: arrays[name] for name in arrays.files if name != "input_high_pass"}
    older_scores, older_partition = tmp_path / "older-scores.npz", tmp_path / "older-partition.npz"
    np.savez(older_scores, **older)
    with np.load(work / "round1" / "partition.npz", allow_pickle=False) as arrays:  # made from the older scores
        partition = {name: arrays[name] for name in arrays.files}
    meta = json.loads(str(partition["meta"]))
    meta["inputs"]["scores"] = {"path": str(older_scores), "sha256": file_sha256(older_scores)}
    np.savez(older_partition, **{**partition, "meta": np.array(json.dumps(meta))})
    result = denoise("report", "--scores", older_scores, "--partition", older_partition, "--out", tmp_path / "r.html")
    assert result.code == 2, result.err
    assert "older-scores.npz: has no 'input_high_pass' array: it is of an earlier format" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()

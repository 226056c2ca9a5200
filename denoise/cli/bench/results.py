"""docs/results.md and the figures of README.md and docs/*.md, made from the files in benchmarks/results/.

Each results file (a ``bench quality`` CSV, a ``bench perf``/``demo`` JSON, a log) has an entry in
benchmarks/results/INDEX.json: what it holds, the command that made it, the commit and date it was made at, the
machine. ``pages()`` gives every page as the data makes it: docs/results.md whole, and in README.md and docs/*.md
each block between ``<!-- results:NAME -->`` and ``<!-- /results -->`` rewritten with ``blocks()[NAME]``.
``python -m denoise.cli.bench.results`` writes them; ``--check`` only compares, naming each page that differs
(exit 1)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from .quality_tables import BASELINES, markdown, read_rows

ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "benchmarks" / "results"
PAGE = "docs/results.md"
BASE = "../benchmarks/results/"  # docs/results.md's path to the files
BLOCK = re.compile(r"(<!-- results:([\w-]+) -->\n)(.*?)(<!-- /results -->)", re.S)

# the README's headline cell (40 % symmetric, seed 0) per data set: column title, results file
HEADLINE = (("digits (mlp)", "quality-allrounds-digits.csv"),
            ("fsdd (mlp on log-mel)", "quality-allrounds-fsdd.csv"),
            ("CIFAR-10 (cnn, 10,000 images, 60 epochs)", "quality-defaults-cifar10.csv"))
# bench perf's ratios, its target for each, and the runs of the headline: column title, results files
RATIOS = (("attribution_vs_inference", "≥ 0.9"), ("batched_vs_loop", "≥ 2"), ("max_abs_diff", "< 1e-5"),
          ("rss_10n_vs_n", "≤ 1.3"), ("pipeline_vs_retrain", "≤ 0.25"))
# (the ratios a run did not measure: the first H100 run timed training without a warm-up)
PERF = (("ResNet-18, CPU, N = 20 000", ("perf-cpu-resnet18-cifar-n20000.json",), ()),
        ("MLP, digits, CPU", ("perf-cpu-mlp-digits-run1.json", "perf-cpu-mlp-digits-run2.json"), ()),
        ("ResNet-18, H100, N = 20 000", ("perf-h100-resnet18-cifar-n20000-fp32.json",), ("pipeline_vs_retrain",)),
        ("ResNet-18, H100, N = 5 000, training warmed up", ("perf-h100-resnet18-cifar-n5000-train-warmup.json",),
         ()))


def index() -> dict[str, dict]:
    """INDEX.json: results file name -> its ``what``, ``command`` (a list of lines), ``commit``, ``date``,
    ``machine`` (and ``note`` where the file is not the command's raw output)."""
    return json.loads((RESULTS / "INDEX.json").read_text(encoding="utf-8"))


def _json(name: str) -> dict:
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


def _cell(rows: list[dict], detector: str, method: str, kind: str = "symmetric", rate: float = 0.4,
          seed: int = 0) -> dict | None:
    found = [r for r in rows if (r["kind"], r["rate"], r["seed"], r["detector"], r["method"]) ==
             (kind, rate, seed, detector, method)]
    return found[-1] if found else None


def _source(names: list[str], base: str) -> str:
    """A line naming the results files a table is made of (links relative to ``base``), with their dates."""
    meta = index()
    return "Source: " + ", ".join(f"[{n}]({base}{n}) ({meta[n]['date']}, {meta[n]['commit']})" for n in names) + "."


def demo_table() -> str:
    """The demo's rows: test accuracy and seconds (``bash scripts/demo.sh --json``)."""
    record = _json("demo.json")
    lines = ["| row | test accuracy | seconds |", "|---|---|---|"]
    lines += [f"| {r['name']} | {r['test_accuracy']:.3f} | {r['seconds']:.1f} |" for r in record["rows"]]
    return "\n".join(lines) + "\n"


def demo_detection() -> str:
    """One sentence: the demo's detection against the injected truth, and denoise against retraining."""
    record = _json("demo.json")
    found, rows = record["detection"], {r["name"]: r for r in record["rows"]}
    gain = 100 * (rows["denoise"]["test_accuracy"] - rows["retrain"]["test_accuracy"])
    share = rows["denoise"]["seconds"] / rows["retrain"]["seconds"]
    return (f"Detection against the injected truth: F1 {found['f1']:.3f}, AUROC {found['auroc']:.3f}, "
            f"{100 * found['flagged']:.1f} % flagged ({_pct(record['noise']['rate'])} mislabeled). `denoise` "
            f"gains {gain:.0f} points over retraining in {_pct(share)} of its time.\n")


def quality_headline() -> str:
    """The README's quality table: 40 % symmetric noise, seed 0, the defaults, per data set."""
    table = {"our detection F1 (best other)": [], "noisy → `denoise` (retrain; oracle)": [],
             "noisy→oracle gap recovered": [], "`denoise` / `retrain` time (shared cores)": []}
    for _, name in HEADLINE:
        rows = read_rows(RESULTS / name)
        noisy, retrain, oracle = (_cell(rows, "none", m) for m in ("noisy", "retrain", "oracle"))
        ours = _cell(rows, "attribution", "denoise")
        others = [r["f1"] for r in (_cell(rows, d, "denoise") for d in BASELINES) if r and r["f1"] is not None]
        best = f" ({max(others):.3f})" if others else ""
        table["our detection F1 (best other)"].append(f"**{ours['f1']:.3f}**{best}")
        kept = ", input kept" if ours.get("chosen") == "input" else ""
        acc = {k: 100 * r["test_accuracy"] for k, r in (("n", noisy), ("r", retrain), ("o", oracle), ("d", ours))}
        table["noisy → `denoise` (retrain; oracle)"].append(
            f"{acc['n']:.1f} → **{acc['d']:.1f}**{kept} ({acc['r']:.1f}; {acc['o']:.1f})")
        table["noisy→oracle gap recovered"].append(_pct((acc["d"] - acc["n"]) / (acc["o"] - acc["n"])))
        table["`denoise` / `retrain` time (shared cores)"].append(_pct(ours["seconds"] / retrain["seconds"]))
    lines = ["| | " + " | ".join(title for title, _ in HEADLINE) + " |", "|---|" + "---|" * len(HEADLINE)]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in table.items()]
    return "\n".join(lines) + "\n"


def _pct(share: float) -> str:
    return f"{share:.0%}".replace("%", " %")


def _ratio(values: list[float], fixed: bool = False) -> str:
    """The value, or the range of the values: to 3 decimals, trailing zeros dropped, or to 2 with ``fixed``."""
    shown = sorted({f"{v:.2f}" if fixed else f"{round(v, 3):g}" for v in values}, key=float)
    return shown[0] if len(shown) == 1 else f"{shown[0]}–{shown[-1]}"


def perf_headline() -> str:
    """``bench perf``'s five ratios, per headline run (a range where a setting ran more than once)."""
    runs = [([_json(n) for n in names], skipped) for _, names, skipped in PERF]
    lines = ["| key | target | " + " | ".join(title for title, *_ in PERF) + " |", "|---|---|" + "---|" * len(PERF)]
    for key, target in RATIOS:
        lines.append(f"| `{key}` | {target} | " + " | ".join("not measured" if key in skipped else
                                                              _ratio([r[key] for r in records])
                                                              for records, skipped in runs) + " |")
    return "\n".join(lines) + "\n"


def perf_summary() -> str:
    """The README's sentence of ``bench perf`` figures, from the headline runs."""
    cpu, digits, gpu, warm = ([_json(n) for n in names] for _, names, _ in PERF)
    pick = lambda key, *runs: _ratio([r[key] for records in runs for r in records], fixed=True)  # noqa: E731
    return (f"Attribution runs at inference speed at the classifier's input (ResNet-18: "
            f"{pick('attribution_vs_inference', cpu)} on CPU, {pick('attribution_vs_inference', gpu)} on an H100), "
            f"batching beats a per-class loop {pick('batched_vs_loop', cpu, gpu, warm)}×, peak memory at 10 N "
            f"is {pick('rss_10n_vs_n', cpu, digits, gpu, warm)} times that at N, and the rounds of a `denoise run` "
            f"take {pick('pipeline_vs_retrain', digits)} of retraining's time on digits, "
            f"{pick('pipeline_vs_retrain', cpu)} for ResNet-18 on CPU.\n")


def scale_table() -> str:
    """``bench scale``'s memory at N and 8 N and its rates (scale-cpu-n100.json)."""
    record = _json("scale-cpu-n100.json")
    n, peak = record["n"], record["peak_rss_mb"]
    lines = [f"| | N = {n} | 8 N = {8 * n} | 8 N / N |", "|---|---|---|---|"]
    for stage, label in (("attribute", "`attribute`"), ("finetune", "`finetune` (1 epoch)")):
        lines.append(f"| peak RSS, {label} | {peak[f'{stage}_{n}']:,.0f} MiB | {peak[f'{stage}_{8 * n}']:,.0f} MiB | "
                     f"{record['rss_8n_vs_n'][stage]:.3f} |")
    workers = record["workers_images_per_s"]
    return ("\n".join(lines) + f"\n\n`attribute` ran at {record['attribute_images_per_s']:.1f} images/s, the plain "
            f"DataLoader + forward loop over the same files at {record['loop_images_per_s']:.1f} "
            f"(`attribute_vs_loop` {record['attribute_vs_loop']:.2f}); with {', '.join(workers)} workers: "
            f"{', '.join(f'{v:.1f}' for v in workers.values())} images/s.\n")


def scale_run_table() -> str:
    """``bench scale --run-n``: train and run end to end over many streamed files (scale-run-cpu-n100000.json)."""
    record = _json("scale-run-cpu-n100000.json")
    stages = record["stage_seconds"]
    lines = [f"{record['n']:,} JPEGs read at {record['size']} px, `{record['arch']}`, {record['cores']} cores:", "",
             "| command | wall seconds | peak RSS |", "|---|---|---|",
             f"| `train` (1 epoch) | {record['train_seconds']:,.0f} | {record['train_peak_rss_mb']:,.0f} MiB |",
             f"| `run` (1 round of 1 epoch, pruned) | {record['run_seconds']:,.0f} | "
             f"{record['run_peak_rss_mb']:,.0f} MiB |", "",
             "The run's stages, wall seconds (loading and the header check included): "
             + ", ".join(f"{stage} {seconds:,.1f}" for stage, seconds in stages.items()) + "."]
    return "\n".join(lines) + "\n"


def wds_table() -> str:
    """Samples/s of reading WebDataset shards (wds-read-800.json, ``benchmarks/wds_read.py``)."""
    record = _json("wds-read-800.json")
    rates = record["samples_per_s"]
    rows = (("`webdataset.WebDataset` (its sequential iterator)", "webdataset_sequential"),
            ("our tar-header index, read in order", "index_in_order"),
            ("our tar-header index, read shuffled (as training reads)", "index_shuffled"))
    lines = ["| reader | samples/s |", "|---|---|"] + [f"| {label} | {rates[key]:,.0f} |" for label, key in rows]
    return ("\n".join(lines) + f"\n\nIndexing the {record['shards']} shards took {record['index_seconds']:.2f} s "
            f"({record['samples']} samples).\n")


def decoders_table() -> str:
    """Images/s of the candidate JPEG decoders on the same files (decoders-200.json, ``benchmarks/decoders.py``)."""
    record = _json("decoders-200.json")
    rates = record["images_per_s"]
    rows = (("Pillow", "pillow"), ("Pillow with JPEG draft", "pillow_draft"),
            ("`torchvision.io.decode_jpeg`", "torchvision_io"))
    width, height = record["image_size"]
    return "\n".join([f"{record['files']} JPEGs of {width} x {height} px, each decoded to 224 x 224 in one process:",
                      "", "| decoder | images/s |", "|---|---|",
                      *(f"| {label} | {rates[key]:,.0f} |" for label, key in rows)]) + "\n"


def _quality_section(name: str, meta: dict) -> list[str]:
    rows = read_rows(RESULTS / name)
    tables = markdown(rows)
    return [f"### {name}", "", f"{meta['what']}.", "", _provenance(name, meta), "", tables.rstrip(), ""]


def _provenance(name: str, meta: dict, base: str = BASE) -> str:
    """Where a results file came from: its link, commit, date, machine, note, and the command that made it."""
    lines = [f"[{name}]({base}{name}): made at {meta['commit']} on {meta['date']}; machine: {meta['machine']}."]
    if meta.get("note"):
        lines.append(f"Note: {meta['note']}.")
    return "\n".join([*lines, "", "```bash", *meta["command"], "```"])


def _perf_section(name: str, meta: dict) -> list[str]:
    record = _json(name)
    lines = [f"### {name}", "", f"{meta['what']}.", "", _provenance(name, meta), "",
             "| key | value |", "|---|---|"]
    lines += [f"| `{key}` | {record[key]:.4g} |" for key, _ in RATIOS if key in record]
    stages = record.get("stages", {})
    if stages:
        lines += ["", "| stage | samples/s | peak RSS (MiB) | peak GPU (MiB) |", "|---|---|---|---|"]
        for stage, s in stages.items():
            cols = [s.get("samples_per_s"), s.get("peak_rss_mb"), s.get("peak_gpu_mb")]
            lines.append(f"| {stage} | " + " | ".join("" if v is None else f"{v:,.1f}" for v in cols) + " |")
    return lines + [""]


def _log_section(name: str, meta: dict) -> list[str]:
    text = (RESULTS / name).read_text(encoding="utf-8").strip()
    return [f"### {name}", "", f"{meta['what']}.", "", _provenance(name, meta), "", "```", text, "```", ""]


def blocks() -> dict[str, str]:
    """Block name -> its text, for the marked blocks of README.md and docs/*.md."""
    return {"demo": demo_table(), "demo-detection": demo_detection(), "quality-headline": quality_headline(),
            "perf-headline": perf_headline(), "perf-summary": perf_summary(), "scale": scale_table(),
            "wds-read": wds_table(), "decoders": decoders_table(), "scale-run": scale_run_table()}


def results_page() -> str:
    """docs/results.md: the headline tables, then every results file's tables, with where each came from."""
    meta = index()
    lines = ["# Results", "", "<!-- Generated by `python -m denoise.cli.bench.results` from benchmarks/results/; "
             "do not edit: add a results file and its INDEX.json entry, then run it. -->", "",
             "Every figure below is computed from a file in [benchmarks/results/](../benchmarks/results/), "
             "whose INDEX.json names the command, commit, date and machine that made it. How to reproduce them: "
             "[quality.md](quality.md), [performance.md](performance.md).", "",
             "## The demo", "", "`bash scripts/demo.sh --json` (seed 0):", "", demo_table().rstrip(), "",
             demo_detection().rstrip(), "", _provenance("demo.json", meta["demo.json"]), "",
             "## Quality headline", "", "40 % symmetric noise, seed 0, the defaults:", "",
             quality_headline().rstrip(), "", _source([name for _, name in HEADLINE], BASE), "",
             "## Performance headline", "", "`bench perf`'s ratios:", "",
             perf_headline().rstrip(), "", _source([n for _, names, _ in PERF for n in names], BASE), "",
             "## Every results file", "",
             "Quality tables: mean ± sample std over seeds, as `bench quality --markdown` prints them.", ""]
    for name in sorted(meta, key=_order):
        if name.endswith(".csv"):
            lines += _quality_section(name, meta[name])
        elif name.endswith(".log"):
            lines += _log_section(name, meta[name])
        elif name.startswith("perf-"):
            lines += _perf_section(name, meta[name])
        elif name in _TABLES:
            lines += [f"### {name}", "", f"{meta[name]['what']}.", "", _provenance(name, meta[name]), "",
                      _TABLES[name]().rstrip(), ""]
    return "\n".join(lines).rstrip() + "\n"


_TABLES = {"scale-cpu-n100.json": scale_table, "wds-read-800.json": wds_table, "decoders-200.json": decoders_table,
           "scale-run-cpu-n100000.json": scale_run_table}


def _order(name: str) -> tuple:
    """Results files in docs/results.md: newest first, then by name."""
    meta = index()[name]
    return (-int(meta["date"].replace("-", "")), name)


def update(text: str, made: dict[str, str]) -> str:
    """``text`` with every marked block's body replaced by ``made[NAME]`` (an unknown NAME raises KeyError)."""
    return BLOCK.sub(lambda m: m.group(1) + made[m.group(2)] + m.group(4), text)


def pages() -> dict[Path, str]:
    """Path -> the text the data makes of it: docs/results.md, and every README.md or docs/*.md page with
    marked blocks."""
    made, out = blocks(), {ROOT / PAGE: results_page()}
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        if path != ROOT / PAGE:
            text = path.read_text(encoding="utf-8")
            if BLOCK.search(text):
                out[path] = update(text, made)
    return out


def main(argv: list[str] | None = None) -> int:
    """Write the pages (exit 0), or with ``--check`` name each page that differs from the data (exit 1)."""
    argv = sys.argv[1:] if argv is None else argv
    stale = []
    for path, text in pages().items():
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(path.relative_to(ROOT))
            if "--check" not in argv:
                path.write_text(text, encoding="utf-8")
    for path in stale:
        print(f"{'stale' if '--check' in argv else 'wrote'}: {path}", file=sys.stderr)
    return 1 if stale and "--check" in argv else 0


if __name__ == "__main__":
    sys.exit(main())

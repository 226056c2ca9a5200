"""Results are generated, not typed (issue 33): docs/results.md and the marked blocks of README.md and docs/*.md are
what ``denoise.cli.bench.results`` makes of benchmarks/results/, every results file says how it was made, and a
figure in the prose stands only inside a generated block."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from denoise.cli.bench import results

ROOT = results.ROOT
# A figure: a decimal (0.958) or a percentage (73.0 %, 15 %).
FIGURE = re.compile(r"(?<![\w.])\d+(?:\.\d+)? ?%|(?<![\w.])\d+\.\d+(?![\w.])")
# What is not a result, by rule: fenced and inline code (commands, option values, printed lines), HTML comments,
# link targets, generated blocks; version and paper numbers; bounds (a figure after a comparison); the setting of a
# noise cell (a rate beside its noise kind).
HIDDEN = re.compile(r"```.*?```|`(?:[^`\n]|\n(?!\s*\n))+`|<!--.*?-->|\]\([^)]*\)", re.S)
VERSION = re.compile(r"(?:Python|torch|arXiv|version|v)\s*\d+(?:\.\d+)+|\d+\.\d+\.\d+")
BOUND = re.compile(r"(?:under|over|below|above|at least|at most|up to|within|≥|≤|<|>)\s*$")
NOISE = r"(?:symmetric|asymmetric|instance|input|label|noise|mislabeled|corrupted)"
SETTING_AFTER = re.compile(r"^\s*(?:of\s+)?(?:the\s+)?" + NOISE)
SETTING_BEFORE = re.compile(NOISE + r"\s*$")
EXEMPT = {"docs/limits.md", results.PAGE}  # the environment's bounds, not results; the generated page


def typed_figures(text: str) -> list[tuple[str, str]]:
    """The figures of a page's prose that no rule above exempts: (figure, the words around it)."""
    text = results.BLOCK.sub("", text)
    text = HIDDEN.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), text)  # blanked, so offsets and lines stay
    text = VERSION.sub(lambda m: " " * len(m.group()), text)
    found = []
    for match in FIGURE.finditer(text):
        before, after = text[max(0, match.start() - 40):match.start()], text[match.end():match.end() + 30]
        if BOUND.search(before) or SETTING_AFTER.search(after) or SETTING_BEFORE.search(before):
            continue
        found.append((match.group(), f"{before[-30:].strip()} … {after.strip()[:20]}".replace("\n", " ")))
    return found


def prose_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_pages_are_what_the_results_make():
    stale = [str(path.relative_to(ROOT)) for path, text in results.pages().items()
             if not path.is_file() or path.read_text(encoding="utf-8") != text]
    assert not stale, f"out of date (run `bash scripts/results.sh`): {', '.join(stale)}"


def test_every_results_file_says_how_it_was_made():
    meta = results.index()
    files = {p.name for p in results.RESULTS.iterdir() if p.is_file() and p.name != "INDEX.json"}
    assert files == set(meta), f"without an INDEX.json entry: {files - set(meta)}; without a file: {set(meta) - files}"
    for name, entry in meta.items():
        assert entry["command"] and all(isinstance(line, str) and line for line in entry["command"]), name
        assert re.fullmatch(r"[0-9a-f]{7,40}", entry["commit"]), name
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", entry["date"]), name
        assert entry["machine"] and entry["what"], name


@pytest.mark.parametrize("page", [p for p in prose_pages() if p.relative_to(ROOT).as_posix() not in EXEMPT],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_figures_stand_only_in_generated_blocks(page):
    found = typed_figures(page.read_text(encoding="utf-8"))
    assert not found, f"{page.relative_to(ROOT)}: typed figures outside a generated block:\n" + "\n".join(
        f"{figure!r} in {words!r}" for figure, words in found)


def test_the_rules_catch_typed_figures_and_let_others_pass():
    typed = "The model gains 30 points in 18 % of its time, F1 0.958 (73.0 %).\n"
    assert [figure for figure, _ in typed_figures(typed)] == ["18 %", "0.958", "73.0 %"]
    passing = ("`--rate 0.4` and 40 % symmetric noise, torch 2.14.1, fits under 90 % of its labels, "
               "[x](a-0.5.md)\n```\nF1 0.958\n```\n<!-- results:demo -->\n73.0 %\n<!-- /results -->\n")
    assert typed_figures(passing) == []
    assert set(results.blocks()) >= {"demo", "demo-detection", "quality-headline", "perf-headline", "perf-summary"}

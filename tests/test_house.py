"""House rules of the code's prose: docstrings and comment blocks say what a thing is and why, in a few lines, and
tell no history (issue 33). Decisions, their measurements and their dates live in docs/decisions/."""

from __future__ import annotations

import ast
import io
import re
import shutil
import subprocess
import tokenize
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "denoise"
MAX_LINES = 15
SUBJECT = 72  # characters of a commit subject (CONTRIBUTING.md, "Commits")
SHORT_SINCE = "c66e88f"  # the last commit whose subject is longer than SUBJECT; older ones stay as they are
DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")


def docstrings(source: str) -> list[tuple[int, str]]:
    """``(line, docstring)`` of the module and of every class and function in ``source``."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            text = ast.get_docstring(node, clean=True)
            if text is not None:
                found.append((node.body[0].lineno, text))
    return found


def comments(source: str) -> list[tuple[int, str, bool]]:
    """``(line, text, alone)`` of every comment in ``source``; ``alone``: nothing but the comment is on its line."""
    found, code_lines = [], set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            found.append((token.start[0], token.string, token.start[0] not in code_lines))
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                                tokenize.ENDMARKER):
            code_lines.update(range(token.start[0], token.end[0] + 1))
    return found


def comment_blocks(source: str) -> list[tuple[int, int]]:
    """``(first line, length)`` of each run of consecutive lines that hold nothing but a comment."""
    blocks: list[list[int]] = []
    for line, _, alone in comments(source):
        if not alone:
            continue
        if blocks and blocks[-1][-1] == line - 1:
            blocks[-1].append(line)
        else:
            blocks.append([line])
    return [(block[0], len(block)) for block in blocks]


def problems(source: str, name: str) -> list[str]:
    """What breaks the house rules in one file's ``source``, one line per problem, each naming ``name:line``."""
    found = []
    for line, text in docstrings(source):
        length = len(text.strip().splitlines())
        if length > MAX_LINES:
            found.append(f"{name}:{line}: docstring of {length} lines (at most {MAX_LINES})")
        if DATE.search(text):
            found.append(f"{name}:{line}: docstring holds a date ({DATE.search(text).group()})")
    for line, length in comment_blocks(source):
        if length > MAX_LINES:
            found.append(f"{name}:{line}: comment block of {length} lines (at most {MAX_LINES})")
    for line, text, _ in comments(source):
        if DATE.search(text):
            found.append(f"{name}:{line}: comment holds a date ({DATE.search(text).group()})")
    return found


def test_no_docstring_or_comment_block_is_long_and_none_holds_a_date():
    """Every module of denoise/: docstrings and comment blocks of at most 15 lines, no YYYY-MM-DD in them
    (history and dated figures go to docs/decisions/)."""
    files = sorted(PACKAGE.rglob("*.py"))
    assert files
    found = [problem for path in files
             for problem in problems(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))]
    assert not found, "\n".join(found)


LONG_DOC = '"""' + "\n".join(f"line {i}" for i in range(16)) + '\n"""\n'


@pytest.mark.parametrize("source, expected", [
    (LONG_DOC, "docstring of 16 lines"),
    ('def f():\n    """Measured on 2026-11-27."""\n', "docstring holds a date (2026-11-27)"),
    ("".join(f"# note {i}\n" for i in range(16)) + "x = 1\n", "comment block of 16 lines"),
    ("x = 1  # chosen 2026-11-26\n", "comment holds a date (2026-11-26)"),
])
def test_the_rules_catch_what_they_name(source, expected):
    assert any(expected in problem for problem in problems(source, "m.py"))


def test_the_rules_let_short_prose_and_field_comments_pass():
    fields = "".join(f"a{i} = {i}  # field {i}\n" for i in range(20))  # inline comments are not a block
    blocks = "".join(f"# note {i}\n" for i in range(15)) + "x = 1\n" + "# again\n" * 15
    doc = '"""' + "\n".join(f"line {i}" for i in range(15)) + '"""\n'
    assert problems(doc + fields + blocks + "s = '2026-11-27'\n", "m.py") == []


def test_commit_subjects_are_short():
    """Every commit after ``SHORT_SINCE`` has a subject of at most ``SUBJECT`` characters."""
    root = PACKAGE.parent
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    log = subprocess.run(["git", "log", "--format=%s", f"{SHORT_SINCE}..HEAD"], cwd=root, capture_output=True,
                         text=True)
    if log.returncode != 0:
        pytest.skip(f"{SHORT_SINCE} is not in this history (a shallow clone?)")
    assert [subject for subject in log.stdout.splitlines() if len(subject) > SUBJECT] == []

"""Every Python code block of README.md and of the docs pages runs, as a reader would run it.

The blocks of one page run in order in one namespace (a page is read top to bottom), in a
temporary folder. Blocks written as a doctest (``>>>``) are checked against their printed
output. A block that is only a fragment of a model (not meant to run on its own) is marked
with ``<!-- fragment -->`` on the line above it in Markdown, or with a ``.. fragment``
comment in reStructuredText; every other Python block runs.
"""

import doctest
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.rst"))

_MD_BLOCK = re.compile(r"(<!-- fragment -->\s*\n)?```python\n(.*?)```", re.DOTALL)
_RST_BLOCK = re.compile(r"(\.\. fragment\s*\n\s*\n)?\.\. code-block:: python\n\n((?:[ \t]+.*\n|\n)+)")


def _dedent(text):
    lines = text.splitlines()
    indents = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    cut = min(indents, default=0)
    return "\n".join(line[cut:] for line in lines).strip("\n") + "\n"


def code_blocks(page):
    """The runnable Python blocks of a page, in order (fragments left out)."""
    text = page.read_text()
    pattern = _MD_BLOCK if page.suffix == ".md" else _RST_BLOCK
    return [_dedent(m.group(2)) for m in pattern.finditer(text) if not m.group(1)]


def run_block(code, namespace, name):
    if code.lstrip().startswith(">>>"):
        test = doctest.DocTestParser().get_doctest(code, namespace, name, name, 0)
        runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
        failures = []
        runner.run(test, out=failures.append, clear_globs=False)
        assert runner.failures == 0, "".join(failures)
    else:
        exec(compile(code, name, "exec"), namespace)


def test_the_collector_finds_the_blocks():
    readme = code_blocks(ROOT / "README.md")
    assert len(readme) >= 2 and all("import" in block for block in readme[:1])
    assert any(code_blocks(page) for page in PAGES[1:])


@pytest.mark.parametrize("page", [p for p in PAGES if code_blocks(p)],
                         ids=lambda p: p.name)
def test_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": f"docs_{page.stem}"}
    for i, code in enumerate(code_blocks(page)):
        run_block(code, namespace, f"{page.name}[block {i}]")

"""The README and docs/ cannot rot: every command they show is run, and the output they show is
the output printed.

A command is a line starting with `$ ` in a ```console block (a line ending in `\\` goes on to
the next); the lines under it, up to the next command, are what it prints on stdout. ```text
blocks are examples and are not checked.

Each `lenet5 ...` command is parsed by lenet5's own parser; those that finish in seconds then run
through `main([...])` in a fresh folder holding the docs' pictures (and a short run as
`runs/NAME` when the command names it) and no run of its own, so that they read with the shipped
weights as a fresh clone does, and must succeed. Training commands run as `--dry-run` on a slice
of MNIST. What cannot run here (a server, a GPU, torchrun, minutes of work) is parsed only;
`why_not_run` says why for each. A decimal shown may differ from the one printed by a unit in its
last place (a percentage rounding the other way on another machine); all else must be the same.

Other commands (`make`, `python bench/...`, `pip`, `curl`) are checked against what they name: a
Makefile target, a script and its flags, an extra, an API route. ```pycon blocks run as doctests;
```python blocks must use only names lenet5 has. Links, anchors and pictures must exist, and so
must the tests and benchmarks the pages cite.
"""

from __future__ import annotations

import ast
import doctest
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PICTURES = ROOT / "docs" / "pictures"
RUN = "runs/NAME"  # the docs' name for "a run folder of yours"


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    lines: list[str]


@dataclass
class Command:
    page: Path
    line: int
    text: str
    output: list[str] = field(default_factory=list)

    def __str__(self):
        return f"{self.page.relative_to(ROOT)}:{self.line}: $ {self.text}"


def blocks(page: Path) -> list[Block]:
    found, current = [], None
    for n, line in enumerate(page.read_text().splitlines(), 1):
        if line.startswith("```"):
            if current is None:
                current = Block(page, n, line[3:].strip(), [])
            else:
                found.append(current)
                current = None
        elif current is not None:
            current.lines.append(line)
    assert current is None, f"{page}: a code block opened at line {current.line} never closes"
    return found


def commands(block: Block) -> list[Command]:
    found, pending = [], None
    for n, line in enumerate(block.lines, block.line + 1):
        if pending is not None:  # a continued command
            pending.text = pending.text[:-1] + " " + line.strip()
        elif line.startswith("$ "):
            pending = Command(block.page, n, line[2:].strip())
        elif found:
            found[-1].output.append(line.rstrip())
            continue
        else:
            raise AssertionError(f"{block.page}:{n}: a console block starts with output, not `$ `")
        if not pending.text.endswith("\\"):
            found.append(pending)
            pending = None
    return found


ALL_BLOCKS = [b for page in PAGES for b in blocks(page)]
COMMANDS = [c for b in ALL_BLOCKS if b.lang == "console" for c in commands(b)]


def unique(found: list[Command]) -> list[Command]:
    """One of each command that is shown more than once with the same output: run once."""
    seen = {}
    for c in found:
        seen.setdefault((tuple(shlex.split(c.text, comments=True)), tuple(c.output)), c)
    return list(seen.values())


def split(command: Command) -> tuple[dict[str, str], list[str]]:
    """(environment variables set before it, the words), as a shell reads them."""
    words = shlex.split(command.text, comments=True)
    env = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    return env, words


def lenet5_args(words: list[str]) -> list[str] | None:
    """The arguments of a lenet5 command, however it is started; None for any other command."""
    if words[0] in ("lenet5", ".venv/bin/lenet5"):
        return words[1:]
    if words[:3] in (["python", "-m", "lenet5"], ["python3", "-m", "lenet5"]):
        return words[3:]
    if words[0] == "torchrun" and "-m" in words and words[words.index("-m") + 1] == "lenet5":
        return words[words.index("-m") + 2:]
    return None


def why_not_run(env: dict, words: list[str], args: list[str]) -> str:
    """Why a lenet5 command is only parsed here, or "" when it runs."""
    if words[0] == "torchrun":
        return "needs torchrun and its processes (tests/test_distributed.py runs them)"
    if env:
        return "sets the environment, which the compute path reads once per process"
    reasons = {
        "serve": "serves until stopped (tests/test_web.py)",
        "info": "times every compute path: tens of seconds on a busy 2-core machine",
        "plot": "draws six figures from the whole test set (tests/test_plots.py)",
        "--verify": "runs all 10,000 test images through another runtime (tests/test_export.py)",
        "onnx": "imports the ONNX exporter: seconds (tests/test_export.py)",
        "--resume": "needs an interrupted run (tests/test_train.py)",
        "--wandb": "talks to Weights & Biases (tests/test_tracking.py)",
        "--tensorboard": "writes TensorBoard events (tests/test_tensorboard.py)",
        "cuda": "needs a GPU (tests/test_cuda.py)",
        "--activations": "imports matplotlib and draws (tests/test_plots.py)",
    }
    for word, why in reasons.items():
        if word in args:
            return why
    return ""


@pytest.fixture(scope="module")
def a_run(tmp_path_factory, mnist):
    """A run folder as a short dry run leaves it: what `runs/NAME` stands for."""
    from lenet5.cli import main

    out = tmp_path_factory.mktemp("docs-run")
    assert main(["train", "--dry-run", "--limit", "1024", "--val-size", "256", "--no-progress",
                 "--data-dir", str(DATA), "--out-dir", str(out), "--name", "NAME"]) == 0
    return out / "NAME"


@pytest.fixture
def folder(tmp_path, monkeypatch, mnist):
    """A fresh folder as a reader's clone would be, minus any run: the docs' pictures, MNIST found
    through $LENET5_DATA (loaded once for the whole file: the loader has its own tests)."""
    import lenet5.data
    import lenet5.training

    shutil.copytree(PICTURES, tmp_path / "docs" / "pictures")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LENET5_DATA", str(DATA))
    real = lenet5.data.load_dataset

    def load_dataset(dataset="mnist", root=None, *args, **kwargs):
        if dataset == "mnist" and not root and not args and not kwargs:
            assert lenet5.data.data_home().resolve() == DATA.resolve()
            return mnist
        return real(dataset, root, *args, **kwargs)

    monkeypatch.setattr(lenet5.data, "load_dataset", load_dataset)
    monkeypatch.setattr(lenet5.training, "load_dataset", load_dataset)
    return tmp_path


def parse(args: list[str]):
    """lenet5's own parser on the arguments: a flag or a choice it does not know fails here."""
    from lenet5.cli import build_parser

    try:
        return build_parser().parse_args(args)
    except SystemExit as e:
        if e.code:
            raise AssertionError(f"lenet5's parser refuses it (exit {e.code})") from None
        return None  # --help, --version


def run_lenet5(args: list[str], capsys) -> tuple[int, str]:
    from lenet5.cli import main

    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as e:  # --version, --help
        code = e.code or 0
    out, err = capsys.readouterr()
    assert code == 0, f"exit code {code}; stderr:\n{err}"
    return code, out


@pytest.mark.parametrize("command", unique(COMMANDS), ids=str)
def test_every_command_shown_works(command, request, capsys):
    env, words = split(command)
    assert words, f"{command}: no command"
    args = lenet5_args(words)
    if args is None:
        assert not command.output, f"{command}: output is shown for a command not run here; use a text block"
        check_other(env, words)
        return
    check_environment(env)
    assert parse(args) is not None or "--version" in args or "--help" in args
    why = why_not_run(env, words, args)
    if why:
        assert not command.output, f"{command}: output is shown, but it is not run here ({why})"
        return
    folder = request.getfixturevalue("folder")
    if RUN in command.text:
        shutil.copytree(request.getfixturevalue("a_run"), folder / RUN)
    if args[0] == "train" and "--print-config" not in args:
        args = args + ["--dry-run", "--limit", "5256", "--out-dir", str(folder / "runs"), "--no-progress"]
    _, out = run_lenet5(args, capsys)
    if command.output:
        printed = [line.rstrip() for line in out.rstrip("\n").splitlines()]
        assert len(printed) == len(command.output) and all(map(same, command.output, printed)), (
            f"{command}: prints\n" + "\n".join(printed))


DECIMAL = r"\d+\.\d+"


def same(shown: str, printed: str) -> bool:
    """The same line, but for decimals a unit apart in their last place: a percentage near a
    rounding boundary may round the other way on another CPU or with another Pillow."""
    if re.sub(DECIMAL, "#", shown) != re.sub(DECIMAL, "#", printed):
        return False
    for a, b in zip(re.findall(DECIMAL, shown), re.findall(DECIMAL, printed), strict=True):
        if abs(float(a) - float(b)) > 1.01 * 10 ** -len(a.split(".")[1]):
            return False
    return True


# ---- commands other than lenet5's -------------------------------------------------------------

def check_environment(env: dict) -> None:
    """Every variable a command sets is one lenet5 (or its tests, or torch) reads."""
    known = {"OMP_NUM_THREADS"}  # torch's own
    text = "\n".join(p.read_text() for d in ("src", "tests") for p in (ROOT / d).rglob("*.py"))
    for key in env:
        assert key in known or key in text, f"{key}: no code reads this variable"


def makefile() -> tuple[set[str], set[str]]:
    text = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", text, re.M))
    variables = set(re.findall(r"^([A-Z_]+)\s*[?:]?=", text, re.M))
    return targets, variables


def extras() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]")[1].split("\n[")[0]
    return set(re.findall(r"^([\w-]+)\s*=", section, re.M))


def check_other(env: dict, words: list[str]) -> None:
    check_environment(env)
    name, rest = words[0], words[1:]
    if name == "make":
        targets, variables = makefile()
        for w in rest:
            if "=" in w:
                assert w.split("=")[0] in variables, f"make: the Makefile has no variable {w}"
            else:
                assert w in targets, f"make: the Makefile has no target {w}"
    elif name == ".":
        assert rest == [".venv/bin/activate"], words
        assert makefile()[1] >= {"VENV"} and "VENV   ?= .venv" in (ROOT / "Makefile").read_text()
    elif name in ("python", "python3"):
        check_python(rest)
    elif name == "pip":
        assert rest[0] == "install", words
        for w in rest[1:]:
            m = re.fullmatch(r"(?:\.|lenet5)\[([\w,]+)\]", w)
            if m:
                unknown = set(m.group(1).split(",")) - extras()
                assert not unknown, f"pip: pyproject.toml has no extra {unknown}"
            else:
                assert w in ("-e", "torch"), f"pip: no check for {w}"
    elif name == "curl":
        app = (ROOT / "src" / "lenet5" / "web" / "app.py").read_text()
        for w in rest:
            if w.startswith("http"):
                path, _, query = ("/" + w.split("/", 3)[3]).partition("?")
                assert f'"{path}"' in app, f"curl: the server has no route {path}"
                for name in (q.split("=")[0] for q in query.split("&") if q):
                    assert re.search(rf"\b{name}\b", app), f"curl: {path} takes no {name}"
            elif "@" in w:
                assert (ROOT / w.split("@", 1)[1]).is_file(), f"curl: no file {w}"
    elif name == "tensorboard":
        assert rest == ["--logdir", "runs"], words
    else:
        raise AssertionError(f"{name}: test_docs.py does not know how to check this command")


def check_python(rest: list[str]) -> None:
    if rest[:2] == ["-m", "venv"]:
        assert len(rest) == 3
    elif rest[:2] == ["-m", "pytest"]:
        for w in rest[2:]:
            assert (ROOT / w.split("::")[0]).is_file(), f"pytest: no file {w}"
    else:
        script = ROOT / rest[0]
        assert script.parent.name == "bench" and script.is_file(), f"python: no script {rest[0]}"
        source = script.read_text()
        for w in rest[1:]:
            if w.startswith("--"):
                assert f'"{w.split("=")[0]}"' in source, f"{rest[0]} has no flag {w}"


# ---- Python -----------------------------------------------------------------------------------

PYCON = [b for b in ALL_BLOCKS if b.lang == "pycon"]
PYTHON = [b for b in ALL_BLOCKS if b.lang == "python"]


def block_id(b: Block) -> str:
    return f"{b.page.relative_to(ROOT)}:{b.line}"


class Checker(doctest.OutputChecker):
    """doctest's own comparison, or line by line as console output is compared (`same`)."""

    def check_output(self, want, got, optionflags):
        if super().check_output(want, got, optionflags):
            return True
        wanted, printed = want.rstrip("\n").splitlines(), got.rstrip("\n").splitlines()
        return len(wanted) == len(printed) and all(map(same, wanted, printed))


@pytest.mark.parametrize("block", PYCON, ids=block_id)
def test_python_sessions_print_what_they_show(block, folder):
    text = "\n".join(block.lines) + "\n"
    test = doctest.DocTestParser().get_doctest(text, {}, block_id(block), str(block.page), block.line)
    runner = doctest.DocTestRunner(Checker(), optionflags=doctest.ELLIPSIS)
    report = []
    runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


@pytest.mark.parametrize("block", PYTHON, ids=block_id)
def test_python_examples_use_only_what_lenet5_has(block):
    import lenet5
    from lenet5.reader import Reader

    tree = ast.parse("\n".join(block.lines), block_id(block))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            owner = {"lenet5": lenet5, "reader": Reader}.get(node.value.id)
            name = f"{node.value.id}.{node.attr}"
            assert owner is None or hasattr(owner, node.attr), f"{block_id(block)}: no {name}"
        if isinstance(node, ast.ImportFrom) and node.module == "lenet5":
            for alias in node.names:
                assert hasattr(lenet5, alias.name), f"{block_id(block)}: lenet5 has no {alias.name}"


# ---- what the pages point at ------------------------------------------------------------------

def slug(heading: str) -> str:
    """A heading's anchor, as GitHub makes it."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_pictures_exist(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert targets
    for target in targets:
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        where = (page.parent / path).resolve() if path else page
        assert where.exists(), f"{page.relative_to(ROOT)}: {target}: no such file"
        if anchor and where.suffix == ".md":
            assert anchor in anchors(where), f"{page.relative_to(ROOT)}: {target}: no such heading"


def test_the_book_lists_every_page_in_order():
    numbered = sorted(p.name for p in (ROOT / "docs").glob("[0-9][0-9]-*.md"))
    assert [f"{n:02d}" for n in range(1, len(numbered) + 1)] == [p[:2] for p in numbered]
    for index, start in ((ROOT / "docs" / "README.md", "#"), (ROOT / "README.md", "## Read more")):
        text = index.read_text()
        text = text[text.index(start):]
        positions = [text.find(name) for name in numbered]
        assert -1 not in positions and positions == sorted(positions), f"{index}: {numbered}"


def test_the_tests_and_benchmarks_the_pages_cite_exist():
    for page in PAGES:
        text = page.read_text()
        for script in re.findall(r"\b(bench/\w+\.(?:py|sh))", text):
            assert (ROOT / script).is_file(), f"{page.name}: no {script}"
        for file, names in re.findall(r"`(tests/\w+\.py)((?:::\w+)?)`", text):
            assert (ROOT / file).is_file(), f"{page.name}: no {file}"
            if names:
                assert f"def {names[2:]}(" in (ROOT / file).read_text(), f"{page.name}: no {file}{names}"
        # the table's further names from the same file: `::test_...` right after one
        for file, more in re.findall(r"`(tests/\w+\.py)::\w+`((?:, `::\w+`)+)", text):
            for name in re.findall(r"::(\w+)", more):
                assert f"def {name}(" in (ROOT / file).read_text(), f"{page.name}: no {file}::{name}"


def test_the_input_picture_shown_is_what_show_input_writes(folder, capsys):
    from PIL import Image

    run_lenet5(["predict", "docs/pictures/my-seven.jpg", "--show-input", "seen"], capsys)
    written = np.asarray(Image.open(folder / "seen" / "my-seven-input.png"), dtype=int)
    shown = np.asarray(Image.open(PICTURES / "my-seven-input.png"), dtype=int)
    assert written.shape == shown.shape == (224, 224)
    assert np.abs(written - shown).max() <= 16, "docs/pictures/my-seven-input.png: make it again"


def test_every_kind_of_command_is_found():
    """The collector itself: it finds the commands, their output, and continued lines."""
    texts = [c.text for c in COMMANDS]
    assert "lenet5 summary" in texts and "make test" in texts
    summary = next(c for c in COMMANDS if c.text == "lenet5 summary")
    assert summary.output[0].startswith("layer") and "44,426" in summary.output[-2]
    assert same("7 (13.1 %)", "7 (13.0 %)") and not same("7 (13.1 %)", "7 (13.3 %)")
    assert not same("2026 (100.0%)", "2026 (>99.9%)") and not same("44,426", "44,427")
    assert any(t.startswith("torchrun --nnodes=2") and "--name big" in t for t in texts)

"""README.md is a test: its by-hand steps run as written, and every `bonedb` line in it and in every
command's --help parses against the real commands (as sqlite-utils' documentation tests do).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from boneclf.cli.main import cli

README = Path(__file__).resolve().parents[1] / "README.md"
BY_HAND = "The same steps by hand"
_OPERATORS = {"&&", "||", "|", ";", "&"}
_REDIRECTS = {">", ">>", "<", "2>", "2>&1"}


def code_blocks(text: str, language: str = "bash") -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def by_hand_block() -> str:
    """The README's "same steps by hand" block, read at test time (never a copy)."""
    text = README.read_text()
    assert BY_HAND in text, f"README.md has no {BY_HAND!r} section"
    [block, *_] = code_blocks(text[text.index(BY_HAND):])
    return block


def shell_commands(script: str) -> list[list[str]]:
    """Each simple command of a shell snippet as words: continuations joined, comments dropped, command
    substitutions parsed as commands of their own and replaced by a run id, variables by a run id."""
    script = script.replace("\\\n", " ")
    inner = re.findall(r"\$\(([^()]*)\)", script)
    script = re.sub(r"\"?\$\([^()]*\)\"?", "7", script)
    script = re.sub(r"\"?\$\{?[A-Za-z_]\w*\}?\"?", "7", script)
    commands: list[list[str]] = [c for snippet in inner for c in shell_commands(snippet)]
    for line in script.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words, skip = [], False
        for token in lexer:
            if skip:
                skip = False
            elif token in _OPERATORS:
                commands.append(words)
                words = []
            elif token in _REDIRECTS:
                skip = True
            else:
                words.append(token)
        commands.append(words)
    return [c for c in commands if c]


def bonedb_lines(text: str) -> list[list[str]]:
    return [c[1:] for c in shell_commands(text) if c[0] == "bonedb"]


def parse(args: list[str]) -> tuple[str, ...]:
    """Parse a `bonedb` command line like the real command would, without running it: unknown options,
    missing arguments and bad values raise click.UsageError. Returns the command's path."""
    command: click.Command = cli
    context, path, args = None, (), list(args)
    while True:
        context = command.make_context(path[-1] if path else "bonedb", args, parent=context)
        if not isinstance(command, click.Group):
            return path
        rest = context.args
        assert len(rest) < len(args), f"bonedb {' '.join(path)} needs a command"
        name = args[len(args) - len(rest) - 1]
        command = command.get_command(context, name)
        assert command is not None, f"no command bonedb {' '.join(path + (name,))}"
        path, args = path + (name,), rest


def every_command(group: click.Group = cli, prefix: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from every_command(command, prefix + (name,))
        else:
            yield prefix + (name,), command


def every_group(group: click.Group = cli, prefix: tuple[str, ...] = ()):
    yield prefix
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from every_group(command, prefix + (name,))


def help_examples(path: tuple[str, ...]) -> list[list[str]]:
    """The `bonedb ...` lines of a command's --help text (its examples), before the options."""
    result = CliRunner().invoke(cli, [*path, "--help"], catch_exceptions=False)
    assert result.exit_code == 0
    description = result.output.split("\nOptions:", 1)[0].split("\n", 1)[1]  # without the Usage line
    return bonedb_lines("\n".join(line.strip() for line in description.splitlines()
                                   if line.strip().startswith("bonedb ")))


def test_parser_reads_the_shapes_the_readme_uses():
    commands = shell_commands('python3 -m venv .venv && bonedb demo --workdir x\n'
                              'bonedb runs compare 3 4 --csv > out.csv  # a comment\n'
                              'bonedb evaluate "$(bonedb runs list --latest --ids)" \\\n  --subset val\n'
                              "bonedb ingest-folder d --dataset f --patient-pattern '^(\\d+)_'")
    assert commands == [["bonedb", "runs", "list", "--latest", "--ids"], ["python3", "-m", "venv", ".venv"],
                        ["bonedb", "demo", "--workdir", "x"], ["bonedb", "runs", "compare", "3", "4", "--csv"],
                        ["bonedb", "evaluate", "7", "--subset", "val"],
                        ["bonedb", "ingest-folder", "d", "--dataset", "f", "--patient-pattern", "^(\\d+)_"]]
    with pytest.raises(click.UsageError, match="No such option"):
        parse(["train", "--stage", "bodypart", "--epoch", "3"])
    with pytest.raises(click.UsageError):
        parse(["demo", "--database-url", "sqlite:///x"])  # a group option after the command: the README's old mistake
    assert parse(["--database-url", "sqlite:///x", "demo"]) == ("demo",)


def test_every_code_fence_in_the_readme_stands_on_its_own_line():
    """An opening fence names at most a language; a closing one is alone: text after it swallows the prose
    that follows into the code block (as "``` On the full-size synthetic MURA" once did)."""
    text = README.read_text()
    fences = [line for line in text.splitlines() if line.lstrip().startswith("```")]
    opening = True
    for line in fences:
        rest = line.lstrip()[3:]
        assert (re.fullmatch(r"[\w+-]*", rest) if opening else rest.strip() == ""), f"README.md: {line!r}"
        opening = not opening
    assert opening, "README.md: a code block is never closed"


def test_every_bonedb_line_in_the_readme_parses():
    lines = [args for block in code_blocks(README.read_text()) for args in bonedb_lines(block)]
    assert len(lines) > 40
    for args in lines:
        try:
            parse(args)
        except click.UsageError as exc:
            pytest.fail(f"README.md: `bonedb {shlex.join(args)}` does not parse: {exc.format_message()}")


def test_every_help_example_parses():
    paths = [path for path, _command in every_command()] + list(every_group())
    for path in paths:
        examples = help_examples(path)
        assert examples, f"bonedb {' '.join(path)} --help has no example"
        for args in examples:
            try:
                parse(args)
            except click.UsageError as exc:
                pytest.fail(f"bonedb {' '.join(path)} --help: `bonedb {shlex.join(args)}` does not parse: "
                            f"{exc.format_message()}")


def test_every_command_is_documented_in_the_readme_with_an_example():
    documented = {parse(args) for block in code_blocks(README.read_text()) for args in bonedb_lines(block)}
    missing = [" ".join(path) for path, _command in every_command() if path not in documented]
    assert not missing, f"commands without an example in README.md: {', '.join(missing)}"


def test_every_option_says_what_it_does():
    for path, command in every_command():
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                assert param.help, f"bonedb {' '.join(path)} {param.opts[0]} has no help text"


def _bonedb_on_path() -> dict[str, str]:
    """The environment a user has after installing: the installed `bonedb` first on PATH, no database URL."""
    bonedb = shutil.which("bonedb", path=str(Path(sys.executable).parent))
    assert bonedb, f"no bonedb console script beside {sys.executable}: install the package"
    env = {k: v for k, v in os.environ.items() if k != "BONEDB_DATABASE_URL"}
    env["PATH"] = f"{Path(bonedb).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_readme_steps_by_hand_run_verbatim(tmp_path):
    """The block runs as written, as a shell script (stopping at the first failure), in an empty folder,
    after an earlier attempt that failed and took run id 1: the block must not count on run ids."""
    block = by_hand_block()
    env = _bonedb_on_path()
    lines = block.replace("\\\n", " ").splitlines()
    first_train = next(i for i, line in enumerate(lines) if line.startswith("bonedb train"))
    setup = "\n".join(lines[:first_train])
    (tmp_path / "runs" / "1").mkdir(parents=True)
    (tmp_path / "runs" / "1" / "notes.txt").write_text("someone else's files")
    attempt = subprocess.run(["bash", "-e", "-c", setup + "\n" + lines[first_train]], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=900)
    assert attempt.returncode == 1 and "already holds another run's files" in attempt.stderr, attempt.stderr

    result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    from boneclf.ml.evaluation import latest_result
    from boneclf.store.engine import make_engine
    from boneclf.store.runs import list_runs

    engine = make_engine(f"sqlite:///{tmp_path / 'bonedb.sqlite'}")
    runs = list_runs(engine)
    assert [(r.id, r.stage, r.status) for r in runs] == [
        (1, "bodypart", "failed"), (2, "bodypart", "finished"), (3, "fracture", "finished")]
    # The defaults the block leaves on: TensorBoard logs, the persistent decoded cache, and for stage 1 the paper's augmentation.
    assert runs[1].parameters["tensorboard"] and runs[1].parameters["cache"] == "persistent"
    assert runs[1].parameters["augment"] == "paper"
    assert list((tmp_path / "runs" / "3" / "tensorboard").rglob("events.out.tfevents.*"))
    stage1 = latest_result(engine, runs[1], "test")
    assert stage1 is not None and stage1.overall.accuracy >= 0.9, "stage 1 learns the body part"
    assert latest_result(engine, runs[2], "test") is not None, "the block evaluates the stage-2 run it trained"
    assert latest_result(engine, runs[0], None) is None, "nothing points at the failed attempt"
    assert (tmp_path / "report.html").stat().st_size > 10_000
    engine.dispose()

"""Every command of the workshop guide (vagrant/README.md) runs, and shows what the guide says it shows.

The guide's convention (also described in a comment at its top):

- An exercise is a level-2 section whose heading starts with "Exercise" (`## Exercise 3: Outbound capture`); it
  becomes one pytest case named after its heading.
- Inside an exercise, every ```` ```sh ```` block is run, in order, by one bash process per exercise (so shell
  variables such as `PID=$(netlab status ...)` carry over from block to block), with `set -e -o pipefail`: every
  command must exit 0; a command that is meant to fail is written `cmd || echo "exit code $?"`.
- A ```` ```text ```` block after a sh block (prose may sit between them) is what "you should see": each of its
  non-empty lines must match some line of that sh block's output (stdout and stderr together), in any order.
  Runs of whitespace count as one space, `...` matches anything within a line, and a match starts and ends at a
  word boundary (whitespace or the ends of the line), so `1 60 REDIRECT` does not match `11 60 REDIRECT`.
  `A [or] B` on one line: either A or B must match (a race the student may see either way).
- Other fences (```` ```console ````, ```` ```yaml ````) are never run and are not allowed inside an exercise;
  sh and text blocks are not allowed outside one.
- Every `netlab up` / `netlab run` names its lab with `--name`. The test appends a random suffix to those names
  everywhere in the exercise (commands and expected text), so two runs of the suite never share a lab. After the
  exercise, none of its labs may be left: no /run/netlab/LAB, no /run/netns/netlab.LAB.*, no /etc/netns/netlab.LAB.*,
  no process whose argv[0] starts with `netlab-pause:LAB:`.
- `sudo` is a no-op shell function (the test runs as root); `netlab` is the one next to sys.executable.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from labkit import leftovers

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "vagrant" / "README.md"
VENV_BIN = Path(sys.executable).parent
EXERCISE_TIMEOUT = 300.0
MARK = "@@netlab-guide"
RUN_LANG, EXPECT_LANG = "sh", "text"

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^(`{3,})\s*([\w+-]*)\s*$")
_LAB_NAME = re.compile(r"\bnetlab\s+(?:up|run)\b[^\n]*?--name[ =](\S+)")
_LAB_VERB = re.compile(r"\bnetlab\s+(?:up|run)\b([^\n]*)")


class GuideError(ValueError):
    """The guide breaks its own convention."""


@dataclass
class Block:
    line: int  # 1-based line of the opening fence in the guide
    commands: str
    expected: list[str] = field(default_factory=list)


@dataclass
class Exercise:
    title: str
    line: int
    blocks: list[Block] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")

    @property
    def labs(self) -> list[str]:
        names: list[str] = []
        for block in self.blocks:
            names += [n for n in _LAB_NAME.findall(block.commands) if n not in names]
        return names


def parse_guide(text: str, prefix: str = "Exercise", elsewhere: bool = False) -> list[Exercise]:
    """Exercises (level-2 sections whose heading starts with `prefix`), their sh blocks and each block's expected
    lines; GuideError when the convention is broken. `elsewhere`: other sections may have blocks (not run)."""
    exercises: list[Exercise] = []
    current: Exercise | None = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        heading = _HEADING.match(line)
        fence = _FENCE.match(line)
        if heading and len(heading.group(1)) == 2:
            title = heading.group(2)
            current = Exercise(title, i + 1) if title.startswith(prefix) else None
            if current is not None:
                exercises.append(current)
        elif fence:
            ticks, lang = fence.groups()
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == ticks), None)
            if end is None:
                raise GuideError(f"line {i + 1}: unclosed ``` block")
            body = lines[i + 1:end]
            where = f"line {i + 1}"
            if lang in (RUN_LANG, EXPECT_LANG) and current is None and not elsewhere:
                raise GuideError(f"{where}: a ```{lang} block outside an exercise (use ```console for the VM host)")
            if current is not None and lang not in (RUN_LANG, EXPECT_LANG):
                raise GuideError(f"{where}: ```{lang or '(no language)'} in '{current.title}': only sh and text")
            if current is not None and lang == RUN_LANG:
                current.blocks.append(Block(i + 1, "\n".join(body)))
            elif current is not None and lang == EXPECT_LANG:
                if not current.blocks or current.blocks[-1].expected:
                    raise GuideError(f"{where}: a ```text block must follow a ```sh block (one text block each)")
                expected = [e.strip() for e in body if e.strip()]
                if not expected or any(not a.replace("...", "").strip() for e in expected for a in alternatives(e)):
                    raise GuideError(f"{where}: an empty expectation, or a line that is only `...`")
                current.blocks[-1].expected = expected
            i = end
        i += 1
    for ex in exercises:
        if not ex.blocks:
            raise GuideError(f"'{ex.title}' (line {ex.line}) has no ```sh block")
        if not any(b.expected for b in ex.blocks):
            raise GuideError(f"'{ex.title}' (line {ex.line}) never says what the student should see")
        for block in ex.blocks:
            for rest in _LAB_VERB.findall(block.commands):
                if "--name" not in rest:
                    raise GuideError(f"line {block.line}: every `netlab up/run` in an exercise needs --name LAB")
        if not ex.labs:
            raise GuideError(f"'{ex.title}' (line {ex.line}) starts no lab (`netlab up SCENARIO --name LAB`)")
    return exercises


def _normalise(line: str) -> str:
    return " ".join(line.split())


def line_pattern(expected: str) -> re.Pattern[str]:
    """One expected line as a regex: whitespace runs collapsed, `...` matches anything within a line, and the match
    starts and ends at a word boundary (whitespace or the line's ends): `1 60 X` does not match `11 60 X`."""
    parts = _normalise(expected).split("...")
    gaps = [".*?"] * (len(parts) - 1)
    for n in range(len(gaps)):
        if parts[n].endswith(" ") and parts[n + 1].startswith(" "):  # `a ... b` matches `a b` too
            parts[n], parts[n + 1], gaps[n] = parts[n][:-1], parts[n + 1][1:], "(?: | .*? )"
    body = re.escape(parts[0]) + "".join(gap + re.escape(part) for gap, part in zip(gaps, parts[1:], strict=True))
    return re.compile(rf"(?<!\S){body}(?!\S)")


def alternatives(expected: str) -> list[str]:
    """`A [or] B`: either may be seen (e.g. the two ways curl reports one RST)."""
    return [a.strip() for a in expected.split(" [or] ")]


def missing_lines(expected: list[str], output: str) -> list[str]:
    """The expected lines that match no line of output."""
    got = [_normalise(o) for o in output.splitlines()]
    return [e for e in expected if not any(line_pattern(a).search(g) for a in alternatives(e) for g in got)]


def rename_labs(text: str, names: dict[str, str]) -> str:
    """Replace each lab name as a whole token (not inside a longer name such as ws-in-2)."""
    for old, new in names.items():
        text = re.sub(rf"(?<![A-Za-z0-9-]){re.escape(old)}(?![A-Za-z0-9-])", new, text)
    return text


def build_script(blocks: list[Block]) -> str:
    parts = [
        "set -e -o pipefail",
        f"trap 'rc=$?; printf \"\\n{MARK} failed (exit %s): %s\\n\" \"$rc\" \"$BASH_COMMAND\"' ERR",
        'sudo() { "$@"; }',
    ]
    for n, block in enumerate(blocks):
        parts += [f"printf '\\n{MARK} block {n}\\n'", block.commands]
    parts.append(f"printf '\\n{MARK} end\\n'")
    return "\n".join(parts) + "\n"


def split_output(output: str) -> tuple[dict[int, str], bool]:
    """Output of each block (by index) and whether the script reached its end."""
    chunks: dict[int, str] = {}
    current: int | None = None
    done = False
    for line in output.splitlines(keepends=True):
        if line.startswith(f"{MARK} block "):
            current = int(line.split()[-1])
            chunks[current] = ""
        elif line.startswith(f"{MARK} end"):
            done = True
            current = None
        elif current is not None:
            chunks[current] += line
    return chunks, done


def run_script(script: str, cwd: Path) -> tuple[int, str]:
    path = f"{VENV_BIN}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    env = dict(os.environ, PATH=path, COLUMNS="80")  # netlab's tables as in a standard terminal
    proc = subprocess.Popen(["bash", "--noprofile", "--norc", "-c", script], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=EXERCISE_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the exercise's own session: bash and what it started
        out, _ = proc.communicate()
        return -1, out + f"\n(timed out after {EXERCISE_TIMEOUT:.0f}s)\n"
    return proc.returncode, out


def _exercises() -> list[Exercise]:
    return parse_guide(GUIDE.read_text())


def _readme_sections() -> list[Exercise]:
    """The README's "Exploring a lab" section follows the guide's convention too."""
    return parse_guide((REPO / "README.md").read_text(), prefix="Exploring a lab", elsewhere=True)


def test_guide_follows_its_convention() -> None:
    exercises = _exercises()
    titles = [ex.title for ex in exercises]
    assert len(set(titles)) == len(titles), "exercise headings must be unique (they name the test cases)"
    assert len(exercises) >= 7


def test_the_readme_has_its_exploring_section() -> None:
    assert [ex.title for ex in _readme_sections()] == ["Exploring a lab"]


@pytest.mark.parametrize("exercise", _exercises() + _readme_sections(), ids=lambda ex: ex.slug)
def test_exercise(exercise: Exercise, tmp_path: Path) -> None:
    suffix = secrets.token_hex(2)
    names = {lab: f"{lab}-{suffix}" for lab in exercise.labs}
    assert all(len(n) <= 32 for n in names.values()), "lab names in the guide must leave room for a 5-char suffix"
    for name in names.values():
        assert not leftovers(name), f"lab {name} exists before the exercise"
    blocks = [Block(b.line, rename_labs(b.commands, names), [rename_labs(e, names) for e in b.expected])
              for b in exercise.blocks]
    try:
        rc, output = run_script(build_script(blocks), tmp_path)
        left = {name: leftovers(name) for name in names.values()}
    finally:
        for name in names.values():  # only when the exercise failed half-way: its own `netlab down` ran otherwise
            if leftovers(name):
                subprocess.run([str(VENV_BIN / "netlab"), "down", name], capture_output=True, timeout=120, check=False)

    chunks, done = split_output(output)
    problems: list[str] = []
    ran = max(chunks, default=0)
    if not done or rc != 0:
        failed = next((ln for ln in output.splitlines() if ln.startswith(f"{MARK} failed")), f"{MARK} failed ({rc})")
        problems.append(f"the sh block at guide line {blocks[ran].line} {failed.removeprefix(MARK + ' ')}\n"
                        f"--- commands\n{blocks[ran].commands}\n--- output\n{chunks.get(ran, output)}")
    for n, block in enumerate(blocks):
        if n not in chunks or not block.expected or (n == ran and not done):  # a block that stopped half-way
            continue
        missing = missing_lines(block.expected, chunks[n])
        if missing:
            problems.append(f"the sh block at guide line {block.line}: expected lines not in its output:\n  "
                            + "\n  ".join(missing) + f"\n--- commands\n{block.commands}\n--- output\n{chunks[n]}")
    leaked = [item for items in left.values() for item in items]
    if leaked:
        problems.append("labs left behind after the exercise (it must end with `netlab down LAB`):\n  "
                        + "\n  ".join(leaked))
    assert not problems, f"{exercise.title} (guide line {exercise.line}):\n\n" + "\n\n".join(problems)


# The checker must fail when the guide is wrong: these keep the parser and matcher honest without a lab.

_SAMPLE = """\
# Guide
```console
vagrant up
```
## Exercise 1: One
```sh
netlab up x --name ws-a
echo  hello   world
```
Prose in between.
```text
hello world
h...d
```
### more
```sh
netlab down ws-a
```
## Notes
"""


def test_parser_reads_exercises_blocks_and_labs() -> None:
    [ex] = parse_guide(_SAMPLE)
    assert (ex.title, ex.slug, ex.labs) == ("Exercise 1: One", "exercise-1-one", ["ws-a"])
    assert [b.expected for b in ex.blocks] == [["hello world", "h...d"], []]


@pytest.mark.parametrize("broken", [
    _SAMPLE.replace("```console", "```sh"),  # a runnable block outside an exercise
    _SAMPLE.replace("## Exercise 1: One\n```sh", "## Exercise 1: One\n```bash"),  # a block the test would skip
    _SAMPLE.replace(" --name ws-a", ""),  # a lab the test cannot rename
    _SAMPLE.replace("hello world\nh...d", "..."),  # an expectation that matches anything
    _SAMPLE.replace("hello world\nh...d", "hello [or] ..."),
    _SAMPLE.replace("```text\nhello world\nh...d\n```\n", ""),  # nothing to see
])
def test_parser_rejects_a_broken_convention(broken: str) -> None:
    with pytest.raises(GuideError):
        parse_guide(broken)


def test_matcher() -> None:
    output = "tcp 6 118 TIME_WAIT src=10.244.0.10 dst=10.244.0.11 sport=43610 dport=8080 src=10.244.0.11 sport=15006\n"
    assert missing_lines(["src=10.244.0.10 ... dport=8080 ... sport=15006", "TIME_WAIT   src=..."], output) == []
    assert missing_lines(["sport=15001"], output) == ["sport=15001"]
    assert missing_lines(["dport=8080 ... src=10.244.0.10"], output) == ["dport=8080 ... src=10.244.0.10"]
    assert missing_lines(["x (7) [or] y (56)"], "y (56)") == [] and missing_lines(["x [or] y"], "z") == ["x [or] y"]
    assert missing_lines(["ok ... root: yes", "a ... b ... c", "x...y"], "ok root: yes\na 1 b c\nx-y") == []
    assert missing_lines(["1 60 REDIRECT", "sport=1500", "8 118"], "11 60 REDIRECT\n6 118 TIME_WAIT") == [
        "1 60 REDIRECT", "sport=1500", "8 118"]
    assert rename_labs("netlab.ws-in.client ws-in-2 /run/netlab/ws-in/x", {"ws-in": "ws-in-ab12"}) == (
        "netlab.ws-in-ab12.client ws-in-2 /run/netlab/ws-in-ab12/x")


def test_failing_command_and_block_are_reported(tmp_path: Path) -> None:
    blocks = [Block(1, "echo one"), Block(5, "false\necho never")]
    rc, output = run_script(build_script(blocks), tmp_path)
    chunks, done = split_output(output)
    assert rc != 0 and not done and max(chunks) == 1 and "never" not in output
    assert f"{MARK} failed (exit 1): false" in output

"""docs/library.md's example runs as written (at a tiny scale), so the library walkthrough stays true."""

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "library.md"
SCALE_LINE = re.compile(r"^TRAIN_SIZE, EPOCHS, TEST_SIZE = .*$", re.MULTILINE)
METHODS_LINE = re.compile(r'^cul, nc, rp = .*$', re.MULTILINE)
TINY = {SCALE_LINE: "TRAIN_SIZE, EPOCHS, TEST_SIZE = 600, 1, 200",
        METHODS_LINE: 'cul, nc, rp = EXPOSURES.get("cul")(), '
                      'DEFENSES.get("nc")(epochs=2), DEFENSES.get("rp")(epochs=2)'}


def example_code() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    (code,) = [b for b in blocks if "EXPOSURES.get(" in b]
    return code


def test_the_example_sets_its_scale_and_methods_in_one_line_each():
    assert [len(pattern.findall(example_code())) for pattern in TINY] == [1, 1]


@pytest.mark.e2e
def test_the_library_example_runs_and_repeats_itself(data_root, seeded_cache, monkeypatch, capsys):
    monkeypatch.setenv("EBYD_DATA_ROOT", str(data_root))
    monkeypatch.setenv("EBYD_CACHE_DIR", str(seeded_cache))  # the decoded CIFAR-10 arrays, nothing else
    code = example_code()
    for pattern, tiny in TINY.items():
        code = pattern.sub(tiny, code)
    runs = []
    for _ in range(2):  # the example seeds everything it draws, so a second run prints the same
        exec(compile(code, str(DOC), "exec"), {"__name__": "library_example"})
        runs.append(capsys.readouterr().out.splitlines())
    lines = runs[0]
    assert [line.split()[0] for line in lines] == ["backdoored", "CUL", "X+NC", "RP", "EBYD-RP"]
    assert runs[1] == lines

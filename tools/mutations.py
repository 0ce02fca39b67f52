"""Tests that bite: apply each one-line mutation in the table below to a copy of the checkout, run the tests that
should catch it there, and print a markdown table (place, mutation, tests run, caught, seconds). The working tree is
never edited: each mutant is a fresh copy of the checkout's files, whose src/ comes first on PYTHONPATH (ahead of
the editable install, whose finder Python asks last), and whose tests are the ones run, so `import mnist_edge`, the
tests' `python -m mnist_edge` subprocesses and those that put src/ on their own path all get the mutant. Exits 1
if a mutation survives, or if a mutation's old text is not found exactly once (a refactor that moved the code makes
the table fail, not rot).

usage: python tools/mutations.py [--only NAME ...] [--list] [--baseline] [--timeout SECONDS]
"""

from __future__ import annotations

import ast
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _toolcli import Parser, fail, run, summary

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path("src/mnist_edge")


@dataclass(frozen=True)
class Mutation:
    name: str  # what --only takes
    path: str  # under src/mnist_edge/
    old: str  # must occur exactly once in that file
    new: str
    tests: tuple[str, ...]  # pytest arguments, run from the copy's root: test files, then any -k expression
    what: str  # the bug it plants, in a few words


MUTATIONS = (
    # The five of issue 24.
    Mutation("calibration-from-test", "export/publish.py", "return to_pixels(mnist.train_images[sample])",
             "return to_pixels(mnist.test_images[sample])",
             ("tests/test_export.py", "-k", "calibration_samples_training_digits"),
             "static int8 calibrated on the test digits that parity is measured on"),
    Mutation("batch-over-cap", "edge/serve/engine.py", "len(batch) < self.max_batch", "len(batch) <= self.max_batch",
             ("tests/test_serve.py", "-k", "batch_holds_at_most"), "serve batches 33 images where the cap is 32"),
    Mutation("weights-isnan", "train/checkpoint.py", "got.is_floating_point() and not bool(torch.isfinite(got).all())",
             "got.is_floating_point() and bool(torch.isnan(got).any())",
             ("tests/test_checkpoint.py", "-k", "weight and inf"), "a checkpoint's inf weights are loaded"),
    Mutation("t10k-unverified", "train/data.py", '_read_split(data_dir, "t10k", verify)',
             '_read_split(data_dir, "t10k", False)',
             ("tests/test_data.py", "-k", "tampered_test_set"), "the test digits are read without their SHA-256"),
    Mutation("body-limit-declared", "edge/serve/app.py", "if length > self.max_body", "if length >= self.max_body",
             ("tests/test_serve.py", "-k", "exactly_max_body"), "a Content-Length of exactly --max-body is refused"),
    # Ours: the places where a quiet off-by-one or a swapped name would ship wrong answers or unsafe files.
    Mutation("body-limit-streamed", "edge/serve/app.py", "if received > self.max_body:",
             "if received >= self.max_body:", ("tests/test_serve.py", "-k", "exactly_max_body"),
             "a chunked body of exactly --max-body is refused"),
    Mutation("refuse-at-threshold", "spec.py", "return not_digit >= threshold", "return not_digit > threshold",
             ("tests/test_open_set.py", "-k", "refuse_at_the_threshold"),
             "a score equal to the threshold is answered"),
    Mutation("top-k-order", "edge/predict.py", 'np.argsort(-p, kind="stable")[:top]',
             'np.argsort(p, kind="stable")[:top]', ("tests/test_predict.py", "-k", "json_matches_the_torch_model"),
             "the least likely digits are answered"),
    Mutation("api-top-bound", "edge/api.py", "1 <= top <= NUM_CLASSES", "1 <= top < NUM_CLASSES",
             ("tests/test_api.py", "-k", "top"), "Model.predict refuses top=10"),
    Mutation("parity-fp32-tolerance", "export/verify.py", "FP32 = Tolerances(max_abs_diff=1e-4,",
             "FP32 = Tolerances(max_abs_diff=1e-3,", ("tests/test_verify.py", "-k", "fp32_default_gate"),
             "fp32 files pass parity 10x further from PyTorch"),
    Mutation("parity-accuracy-drop", "export/verify.py", "ref_acc - art_acc > tolerances.max_accuracy_drop",
             "ref_acc - art_acc >= tolerances.max_accuracy_drop",
             ("tests/test_verify.py", "-k", "accuracy_drop or allowed_points"),
             "a drop of exactly the allowed points fails"),
    Mutation("polarity", "edge/mnist_form.py", "dark_ink = background - low > high - background",
             "dark_ink = background - low < high - background", ("tests/test_preprocess.py", "-k", "polarity"),
             "dark ink on paper is read as the background"),
    Mutation("centre-of-mass", "edge/mnist_form.py", "center = IMAGE_SIZE / 2", "center = (IMAGE_SIZE - 1) / 2",
             ("tests/test_preprocess.py", "-k", "off_centre or pass_through"),
             "digits centred half a pixel off MNIST's"),
    Mutation("edge-fragments", "edge/mnist_form.py", "ink = _without_edge_fragments(_ink(gray))",
             "ink = _ink(gray)", ("tests/test_preprocess.py", "-k", "ruled_line"),
             "a ruled line or a cut neighbour at the image's edge stays in what the model sees"),
    Mutation("format-allow-list", "edge/preprocess.py", "img = Image.open(stream, formats=tuple(IMAGE_FORMATS))",
             "img = Image.open(stream, formats=None)", ("tests/test_edge_hardening.py", "-k", "eps_or_other_format"),
             "every Pillow format is opened, EPS (Ghostscript) included"),
    Mutation("publish-put-back", "atomic.py", "_put_back(replaced)", "pass",
             ("tests/test_atomic.py", "-k", "rename_failing_midway"), "a publish failing midway leaves half the files"),
    Mutation("publish-check-first", "atomic.py", "require_replaceable(target)", "kind_of(target)",
             ("tests/test_atomic.py", "-k", "checks_every_target or never_replaced"),
             "a folder or a FIFO at a target is found only when renaming"),
    Mutation("manifest-plain-name", "edge/manifest.py", r'for c in "/\\\0")', r'for c in "\\\0")',
             ("tests/test_manifest.py",), "a manifest may name a file outside its folder (../x.onnx)"),
    Mutation("threshold-range", "edge/model_checks.py", "if not 0.0 <= value <= 1.0:", "if not 0.0 <= value:",
             ("tests/test_runtime.py", "-k", "threshold"),
             "a model file's threshold over 1 (never refuse) is accepted"),
    Mutation("temperature", "train/architectures.py", "raw[:, :NUM_CLASSES] / self.temperature",
             "raw[:, :NUM_CLASSES] * self.temperature", ("tests/test_open_set.py", "-k", "divided_by_the_temperature"),
             "the temperature multiplies the logits it should divide"),
    Mutation("open-set-answered", "measure/open_set.py", "not_digit < model.threshold", "not_digit <= model.threshold",
             ("tests/test_open_set.py", "-k", "refuses_where_predict_does"),
             "the open-set table answers a score equal to the threshold"),
)


def occurrences(mutation: Mutation, root: Path = ROOT) -> int:
    path = root / PACKAGE / mutation.path
    return path.read_text().count(mutation.old) if path.is_file() else 0


def table_problems(mutations: tuple[Mutation, ...] = MUTATIONS, root: Path = ROOT) -> list[str]:
    """Why the table does not fit the checkout under ROOT: an old text found other than once, a test file that is
    gone, a change that is no one-line change, a name used twice."""
    problems, names = [], set()
    for m in mutations:
        found = occurrences(m, root)
        if found != 1:
            problems.append(f"{m.name}: its old text is found {found} times in src/mnist_edge/{m.path}, not once")
        problems += [f"{m.name}: no {t}" for t in m.tests if t.startswith("tests/") and not (root / t).is_file()]
        if m.old == m.new or "\n" in m.old + m.new or m.name in names:
            problems.append(f"{m.name}: not a one-line change, or its name is used twice")
        names.add(m.name)
    return problems


def place(mutation: Mutation, root: Path = ROOT) -> str:
    """'file: function' where the old text is (the innermost function or class around it), or the file alone."""
    text = (root / PACKAGE / mutation.path).read_text()
    line = text[: text.index(mutation.old)].count("\n") + 1
    names = [n for n in ast.walk(ast.parse(text))
             if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
             and n.lineno <= line <= (n.end_lineno or n.lineno)]
    inner = max(names, key=lambda n: n.lineno, default=None)
    return f"{mutation.path}: {inner.name}" if inner else mutation.path


def change(old: str, new: str) -> str:
    """The words of OLD that NEW changes, with a word either side: '`len(batch) < self.max_batch` -> `... <= ...`'."""
    a, b = old.split(" "), new.split(" ")
    same = 0
    while same < min(len(a), len(b)) and a[same] == b[same]:
        same += 1
    tail = 0
    while tail < min(len(a), len(b)) - same and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    first = max(same - 1, 0)
    return f"`{' '.join(a[first : len(a) - tail + 1])}` -> `{' '.join(b[first : len(b) - tail + 1])}`"


def copy_checkout(dest: Path) -> Path:
    """The checkout's files (tracked, and untracked ones git does not ignore) copied under DEST."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True)
    if listed.returncode:
        fail(f"{ROOT}: cannot list the checkout's files ({listed.stderr.decode(errors='replace').strip()})")
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is left out, as it is here
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)  # a link copied as a link would let a mutant write through it
    return dest


def environment(copy: Path) -> dict[str, str]:
    """The tests' environment: the copy's src/ first; the data the checkout finds, which the copy (elsewhere) cannot."""
    from mnist_edge.train.data import DATA_ENV, WILD_ENV, local_dataset

    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # a stale .pyc of an earlier mutant can never be run
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(copy / "src"), os.environ.get("PYTHONPATH")]))
    for name, variable in (("mnist", DATA_ENV), ("digits-in-the-wild", WILD_ENV)):
        found = local_dataset(name, variable, ROOT)
        if found is not None:
            env[variable] = str(found)
    return env


def check_imported(copy: Path, env: dict[str, str]) -> None:
    """Fail unless the copy's mnist_edge is what `import mnist_edge` finds there (not the editable install's)."""
    done = subprocess.run([sys.executable, "-c", "import mnist_edge.spec; print(mnist_edge.spec.__file__)"],
                          cwd=copy, env=env, capture_output=True, text=True)
    if not done.stdout.strip().startswith(str(copy / "src")):
        fail(f"the copy's mnist_edge is not the one imported there ({done.stdout.strip() or done.stderr.strip()})")


def run_tests(mutation: Mutation, mutate: bool, timeout: float) -> tuple[int | None, float, str]:
    """pytest's exit status (None: timed out), its seconds and its output's tail, on a fresh copy of the
    checkout, mutated when MUTATE."""
    with tempfile.TemporaryDirectory(prefix="mnist-edge-mutant-") as tmp:
        copy = copy_checkout(Path(tmp))
        if mutate:
            target = copy / PACKAGE / mutation.path
            target.write_text(target.read_text().replace(mutation.old, mutation.new))
        env = environment(copy)
        check_imported(copy, env)
        command = [sys.executable, "-m", "pytest", "-x", "-q", "--no-header", "-p", "no:cacheprovider", *mutation.tests]
        started = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, time.perf_counter() - started, ""
        return done.returncode, time.perf_counter() - started, (done.stdout + done.stderr)[-2000:]


def verdict(status: int | None) -> str:
    """pytest's exit status on a mutant as the table says it: 1 (a test failed) is caught, 0 survived."""
    if status is None:
        return "error: timed out"
    return {0: "NO", 1: "yes", 5: "error: no tests ran"}.get(status, f"error: pytest exit {status}")


def tests_shown(mutation: Mutation) -> str:
    """The pytest arguments as typed in a shell, test files by their names: "test_x.py -k 'a or b'"."""
    return " ".join(a.removeprefix("tests/") if a.startswith("tests/") else shlex.quote(a) for a in mutation.tests)


def main() -> int:
    parser = Parser(description=summary(__doc__))
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run this mutation only (repeatable; see --list)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--baseline", action="store_true",
                        help="first run each mutation's tests on the real code too: they must pass there")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds for one pytest run (default: 1200)")
    args = parser.parse_args()
    if not args.timeout > 0:
        parser.error("--timeout must be more than 0 seconds")
    names = [m.name for m in MUTATIONS]
    if unknown := [n for n in args.only or [] if n not in names]:
        parser.error(f"no mutation named {', '.join(unknown)} (try --list)")
    if problems := table_problems():
        fail(f"the table no longer fits the source: {'; '.join(problems)}")
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.name}: {place(m)}: {change(m.old, m.new)}: {m.what}")
        return 0
    return report(chosen, args.baseline, args.timeout)


def report(chosen: list[Mutation], baseline: bool, timeout: float) -> int:
    """Run CHOSEN and print the table row by row; 1 if any survived or could not be judged."""
    print("| place | mutation | tests run | caught | s |\n| --- | --- | --- | --- | ---: |", flush=True)
    bad = []
    for m in chosen:
        if baseline:
            status, _, tail = run_tests(m, mutate=False, timeout=timeout)
            if status != 0:
                print(tail, file=sys.stderr)
                fail(f"{m.name}: its tests do not pass on the real code ({verdict(status)})")
        status, seconds, tail = run_tests(m, mutate=True, timeout=timeout)
        said = verdict(status)
        if said != "yes":
            bad.append(m.name)
            if said.startswith("error"):
                print(tail, file=sys.stderr)
        cells = [place(m), f"{change(m.old, m.new)}: {m.what}", tests_shown(m), said, f"{seconds:.0f}"]
        print("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |", flush=True)
    if bad:
        fail(f"{len(bad)} of {len(chosen)} mutations not caught: {', '.join(bad)}")
    return 0


if __name__ == "__main__":
    run(main)

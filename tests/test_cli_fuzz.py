"""Property-based: bad command-line flags and files give exit code 2 and one clear error naming the
flag (or file), never a traceback, and nothing expensive starts (no run dir, no Ray, no training).

Fast on purpose (no Ray, no RLlib): the entry points that would do real work are tripwires here, so a
check that regresses fails at once instead of starting a search."""

import json
import math
import re
import uuid
from pathlib import Path

import numpy as np
import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from typer.main import get_command
from typer.testing import CliRunner

import autocompress.measure
import autocompress.pipeline
import autocompress.rl
import autocompress.teacher
import autocompress._search
from autocompress.cli import app

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "cartpole_ppo.yaml"
SPEC = ROOT / "trials" / "cartpole_ppo.yaml"
CONFIG = ROOT / "configs" / "combo.yaml"
COMMANDS = ("search", "pareto", "pick", "export", "compress", "teach", "validate")

FUZZ = settings(max_examples=25, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# -- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def tripwires():
    """Anything past validation that would start Ray, train or search fails the test at once."""
    def tripwire(*args, **kwargs):
        raise AssertionError("expensive work started for a command that should have been rejected")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(autocompress._search, "run_search", tripwire)
        mp.setattr(autocompress.teacher, "train_teacher", tripwire)
        mp.setattr(autocompress.rl, "ensure_ray", tripwire)
        mp.setattr(autocompress.pipeline, "compress_trial", tripwire)
        yield


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli_fuzz")


@pytest.fixture(scope="module")
def a_file(base) -> Path:
    f = base / "a_file"
    f.write_text("not a directory\n")
    return f


@pytest.fixture(scope="module")
def run_dir(base) -> Path:
    """A finished search's run dir in miniature: journal study, two COMPLETE trials, search.json."""
    rd = base / "run"
    rd.mkdir()
    study = optuna.create_study(study_name="fake", directions=["maximize", "minimize", "minimize"],
                                storage=JournalStorage(JournalFileBackend(str(rd / "study.journal"))))
    for ret, lat, size in ((500.0, 0.01, 1000), (480.0, 0.005, 400)):
        t = study.ask()
        art = rd / "trials" / str(t.number) / "policy.acz"
        art.parent.mkdir(parents=True)
        art.write_bytes(b"acz")
        t.set_user_attr("config", {"prune": {"sparsity": 0.5}})
        t.set_user_attr("result", dict(return_mean=ret, return_std=1.0, return_ratio=ret / 500, latency_ms=lat,
                                       latency_ratio=lat / 0.01, bytes=size, bytes_ratio=size / 1000, params=100,
                                       artifact=str(art)))
        study.tell(t, [ret, lat, size])
    (rd / "search.json").write_text(json.dumps({"study_name": "fake", "storage": None, "tracking_uri": None,
                                                "objectives": ["return", "latency", "bytes"],
                                                "space": str(ROOT / "search_spaces" / "cartpole_ppo.yaml")}))
    return rd


def fresh(base: Path) -> Path:
    """A run dir path that does not exist yet (hypothesis runs many examples per test)."""
    return base / f"rd-{uuid.uuid4().hex[:12]}"


# -- running the CLI and judging its answer ------------------------------------------------

def invoke(*args):
    # the env vars behind --storage / --tracking-uri must not leak in from the developer's shell
    runner = CliRunner(env={"AUTOCOMPRESS_STORAGE": None, "MLFLOW_TRACKING_URI": None,
                            "AUTOCOMPRESS_FAULT_TRIALS": None})
    return runner.invoke(app, [str(a) for a in args])


def text_of(result) -> str:
    text = result.output
    try:
        if result.stderr not in text:
            text += result.stderr
    except (ValueError, AttributeError):  # stderr not captured separately in this click/typer
        pass
    return text


def flat(text: str) -> str:
    """Usage errors come in a rich box that may wrap: drop the box and join the lines."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def assert_rejected(result, *names: str) -> str:
    text = text_of(result)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"raised {result.exception!r}; output:\n{text}"
    assert result.exit_code == 2, f"exit {result.exit_code}; output:\n{text}"
    assert "Traceback" not in text
    for name in names:
        assert name in text or name in flat(text), f"{name!r} not named in:\n{text}"
    # (no Ray check here: the module's tripwires fail any Ray start, and an earlier test may own a Ray)
    return text


def known_flags(command: str) -> set[str]:
    cmd = get_command(app).commands[command]
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}


# -- strategies ----------------------------------------------------------------------------

safe_chars = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp"))


def not_a_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return True
    return False


non_numeric = st.text(safe_chars, max_size=12).filter(not_a_number)
non_int = non_numeric | st.floats().filter(lambda x: not (math.isfinite(x) and x == int(x))).map(repr)
non_finite = st.sampled_from(["nan", "inf", "-inf", "NaN", "Infinity", "-Infinity"])
names = st.text(st.characters(codec="utf-8", exclude_characters="/", exclude_categories=("Cs", "Cc", "Zl", "Zp", "Zs")),
                min_size=1, max_size=20).filter(lambda s: s not in (".", ".."))
#: SQLAlchemy dialects that exist (a URL with one of them is real and might connect)
DIALECTS = {"sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql"}
#: schemes MLflow has a tracking store for
MLFLOW_SCHEMES = {"", "file", "http", "https", "databricks", "databricks-uc", "uc"} | DIALECTS
schemes = st.from_regex(r"[a-z][a-z0-9+.-]{1,10}", fullmatch=True)
junk = st.text(st.characters(codec="ascii", exclude_categories=("Cc",)), max_size=20)
bad_storage = (
    st.tuples(schemes.filter(lambda s: s.split("+")[0] not in DIALECTS), junk).map(lambda t: f"{t[0]}://{t[1]}")
    | st.text(st.characters(codec="ascii", exclude_categories=("Cc",)), min_size=1, max_size=20).filter(
        lambda s: "://" not in s)
    | names.map(lambda n: f"sqlite:////nonexistent-{uuid.uuid4().hex[:6]}/{n}/study.db")
    | st.sampled_from(["postgresql+nodriver://u@h/db", "mysql+nodriver://u@h/db"]))
bad_tracking = (st.tuples(schemes.filter(lambda s: s.split("+")[0] not in MLFLOW_SCHEMES), junk)
                .map(lambda t: f"{t[0]}://{t[1]}")
                | st.sampled_from(["http://", "https://", "http:///path", "https://:5000"]))


# -- search --------------------------------------------------------------------------------

@FUZZ
@given(flag=st.sampled_from(["--trials", "--parallel"]), value=st.integers(max_value=0).map(str) | non_int)
def test_search_counts_must_be_positive_ints(base, flag, value):
    rd = fresh(base)
    assert_rejected(invoke("search", SPACE, f"{flag}={value}", "--run-dir", rd), flag)
    assert not rd.exists()


@pytest.mark.parametrize("args,flag", [(["-n", "0"], "--trials"), (["-n", "x"], "--trials"),
                                       (["-p", "-1"], "--parallel"), (["-p", "1.5"], "--parallel")])
def test_search_short_flags(base, args, flag):
    rd = fresh(base)
    assert_rejected(invoke("search", SPACE, *args, "--run-dir", rd), flag)
    assert not rd.exists()


@FUZZ
@given(value=st.integers(max_value=-1).map(str) | st.integers(min_value=2**32).map(str) | non_int)
def test_search_seed_range(base, value):
    rd = fresh(base)
    assert_rejected(invoke("search", SPACE, f"--seed={value}", "--run-dir", rd), "--seed")
    assert not rd.exists()


def test_search_seed_from_space_file_out_of_range(base):
    space = base / "neg_seed_space.yaml"
    space.write_text(SPACE.read_text().replace("seed: 0", "seed: -1").replace("../trials/", f"{SPEC.parent}/"))
    rd = fresh(base)
    assert_rejected(invoke("search", space, "--run-dir", rd), str(space), "seed")
    assert not rd.exists()


@FUZZ
@given(value=st.text(safe_chars, max_size=12).filter(lambda s: s not in ("tpe", "nsga2", "gp", "random")))
def test_search_unknown_sampler(base, value):
    rd = fresh(base)
    assert_rejected(invoke("search", SPACE, f"--sampler={value}", "--run-dir", rd), "--sampler")
    assert not rd.exists()


@FUZZ
@given(url=bad_storage, resume=st.booleans())
def test_search_bad_storage(base, url, resume):
    rd = fresh(base)
    r = invoke("search", SPACE, f"--storage={url}", "--run-dir", rd, *(["--resume"] if resume else []))
    assert_rejected(r, "--storage")
    assert not rd.exists()


@FUZZ
@given(uri=bad_tracking)
def test_search_bad_tracking_uri(base, uri):
    rd = fresh(base)
    assert_rejected(invoke("search", SPACE, f"--tracking-uri={uri}", "--run-dir", rd), "--tracking-uri")
    assert not rd.exists()


def test_search_dirs_blocked_by_a_file(base, a_file):
    rd = fresh(base)
    assert_rejected(invoke("search", SPACE, "--run-dir", a_file), "--run-dir", str(a_file))
    assert_rejected(invoke("search", SPACE, "--run-dir", a_file / "sub"), "--run-dir", str(a_file))
    assert_rejected(invoke("search", SPACE, "--run-dir", rd, "--cache-dir", a_file), "--cache-dir")
    assert not rd.exists()


def test_search_resume_of_nothing_creates_nothing(base):
    rd = fresh(base)
    assert_rejected(invoke("search", SPACE, "--resume", "--run-dir", rd), "--resume", str(rd))
    assert not rd.exists()


# -- files that are missing, not files, or not text -----------------------------------------

@FUZZ
@given(command=st.sampled_from(["search", "teach", "validate", "compress", "compress-config"]), name=names)
def test_missing_files_are_named(base, command, name):
    missing = base / "missing" / name
    args = {"search": ["search", missing, "--run-dir", fresh(base)], "teach": ["teach", missing],
            "validate": ["validate", missing], "compress": ["compress", missing, "--config", CONFIG],
            "compress-config": ["compress", SPEC, "--config", missing]}[command]
    text = assert_rejected(invoke(*args), str(missing))
    assert "not found" in text


@pytest.mark.parametrize("name", ["a[/]b.yaml", "[bold]x.yaml", "x:smile:y.yaml", "a\\[b].yaml", "[link=x]y"])
def test_file_names_are_printed_verbatim(base, name):
    """Paths are plain text in an error, not rich markup or emoji codes."""
    missing = base / name
    for args in (["validate", missing], ["search", missing, "--run-dir", fresh(base)]):
        assert_rejected(invoke(*args), str(missing))


@FUZZ
@given(command=st.sampled_from(["search", "teach", "validate", "compress"]),
       data=st.binary(min_size=1, max_size=64).filter(lambda b: not _is_utf8(b)))
def test_binary_files_are_named(base, command, data):
    f = base / f"binary-{uuid.uuid4().hex[:8]}.yaml"
    f.write_bytes(data)
    args = {"search": ["search", f, "--run-dir", fresh(base)], "teach": ["teach", f], "validate": ["validate", f],
            "compress": ["compress", SPEC, "--config", f]}[command]
    assert_rejected(invoke(*args), str(f))


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize("command", ["pareto", "pick", "export"])
def test_run_dir_that_is_not_one(base, a_file, command):
    extra = ["--trial", "0", "--output", base / "out.acz"] if command == "export" else []
    for rd in (base / "no-such-run", a_file, base):
        assert_rejected(invoke(command, rd, *extra), str(rd))


# -- pareto / pick / export ------------------------------------------------------------------

@FUZZ
@given(command=st.sampled_from(["pareto", "pick", "export"]), url=bad_storage)
def test_run_commands_bad_storage(base, run_dir, command, url):
    extra = ["--trial", "0", "--output", base / "out.acz"] if command == "export" else []
    assert_rejected(invoke(command, run_dir, f"--storage={url}", *extra), "--storage")


@FUZZ
@given(value=non_finite | non_numeric)
def test_pick_min_return_ratio(run_dir, value):
    assert_rejected(invoke("pick", run_dir, f"--min-return-ratio={value}"), "--min-return-ratio")


@FUZZ
@given(flag=st.sampled_from(["--max-bytes", "--max-latency-ms"]),
       value=st.floats(max_value=-1e-9, allow_infinity=True).map(repr) | non_finite | non_numeric)
def test_pick_limits(run_dir, flag, value):
    assert_rejected(invoke("pick", run_dir, f"{flag}={value}"), flag)


@FUZZ
@given(value=st.text(safe_chars, max_size=12).filter(lambda s: s.casefold() not in ("latency", "bytes")))
def test_pick_minimize(run_dir, value):
    assert_rejected(invoke("pick", run_dir, f"--minimize={value}"), "--minimize")


@FUZZ
@given(trial=st.integers(max_value=-1) | st.integers(min_value=2, max_value=10**9))
def test_export_trial_that_does_not_exist(base, run_dir, trial):
    out = base / "export" / f"{uuid.uuid4().hex[:8]}.acz"
    text = assert_rejected(invoke("export", run_dir, f"--trial={trial}", "--output", out))
    assert "--trial" in flat(text) or f"trial {trial} " in text
    assert not out.exists()


@FUZZ
@given(value=non_int)
def test_export_trial_not_an_int(base, run_dir, value):
    assert_rejected(invoke("export", run_dir, f"--trial={value}", "--output", base / "x.acz"), "--trial")


def test_export_output_not_a_file_path(base, run_dir, a_file):
    assert_rejected(invoke("export", run_dir, "--trial", "1", "--output", base), "--output", str(base))
    assert_rejected(invoke("export", run_dir, "--trial", "1", "--output", a_file / "x.acz"), "--output",
                    str(a_file / "x.acz"))


def test_export_works_on_the_fake_run(base, run_dir, monkeypatch):
    """The fixture is a real run dir: the rejections above are about the flags, not the run."""
    # its artifacts cannot act: pick's fresh episodes each return 1
    monkeypatch.setattr(autocompress.measure, "artifact_returns", lambda data, spec, *a: np.ones(spec.eval.episodes))
    out = base / "ok" / "policy.acz"
    r = invoke("export", run_dir, "--trial", "1", "--output", out)
    assert r.exit_code == 0, text_of(r)
    assert out.read_bytes() == b"acz"
    assert invoke("pick", run_dir, "--minimize", "bytes", "--max-bytes", "500").exit_code == 0


# -- compress / teach ------------------------------------------------------------------------

def test_compress_and_teach_dirs_blocked_by_a_file(a_file):
    assert_rejected(invoke("compress", SPEC, "--config", CONFIG, "--output-dir", a_file), "--output-dir")
    assert_rejected(invoke("compress", SPEC, "--config", CONFIG, "-o", a_file / "x"), "--output-dir")
    assert_rejected(invoke("compress", SPEC, "--config", CONFIG, "--cache-dir", a_file), "--cache-dir")
    assert_rejected(invoke("teach", SPEC, "--cache-dir", a_file), "--cache-dir")


@pytest.mark.parametrize("args,flag", [
    (["compress", SPEC], "--config"),
    (["export", "runs/x", "--output", "x.acz"], "--trial"),
    (["export", "runs/x", "--trial", "0"], "--output"),
    (["pick", "runs/x", "--min-return-ratio"], "--min-return-ratio"),
    (["search", SPACE, "--trials"], "--trials"),
])
def test_missing_required_flag_or_value(args, flag):
    assert_rejected(invoke(*args), flag)


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_argument(command):
    assert_rejected(invoke(command), "Missing argument")


# -- unknown flags and extra arguments -------------------------------------------------------

@FUZZ
@given(command=st.sampled_from(COMMANDS),
       flag=st.from_regex(r"--[a-z][a-z0-9-]{0,15}", fullmatch=True) | st.from_regex(r"-[a-zA-Z]", fullmatch=True))
def test_unknown_flags(base, command, flag):
    if flag in known_flags(command):
        return
    args = {"search": [SPACE, "--run-dir", fresh(base)], "pareto": ["runs/x"], "pick": ["runs/x"],
            "export": ["runs/x", "--trial", "0", "--output", "x.acz"], "compress": [SPEC, "--config", CONFIG],
            "teach": [SPEC], "validate": [SPEC]}[command]
    text = assert_rejected(invoke(command, *args, flag), flag)
    assert "No such option" in flat(text)


@pytest.mark.parametrize("command", COMMANDS)
def test_extra_argument(command):
    required = {"export": ["--trial", "0", "--output", "x.acz"], "compress": ["--config", CONFIG]}.get(command, [])
    assert_rejected(invoke(command, "a.yaml", "surplus-arg", *required), "surplus-arg")


def test_search_storage_naming_a_directory(base):
    """'?' starts a URL's query: sqlite:////x/?/study.db names the directory /x/ (a case the fuzzer found)."""
    for url in (f"sqlite:////nonexistent-{uuid.uuid4().hex[:6]}/?/study.db", f"sqlite:///{base}"):
        rd = fresh(base)
        assert_rejected(invoke("search", SPACE, f"--storage={url}", "--run-dir", rd), "--storage", "directory")
        assert not rd.exists()

"""`python -m analysis.report` on bad input: it fails fast, in one line on stderr with exit
status 2, and accepts only the tracking URIs launch.py accepts (a SQLite file, or an
HTTP(S) server that answers its /health page within 3 s). MLflow is never called before
the URI passed; every value an error quotes is bounded (trainables.errors.one_line).

One case runs as a real subprocess (a server that does not answer, timed); the rest call
`main` in this process.
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import ENV, ROOT

import analysis.load
from analysis import report
from trainables.errors import SHOWN_LIMIT, one_line


@pytest.fixture
def closed_port():
    """A 127.0.0.1 port where nothing listens (bound, so nothing else takes it meanwhile,
    but not listening: a connection is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def mlflow_calls(monkeypatch) -> list[tuple]:
    """The calls the command line makes to the MLflow loader (which fails each one)."""
    calls = []

    def fake_load_sweep(experiment, uri):
        calls.append((experiment, uri))
        raise ValueError(f"no MLflow experiment '{experiment}' at {uri}")

    monkeypatch.setattr(analysis.load, "load_sweep", fake_load_sweep)
    return calls


def refused(capsys, argv: list[str]) -> str:
    """main(argv)'s one line on stderr, checked: exit status 2, one line, no traceback."""
    assert report.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("python -m analysis.report: error: ")
    assert "Traceback" not in err
    return err


def test_bounded_escapes_control_characters_and_cuts_long_values():
    assert one_line("name") == "name"
    assert one_line("a\nb\x1b[2J\u2028") == "a\\nb\\x1b[2J\\u2028"
    cut = one_line("x" * 5000)
    assert len(cut) == SHOWN_LIMIT == 200 and cut.endswith("...")
    assert len(one_line("\n" * 5000)) == SHOWN_LIMIT  # escapes count towards the limit


@pytest.mark.parametrize("command, out", [("analysis.report", "r.html"), ("analysis.export", "t.csv")])
def test_an_unreachable_server_fails_in_one_line_within_seconds(closed_port, tmp_path, command, out):
    uri = f"http://127.0.0.1:{closed_port}"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", command, "--experiment", "exp",
                           "--mlflow-uri", uri, "--out", str(tmp_path / out)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"MLflow tracking server '{uri}' is unreachable" in done.stderr
    assert elapsed < 15, f"took {elapsed:.1f} s (MLflow's retries take minutes)"
    assert not (tmp_path / out).exists()


def test_an_unreachable_server_is_refused_before_mlflow_is_called(capsys, closed_port, mlflow_calls):
    err = refused(capsys, ["--experiment", "exp", "--mlflow-uri", f"http://127.0.0.1:{closed_port}/"])
    assert "is unreachable" in err and not mlflow_calls


@pytest.mark.parametrize("uri", ["ftp://x", "results/mlflow.db", "/abs/mlflow.db", "file:///tmp/mlflow.db",
                                 "file:/tmp/mlflow.db", "sqlite://", "sqlite:///", "mysql://h/db",
                                 "http://", "https://:5000", "http://host:port", "http://host:70000",
                                 "http://ho st:5000", "http://host\n:5000", "http://[::1:5000"])
def test_only_the_uris_launch_py_accepts_are_accepted(capsys, mlflow_calls, uri):
    err = refused(capsys, ["--experiment", "exp", "--mlflow-uri", uri])
    assert "--mlflow-uri must be sqlite:////absolute/path.db, sqlite:///relative/path.db or " \
           "http(s)://host:port, got" in err
    assert not mlflow_calls


@pytest.mark.parametrize("uri", ["sqlite:////abs/mlflow.db", "sqlite:///relative/mlflow.db"])
def test_sqlite_uris_go_to_mlflow(capsys, mlflow_calls, uri):
    refused(capsys, ["--experiment", "exp", "--mlflow-uri", uri])
    assert mlflow_calls == [("exp", uri)]


def test_every_flag_says_what_it_does_and_its_default():
    flags = [a for a in report.build_parser()._actions if a.dest != "help"]
    flags += [a for a in report.command_line("export", "x")._actions if a.dest != "help"]
    assert flags and all(a.help and "default" in a.help for a in flags), [a.dest for a in flags]


def test_no_experiment_named_asks_mlflow_for_the_most_recent_sweep(capsys, mlflow_calls):
    refused(capsys, ["--mlflow-uri", "sqlite:////abs/mlflow.db"])
    assert mlflow_calls == [(None, "sqlite:////abs/mlflow.db")]


class _Health(http.server.BaseHTTPRequestHandler):
    """A tracking server's /health page, recording the paths asked for."""

    asked: list[str] = []

    def do_GET(self):  # noqa: N802 - the name http.server calls
        self.asked.append(self.path)
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):  # quiet
        pass


def test_a_server_that_answers_is_probed_then_read_through_mlflow(capsys, mlflow_calls):
    _Health.asked.clear()
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        uri = f"http://127.0.0.1:{server.server_port}"
        err = refused(capsys, ["--experiment", "exp", "--mlflow-uri", uri])
    finally:
        server.shutdown()
        server.server_close()
    assert _Health.asked == ["/health"] and mlflow_calls == [("exp", uri)]
    assert "no MLflow experiment 'exp'" in err


def test_quoted_values_are_bounded_and_escaped(capsys, mlflow_calls, tmp_path):
    long = "ftp://" + "\x1b[2J" + "x" * 5000
    err = refused(capsys, ["--experiment", "exp", "--mlflow-uri", long])
    quoted = err.split("got '", 1)[1].rstrip("\n").removesuffix("'")
    assert len(quoted) == SHOWN_LIMIT and "\x1b" not in err and quoted.startswith("ftp://\\x1b[2J")
    err = refused(capsys, ["--storage", str(tmp_path / ("no\nthere" + "y" * 5000))])
    assert "no\\nthere" in err and len(err) < 300
    with pytest.raises(SystemExit) as exit_:
        report.main(["--importance-min-trials", "\n" + "9x" * 5000])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and len(err) < 300


def test_a_malformed_results_folder_is_refused_in_one_line(capsys, tmp_path):
    trial = tmp_path / "exp" / "trainable_a0001_0_x"
    trial.mkdir(parents=True)
    (trial / "params.json").write_text("{not json")
    (trial / "result.json").write_text(json.dumps({"epoch": 1, "val_acc": 0.5}) + "\n")
    err = refused(capsys, ["--storage", str(tmp_path / "exp"), "--out", str(tmp_path / "r.html")])
    assert "params.json is not valid JSON" in err and not (tmp_path / "r.html").exists()


def test_a_file_error_is_one_line_naming_the_file(capsys, tmp_path, monkeypatch):
    missing = tmp_path / ("x\n" * 120)
    import analysis.page

    monkeypatch.setattr(analysis.load, "load_sweep_from_storage", lambda path: None)
    monkeypatch.setattr(analysis.page, "write_report", lambda *args, **kwargs: missing.read_text())
    err = refused(capsys, ["--storage", str(tmp_path)])
    assert "No such file or directory: " in err and "x\\nx\\n" in err and len(err) < 300

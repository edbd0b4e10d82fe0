"""Secret keys: every secret key, from the environment, the secrets folder or its file, is at least 16
characters, checked at start-up; ``--prod`` needs the link secret; development secret files are created
atomically, so processes starting together never crash and all read the same secret.

Real files, real processes (forty started at once on a FIFO) and the real ``cds`` command.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from cds import create_app, settings
from cds.errors import ConfigurationError
from cds.ledger.keys import link_secret, patient_secret
from cds.web.serving import production_problems

ROOT = Path(__file__).resolve().parent.parent
MIN = 16
GOOD = "a-good-secret-of-32-characters!!"

#: each secret key: (its setting, the setting naming its file, the function the service reads it with)
KEYS = [("LINK_SECRET", "LINK_SECRET_FILE", link_secret),
        ("AUDIT_PATIENT_KEY_SECRET", "AUDIT_SECRET_FILE", patient_secret)]


def _secret_via(source: str, name: str, file_setting: str, read, value: str, folder: Path) -> bytes:
    """Read one secret key given as ``value`` by ``source``: the environment, a secrets-folder file, or its
    own file (named by ``file_setting``)."""
    environ = {f"CDS_{file_setting}": str(folder / "own-file.secret")}
    if source == "environment":
        environ[f"CDS_{name}"] = value
    elif source == "secrets folder":
        (folder / "secrets").mkdir(exist_ok=True)
        (folder / "secrets" / f"CDS_{name}").write_text(value)
        environ["CDS_SECRETS_DIR"] = str(folder / "secrets")
    else:
        (folder / "own-file.secret").write_text(value)
    return read(settings.load(environ=environ))


@hypothesis_settings(max_examples=120, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(KEYS), source=st.sampled_from(["environment", "secrets folder", "file"]),
       length=st.integers(min_value=0, max_value=40), pad=st.sampled_from(["", "\n", " \n", "\r\n", "\n\n"]),
       char=st.sampled_from(["k", "é", "7", "-"]))
def test_every_secret_key_from_any_source_is_at_least_16_characters(tmp_path_factory, key, source, length,
                                                                     pad, char):
    """The class: whatever the source, a secret key shorter than 16 characters (white space around it in a
    file not counted) stops start-up with one line naming the setting; one of 16 or more is used as given."""
    name, file_setting, read = key
    if source == "environment" and length == 0:
        length = 1  # an empty variable means "not set": the file is read instead (covered by "file")
    value = char * length + (pad if source != "environment" else "")
    folder = tmp_path_factory.mktemp("secret")
    try:
        secret = _secret_via(source, name, file_setting, read, value, folder)
    except ConfigurationError as exc:
        assert length < MIN, exc.message
        assert "\n" not in exc.message and "at least 16 characters" in exc.message
        assert f"CDS_{name}" in exc.message or f"CDS_{file_setting}" in exc.message
        if length > 2:
            assert char * length not in exc.message  # never the secret itself
        return
    assert length >= MIN
    assert secret == (char * length).encode("utf-8")


@pytest.mark.parametrize(("name", "file_setting", "read"), KEYS)
@pytest.mark.parametrize("content", ["", "\n", "  \t \n", "short\n"])
def test_an_empty_or_short_secret_file_stops_the_service_at_start_up(tmp_path, name, file_setting, read,
                                                                      content):
    """Finding: a link secret file holding only a newline was accepted (the links signed with an empty
    key), and so was the audit's patient-key secret file (patient keys an HMAC with an empty key)."""
    path = tmp_path / "given.secret"
    path.write_text(content)
    config = {"DATABASE_URL": f"sqlite:///{tmp_path}/a.db", "LINK_SECRET": GOOD,
              "AUDIT_PATIENT_KEY_SECRET": GOOD, name: "", file_setting: str(path)}
    with pytest.raises(ConfigurationError) as info:
        create_app(config)
    message = info.value.message
    assert message.startswith(f"setting CDS_{file_setting}='{path}' is refused") and "\n" not in message
    assert "at least 16 characters" in message


def _one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cds: error: "), done.stderr
    return lines[0]


def test_cds_serve_refuses_a_link_secret_file_holding_only_a_newline(tmp_path):
    (tmp_path / "link.secret").write_text("\n")
    env = {**os.environ, "CDS_LINK_SECRET": "", "CDS_LINK_SECRET_FILE": str(tmp_path / "link.secret"),
           "CDS_AUDIT_PATIENT_KEY_SECRET": GOOD, "CDS_DATABASE_URL": f"sqlite:///{tmp_path}/a.db",
           "CDS_DEV_CLIENT_DIR": str(tmp_path / "dev"), "CDS_AUDIT_SPOOL_DIR": str(tmp_path / "spool"),
           "CDS_LOG_LEVEL": "ERROR"}
    done = subprocess.run([sys.executable, "-m", "cds", "serve", "--port", "0"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    line = _one_line_error(done)
    assert "CDS_LINK_SECRET_FILE" in line and "at least 16 characters" in line and "holds 0" in line


def _prod_values(tmp_path: Path, **overrides: str) -> dict:
    from support import trusted_clients_file_in

    environ = {"CDS_DEV_MODE": "false", "CDS_TRUSTED_CLIENTS": str(trusted_clients_file_in(tmp_path)),
               "CDS_PUBLIC_URL": "http://127.0.0.1:9", **overrides}
    return settings.load(environ=environ)


def test_prod_refuses_to_start_without_the_link_secret(tmp_path):
    """Finding: ``--prod`` started without a link secret (only a warning), each replica signing card links
    with a development secret of its own."""
    from test_serving import free_port, prod_env

    port = free_port()
    env = prod_env(tmp_path, port, CDS_LINK_SECRET="")
    env.pop("CDS_LINK_SECRET_FILE", None)
    done = subprocess.run([sys.executable, "-m", "cds", "serve", "--prod", "--port", str(port)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    line = _one_line_error(done)
    assert "--prod needs CDS_LINK_SECRET" in line and "gunicorn" not in done.stderr
    assert not (tmp_path / "instance" / "link.secret").exists()  # and it made no development secret


def test_prod_takes_the_link_secret_from_a_file_only_when_it_is_strong(tmp_path):
    assert production_problems(_prod_values(tmp_path, CDS_LINK_SECRET=GOOD)) == []
    assert any("--prod needs CDS_LINK_SECRET" in p for p in production_problems(_prod_values(tmp_path)))
    given = tmp_path / "link.secret"
    missing = production_problems(_prod_values(tmp_path, CDS_LINK_SECRET_FILE=str(given)))
    assert len(missing) == 1 and "CDS_LINK_SECRET_FILE" in missing[0] and not given.exists()
    given.write_text("too short\n")
    short = production_problems(_prod_values(tmp_path, CDS_LINK_SECRET_FILE=str(given)))
    assert len(short) == 1 and "CDS_LINK_SECRET_FILE" in short[0] and "at least 16 characters" in short[0]
    given.write_text(GOOD + "\n")
    assert production_problems(_prod_values(tmp_path, CDS_LINK_SECRET_FILE=str(given))) == []
    off = _prod_values(tmp_path, CDS_AUDIT="false")  # no audit, no card links: nothing to sign
    assert production_problems(off) == []


CHILD = """
import os, sys
from cds.ledger.keys import link_secret, patient_secret
folder, rounds = sys.argv[1], int(sys.argv[2])
answers = []
for r in range(rounds):
    here = os.path.join(folder, str(r))
    open(os.path.join(here, "ready", str(os.getpid())), "w").close()
    with open(os.path.join(here, "go")):  # blocks until every process is here and the test opens it
        pass
    keys = os.path.join(here, "keys")
    values = {"LINK_SECRET": "", "LINK_SECRET_FILE": os.path.join(keys, "link.secret"),
              "AUDIT_PATIENT_KEY_SECRET": "", "AUDIT_SECRET_FILE": os.path.join(keys, "patient.secret")}
    answers.append(link_secret(values).decode() + "/" + patient_secret(values).decode())
print(" ".join(answers))
"""

PROCESSES = 40
ROUNDS = 10  # one race per round; before the fix, most rounds lost a process to FileExistsError


def test_processes_starting_together_all_read_the_same_development_secrets(tmp_path):
    """Finding: forty processes creating the development secret files at once crashed with FileExistsError,
    and one could read a file before it was written. Forty real processes, released together on a FIFO,
    ten times over (a fresh folder each time)."""
    for r in range(ROUNDS):
        (tmp_path / str(r) / "ready").mkdir(parents=True)
        os.mkfifo(tmp_path / str(r) / "go")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CDS_LOG_LEVEL": "ERROR"}
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), str(ROUNDS)], cwd=tmp_path,
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(PROCESSES)]
    released: list[int] = []
    try:
        deadline = time.monotonic() + 900  # forty interpreters importing the package on a loaded machine
        for r in range(ROUNDS):
            while len(os.listdir(tmp_path / str(r) / "ready")) < PROCESSES:
                assert time.monotonic() < deadline, f"round {r}: the processes did not all get there"
                crashed = [c for c in children if c.poll() is not None]
                assert not crashed, [c.communicate()[1].strip().splitlines()[-1:] for c in crashed]
                time.sleep(0.02)
            released.append(os.open(tmp_path / str(r) / "go", os.O_WRONLY))  # all waiting in open() go on
        results = [c.communicate(timeout=600) for c in children]
    finally:
        for fd in released:
            os.close(fd)
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait()
    failures = [(c.returncode, err.strip().splitlines()[-1:])
                for c, (_, err) in zip(children, results, strict=True) if c.returncode]
    assert failures == [], failures
    rounds = list(zip(*(out.split() for out, _ in results), strict=True))
    assert len(rounds) == ROUNDS
    for r, answers in enumerate(rounds):
        assert len(set(answers)) == 1, (r, set(answers))  # one link and one patient secret, for all
        link, patient = answers[0].split("/")
        keys = tmp_path / str(r) / "keys"
        assert link == (keys / "link.secret").read_text().strip() and len(link) >= MIN
        assert patient == (keys / "patient.secret").read_text().strip() and len(patient) >= MIN
        assert sorted(p.name for p in keys.iterdir()) == ["link.secret", "patient.secret"]  # no temporary
        for name in ("link.secret", "patient.secret"):
            assert stat.S_IMODE((keys / name).stat().st_mode) == 0o600

#!/usr/bin/env python3
"""Build the project's patched durable-rules 2.0.28 wheel for the running Python.

durable-rules 2.0.28 is published as an sdist only, and it compiles a C extension. Unpatched it does not
import on Python 3.13 (its extension calls ``PyEval_CallObject``, removed in 3.13), and on 3.12 and newer
it calls ``datetime.utcfromtimestamp`` (deprecated), which the test suite turns into an error. This
script:

1. downloads the pinned sdist with pip (hash-checking mode, against SDIST_SHA256 below) into
   ``.wheels/`` and checks the hash again before use;
2. unpacks it into a temporary folder and applies REPLACEMENTS, each an exact string that must occur
   the stated number of times (any mismatch stops the build);
3. builds a wheel with pinned setuptools and wheel in a temporary build venv, into ``.wheels/pyX.Y/``.

The wheel's version is ``2.0.28+cds.N``: it satisfies the ``durable-rules==2.0.28`` pin, pip prefers it
to PyPI's sdist when given ``--find-links .wheels/pyX.Y``, and ``pip list`` shows the patched build.

Idempotent: when the wheel for this Python is already there, built from this very script (its sha256
is recorded beside the wheel), nothing is done. Prints the wheel's path on stdout; progress goes to stderr.

    python3.13 scripts/build_durable_rules.py            # -> .wheels/py3.13/durable_rules-2.0.28+cds.1-...
    python3.13 scripts/build_durable_rules.py --wheelhouse DIR
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

NAME = "durable-rules"
VERSION = "2.0.28"
SDIST = f"durable_rules-{VERSION}.tar.gz"
SDIST_SHA256 = "053b26f5e48d312d4fa27995243f954671be6eece477f150c059c364eb4d7d61"
LOCAL_VERSION = f"{VERSION}+cds.1"

# Build tools for the wheel, pinned so that the build is the same on every machine.
BUILD_REQUIREMENTS = ["setuptools==80.9.0", "wheel==0.45.1"]

# (file in the sdist, exact text, replacement, number of occurrences expected)
REPLACEMENTS = [
    # PyEval_CallObject(callable, args) was an alias of PyObject_CallObject, removed in Python 3.13.
    (
        "src/rulespy/rules.c",
        "PyEval_CallObject(callback, arglist)",
        "PyObject_CallObject(callback, arglist)",
        5,
    ),
    # _unix_now() subtracts this naive epoch (1970-01-01 00:00) from the naive local now(). The same
    # naive value, without the call deprecated in 3.12.
    (
        "libpy/durable/engine.py",
        "epoch = datetime.datetime.utcfromtimestamp(0)",
        "epoch = datetime.datetime.fromtimestamp(0, datetime.timezone.utc).replace(tzinfo=None)",
        1,
    ),
    # Mark the build as patched.
    (
        "setup.py",
        f"version = '{VERSION}',",
        f"version = '{LOCAL_VERSION}',",
        1,
    ),
]


def log(message: str) -> None:
    print(f"build_durable_rules: {message}", file=sys.stderr, flush=True)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def run(*command: str | Path) -> None:
    # The child's output goes to stderr, so that stdout carries only the wheel's path.
    subprocess.run([str(c) for c in command], check=True, stdout=sys.stderr)


def fetch_sdist(cache: Path, python: Path) -> Path:
    """The verified sdist in ``cache``; downloaded if needed by ``python`` (the build venv's)."""
    sdist = cache / SDIST
    if sdist.exists() and sha256(sdist) == SDIST_SHA256:
        return sdist
    sdist.unlink(missing_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    log(f"downloading {NAME} {VERSION} (sdist)")
    with tempfile.TemporaryDirectory() as tmp:
        requirement = Path(tmp) / "requirement.txt"
        requirement.write_text(f"{NAME}=={VERSION} --hash=sha256:{SDIST_SHA256}\n")
        # pip checks the hash as soon as the file is downloaded, before it runs the sdist's setup.py for
        # its metadata (with the build venv's pinned setuptools: --no-build-isolation).
        options = ["--no-deps", "--no-binary", ":all:", "--no-build-isolation", "--require-hashes"]
        run(python, "-m", "pip", "download", *options, "-r", requirement, "-d", cache)
    actual = sha256(sdist)
    if actual != SDIST_SHA256:
        sdist.unlink()
        raise SystemExit(f"build_durable_rules: {SDIST} has sha256 {actual}, expected {SDIST_SHA256}")
    return sdist


def unpack(sdist: Path, dest: Path) -> Path:
    with tarfile.open(sdist) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:  # Python 3.11 before 3.11.4
            for member in tar.getmembers():
                if member.name.startswith("/") or ".." in Path(member.name).parts:
                    raise SystemExit(f"build_durable_rules: unsafe path in {SDIST}: {member.name}")
            tar.extractall(dest)
    source = dest / f"durable_rules-{VERSION}"
    if not (source / "setup.py").exists():
        raise SystemExit(f"build_durable_rules: {SDIST} did not unpack to {source.name}/setup.py")
    return source


def patch(source: Path) -> None:
    for name, old, new, expected in REPLACEMENTS:
        path = source / name
        text = path.read_text(encoding="utf-8")
        found = text.count(old)
        if found != expected:
            raise SystemExit(
                f"build_durable_rules: expected {expected} occurrence(s) of {old!r} in {name}, found {found}"
            )
        path.write_text(text.replace(old, new), encoding="utf-8")
        log(f"patched {name}: {old!r} -> {new!r} ({found}x)")


def wheel_in(wheelhouse: Path) -> Path | None:
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    wheels = sorted(wheelhouse.glob(f"durable_rules-{LOCAL_VERSION}-{tag}-*.whl"))
    return wheels[0] if wheels else None


def main() -> int:
    # One build at a time per checkout: two run.sh calls with different venvs may need the same wheel.
    (ROOT / ".wheels").mkdir(exist_ok=True)
    with open(ROOT / ".wheels" / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return build()


def build() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    parser.add_argument(
        "--wheelhouse",
        type=Path,
        default=ROOT / ".wheels" / f"py{version}",
        help="folder for the wheel (default: .wheels/pyX.Y for the running Python)",
    )
    args = parser.parse_args()
    wheelhouse: Path = args.wheelhouse.resolve()
    recipe = sha256(Path(__file__).resolve())
    marker = wheelhouse / f"durable_rules-{LOCAL_VERSION}.recipe-sha256"

    existing = wheel_in(wheelhouse)
    if existing and marker.exists() and marker.read_text().strip() == recipe:
        log(f"{existing.name} is already built for Python {version}")
        print(existing)
        return 0

    with tempfile.TemporaryDirectory(prefix="durable-rules-build-") as tmp:
        env = Path(tmp) / "buildenv"
        log(f"making a build venv for Python {version} with {', '.join(BUILD_REQUIREMENTS)}")
        run(sys.executable, "-m", "venv", env)
        python = env / "bin" / "python"
        run(python, "-m", "pip", "install", "--quiet", *BUILD_REQUIREMENTS)
        sdist = fetch_sdist(ROOT / ".wheels", python)
        source = unpack(sdist, Path(tmp))
        patch(source)
        out = Path(tmp) / "out"
        log(f"building the wheel for Python {version}")
        run(python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", out, source)
        built = wheel_in(out)
        if built is None:
            raise SystemExit(f"build_durable_rules: pip wheel made no durable_rules-{LOCAL_VERSION} wheel")
        wheelhouse.mkdir(parents=True, exist_ok=True)
        for old in wheelhouse.glob("durable_rules-*.whl"):
            old.unlink()
        target = wheelhouse / built.name
        partial = wheelhouse / (built.name + ".part")
        shutil.copyfile(built, partial)
        partial.replace(target)
    marker.write_text(recipe + "\n")
    log(f"built {target}")
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""durable-rules, the rules engine's library: checked at start-up, and rebuilt patched where PyPI's build
cannot run.

durable-rules 2.0.28 is published as an sdist only, and it compiles a C extension. Unpatched it does not
import on Python 3.13 (its extension calls ``PyEval_CallObject``, removed in 3.13), and on 3.12 and newer
it calls ``datetime.utcfromtimestamp`` (deprecated), which the test suite turns into an error.

``problem()`` says, in one line, why the installed durable-rules cannot run here and which command fixes
it; the ``cds`` command calls it before anything else (``cds.cli.main``). The build:

1. downloads the pinned sdist with pip (hash-checking mode, against SDIST_SHA256 below) and checks the
   hash again before use;
2. unpacks it into a temporary folder and applies REPLACEMENTS, each an exact string that must occur
   the stated number of times (any mismatch stops the build);
3. builds a wheel with pinned setuptools and wheel in a temporary build venv, into ``HOME/pyX.Y/``;
4. with ``--install``, installs it into the running Python's environment in place of the unpatched one.

The wheel's version is ``2.0.28+cds.N``: it satisfies the ``durable-rules==2.0.28`` pin, pip prefers it
to PyPI's sdist when given ``--find-links HOME/pyX.Y``, and ``pip list`` shows the patched build.

Idempotent: when the wheel for this Python is already there, built from the same recipe (its digest is
recorded beside the wheel), nothing is built. Prints the wheel's path on stdout; progress goes to stderr.
Standard library only: ``scripts/build_durable_rules.py`` runs this file from a checkout before the
project is installed (HOME is then the checkout's ``.wheels/``).

    python -m cds.rules.durable_build --install   # installed: build, then install here
                                                  # (HOME: $XDG_CACHE_HOME or ~/.cache, /cds-bone-health)
    python3.13 scripts/build_durable_rules.py     # a checkout: -> .wheels/py3.13/durable_rules-2.0.28+...
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

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


def fix_command() -> str:
    """The command that builds the patched wheel and installs it into the running Python's environment."""
    return f"{sys.executable} -m cds.rules.durable_build --install"


def problem() -> str | None:
    """One line saying why the installed durable-rules cannot run on this Python, and the command that
    fixes it; None when the rules engine loads. The engine module is the only importer of durable-rules,
    so it is imported here as the service would import it: a C extension that cannot load (PyPI's build on
    Python 3.13: ``undefined symbol: PyEval_CallObject``) fails now, at start-up, not at the first call."""
    python = "Python {}.{}".format(*sys.version_info[:2])
    try:
        importlib.import_module("cds.rules.engine")
    except ImportError as exc:
        missing = getattr(exc, "name", None) or ""
        text = " ".join(str(exc).split())
        if isinstance(exc, ModuleNotFoundError) and missing.split(".")[0] in _DURABLE_MODULES:
            what = f"durable-rules is not installed for {python} ({sys.prefix})"
        elif "durable" in text:
            what = f"durable-rules {installed_version()} cannot run on {python}: {_symbol_or_text(text)}"
        else:
            raise
        return f"{what}; fix: {fix_command()} (builds and installs the patched durable-rules {LOCAL_VERSION})"
    return None


_DURABLE_MODULES = ("durable", "durable_rules_engine")


def installed_version() -> str:
    from importlib import metadata

    try:
        return metadata.version(NAME)
    except metadata.PackageNotFoundError:
        return "(version unknown)"


def _symbol_or_text(text: str) -> str:
    """``undefined symbol: X`` alone when the loader said so (the path before it says nothing more)."""
    marker = "undefined symbol:"
    if marker in text:
        return "its C extension does not load (" + marker + text.split(marker, 1)[1] + ")"
    return f"its C extension does not load ({text})"


def recipe_digest() -> str:
    """What the wheel is made from (sdist, replacements, build tools, version), as a digest: a wheel built
    from another recipe is built again; an edit elsewhere in this file is not a reason to."""
    recipe = repr((NAME, VERSION, SDIST_SHA256, LOCAL_VERSION, BUILD_REQUIREMENTS, REPLACEMENTS))
    return hashlib.sha256(recipe.encode()).hexdigest()


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


def default_home() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "cds-bone-health"


def main(argv: list[str] | None = None, home: Path | None = None) -> int:
    """Build (and with ``--install``, install) the wheel; ``home`` holds the sdist, the lock and the
    default wheelhouse ``home/pyX.Y``."""
    home = (home or default_home()).resolve()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    parser = argparse.ArgumentParser(
        description=f"Build the patched durable-rules {LOCAL_VERSION} wheel for the running Python.")
    parser.add_argument("--wheelhouse", type=Path, default=home / f"py{version}",
                        help=f"folder for the wheel (default: {home}/pyX.Y for the running Python)")
    parser.add_argument("--install", action="store_true",
                        help="install the wheel into this Python's environment, replacing its durable-rules")
    args = parser.parse_args(argv)
    home.mkdir(parents=True, exist_ok=True)
    try:
        # One build at a time per folder: two installs with different venvs may need the same wheel.
        with open(home / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            wheel = build(args.wheelhouse.resolve(), home)
        if args.install:
            install(wheel)
    except subprocess.CalledProcessError as exc:
        command = " ".join(str(c) for c in exc.cmd)
        raise SystemExit(f"build_durable_rules: `{command}` failed (exit {exc.returncode}); building needs "
                         "the network to PyPI, a C compiler and the Python headers") from None
    print(wheel)
    return 0


def install(wheel: Path) -> None:
    log(f"installing {wheel.name} into {sys.prefix}")
    run(sys.executable, "-m", "pip", "install", "--quiet", "--force-reinstall", "--no-deps", wheel)
    check = subprocess.run([sys.executable, "-c", "import cds.rules.engine"], capture_output=True, text=True)
    if check.returncode:
        last = (check.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"build_durable_rules: installed {wheel.name}, but the engine still does not load: "
                         f"{last}")
    log(f"durable-rules {LOCAL_VERSION} installed; the rules engine loads")


def build(wheelhouse: Path, home: Path) -> Path:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    recipe = recipe_digest()
    marker = wheelhouse / f"durable_rules-{LOCAL_VERSION}.recipe-sha256"

    existing = wheel_in(wheelhouse)
    if existing and marker.exists() and marker.read_text().strip() == recipe:
        log(f"{existing.name} is already built for Python {version}")
        return existing

    with tempfile.TemporaryDirectory(prefix="durable-rules-build-") as tmp:
        env = Path(tmp) / "buildenv"
        log(f"making a build venv for Python {version} with {', '.join(BUILD_REQUIREMENTS)}")
        run(sys.executable, "-m", "venv", env)
        python = env / "bin" / "python"
        run(python, "-m", "pip", "install", "--quiet", *BUILD_REQUIREMENTS)
        sdist = fetch_sdist(home, python)
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
    return target


if __name__ == "__main__":
    sys.exit(main())

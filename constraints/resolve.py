"""Proves a pin set installs on its platform, without the hardware: `make platforms`.

Each file in constraints/ is one platform's tested pin set, with directives in its header:

    #platform python=3.10,3.11 machine=aarch64 tags=manylinux_2_28_aarch64,...
    #provided torch==2.1.0 (why)   the platform installs it (base image, pkg), never pip
    #build safetensors (why)       no wheel for the platform: pip builds it there from its sdist
    #omitted hf-xet (why)          a dependency deliberately not installed (install with --no-deps)

For every Python version of the platform this asks pip (`install --dry-run --no-deps
--only-binary=:all: --python-version V --platform TAG`) for a wheel of every pinned release the
platform does not provide, and then checks, from those wheels' metadata, that the set is closed:
every requirement of every pinned distribution, and of lola-deft's own `agent` extra, evaluated for
that Python and machine, is met by a pinned or provided release (or documented as omitted).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PLATFORM_FILES = ("x86.txt", "jetson.txt", "termux.txt", "oldest.txt")


@dataclass
class PinSet:
    path: Path
    pythons: list[str]
    machine: str
    tags: list[str]
    extra: str = "agent"
    pins: list[Requirement] = field(default_factory=list)
    provided: dict[str, Version] = field(default_factory=dict)
    build: set[str] = field(default_factory=set)
    omitted: set[str] = field(default_factory=set)


def read_pin_set(path: Path) -> PinSet:
    """The pins and header directives of one constraints file (ValueError if malformed)."""
    settings: dict[str, str] = {}
    pin_set = PinSet(path, [], "", [])
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        where = f"{path.name}:{number}"
        if line.startswith("#platform "):
            settings = dict(part.split("=", 1) for part in line.split()[1:])
        elif line.startswith("#provided "):
            requirement = Requirement(line.split()[1])
            [spec] = list(requirement.specifier)
            pin_set.provided[canonicalize_name(requirement.name)] = Version(spec.version)
        elif line.startswith("#build "):
            pin_set.build.add(canonicalize_name(line.split()[1]))
        elif line.startswith("#omitted "):
            pin_set.omitted.add(canonicalize_name(line.split()[1]))
        elif line and not line.startswith("#"):
            requirement = Requirement(line)
            specs = list(requirement.specifier)
            if len(specs) != 1 or specs[0].operator != "==":
                raise ValueError(f"{where}: {line!r} is not an exact pin (NAME==VERSION)")
            pin_set.pins.append(requirement)
    if not {"python", "machine", "tags"} <= set(settings):
        raise ValueError(f"{path.name}: needs a '#platform python=... machine=... tags=...' line")
    pin_set.pythons = settings["python"].split(",")
    pin_set.machine = settings["machine"]
    pin_set.tags = settings["tags"].split(",")
    return pin_set


def environment(python: str, machine: str, extra: str = "") -> dict[str, str]:
    return {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": machine,
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": extra,
    }


def pins_for(pin_set: PinSet, python: str) -> dict[str, Version]:
    """The releases pinned for this Python (markers evaluated); provided ones override."""
    env = environment(python, pin_set.machine)
    chosen: dict[str, Version] = {}
    for requirement in pin_set.pins:
        if requirement.marker is None or requirement.marker.evaluate(env):
            [spec] = list(requirement.specifier)
            chosen[canonicalize_name(requirement.name)] = Version(spec.version)
    return {**chosen, **pin_set.provided}


def unmet(
    requirements: dict[str, list[str]],
    available: dict[str, Version],
    env: dict[str, str],
    omitted: set[str],
) -> list[str]:
    """What the set lacks: requirements (by requiring distribution) whose marker applies here
    and that no available release meets. Requirements of extras are ignored (env's own extra
    excepted)."""
    problems = []
    for owner, lines in sorted(requirements.items()):
        for line in lines:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate(env):
                continue
            name = canonicalize_name(requirement.name)
            if name in omitted:
                continue
            version = available.get(name)
            if version is None:
                problems.append(f"{owner} needs {requirement}, which is not pinned")
            elif not requirement.specifier.contains(version, prereleases=True):
                problems.append(f"{owner} needs {requirement}, pinned {name}=={version}")
    return problems


def agent_requirements(extra: str) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [*project["dependencies"], *project["optional-dependencies"][extra]]


def wheel_metadata(pins: dict[str, Version], python: str, tags: list[str]) -> dict[str, list[str]]:
    """Asks pip for a wheel of each pinned release for this Python and platform (no install,
    no dependencies); returns each one's requirements. CalledProcessError names a missing one."""
    if not pins:
        return {}
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--quiet",
            "--no-deps",
            "--ignore-installed",
            "--only-binary=:all:",
            "--target",
            str(Path(folder) / "target"),
            "--python-version",
            python,
            *(argument for tag in tags for argument in ("--platform", tag)),
            "--report",
            str(report),
            *(f"{name}=={version}" for name, version in sorted(pins.items())),
        ]
        subprocess.run(command, check=True, capture_output=True, text=True)
        document = json.loads(report.read_text())
    return {
        canonicalize_name(item["metadata"]["name"]): list(item["metadata"].get("requires_dist", []))
        for item in document["install"]
    }


def check(pin_set: PinSet, build_tags: list[str]) -> list[str]:
    """Every problem with the pin set on each of its Pythons (empty: it installs)."""
    problems = []
    for python in pin_set.pythons:
        available = pins_for(pin_set, python)
        wheels = {n: v for n, v in available.items() if n not in pin_set.provided}
        binary = {n: v for n, v in wheels.items() if n not in pin_set.build}
        built = {n: v for n, v in wheels.items() if n in pin_set.build}
        label = f"{pin_set.path.name} (Python {python}, {pin_set.machine})"
        try:
            requirements = wheel_metadata(binary, python, pin_set.tags)
            # Built on the device from the release's sdist: its metadata from another wheel.
            requirements |= wheel_metadata(built, python, build_tags)
        except subprocess.CalledProcessError as error:
            lines = [line for line in error.stderr.splitlines() if line.startswith("ERROR")]
            problems.append(f"{label}: pip finds no wheel: {' '.join(lines) or error.stderr}")
            continue
        requirements["lola-deft[agent]"] = agent_requirements(pin_set.extra)
        env = environment(python, pin_set.machine)
        found = unmet(requirements, available, env, pin_set.omitted)
        problems += [f"{label}: {problem}" for problem in found]
        if not found:
            print(
                f"{label}: {len(binary)} wheels and {len(built)} builds found, "
                f"{len(pin_set.provided)} provided; every requirement met",
                flush=True,
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "files", nargs="*", type=Path, default=[ROOT / "constraints" / f for f in PLATFORM_FILES]
    )
    args = parser.parse_args(argv)
    problems = []
    for path in args.files:
        pin_set = read_pin_set(path)
        build_tags = [f"manylinux_2_28_{pin_set.machine}", f"manylinux2014_{pin_set.machine}"]
        problems += check(pin_set, build_tags)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

""".ci/release-check's inspection of the wheel, on small wheels made here: what it must refuse (the
repository's examples/, completions/ or tests/ in the wheel, code that reads above the tbctl package, a
wheel that names this checkout, metadata that disagrees with tbctl/__init__.py) and what it must let
through (data files under tbctl/, such as completion scripts the package prints). The whole check (build,
install, up/ls/down) runs in .ci/run, not here."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
VERSION = "9.8.7"


def load_release_check() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("release_check", str(REPO / ".ci" / "release-check"))
    spec = importlib.util.spec_from_loader("release_check", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


release_check = load_release_check()


def make_wheel(tmp_path: Path, files: dict[str, str], *, version: str = VERSION, license_expression: str = "MIT",
               with_license: bool = True) -> Path:
    dist_info = f"tbctl-{VERSION}.dist-info"
    wheel = tmp_path / f"tbctl-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("tbctl/__init__.py", f'__version__ = "{VERSION}"\n')
        for name, text in files.items():
            zf.writestr(name, text)
        zf.writestr(f"{dist_info}/METADATA", f"Metadata-Version: 2.4\nName: tbctl\nVersion: {version}\n"
                                             f"License-Expression: {license_expression}\n\n# tbctl\n")
        zf.writestr(f"{dist_info}/top_level.txt", "tbctl\n")
        if with_license:
            zf.writestr(f"{dist_info}/licenses/LICENSE", "MIT License\n")
    return wheel


def refusal(wheel: Path) -> str:
    with pytest.raises(release_check.CheckFailed) as raised:
        release_check.inspect_wheel(wheel, VERSION)
    return str(raised.value)


def test_a_wheel_of_the_package_alone_passes_with_its_data(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, {
        "tbctl/completions/tbctl.bash": "complete -F _tbctl tbctl\n",
        "tbctl/cli/completion.py": "from pathlib import Path\n"
                                   "SCRIPTS = Path(__file__).parent.parent / 'completions'\n",
    })
    release_check.inspect_wheel(wheel, VERSION)


@pytest.mark.parametrize("stray", ["examples/runs/lr_0.1/events.out.tfevents.0", "completions/tbctl.bash",
                                   "tests/conftest.py"])
def test_the_repositorys_other_directories_in_the_wheel_are_refused(tmp_path: Path, stray: str) -> None:
    assert stray in refusal(make_wheel(tmp_path, {stray: "x\n"}))


@pytest.mark.parametrize("reader", [
    "Path(__file__).resolve().parents[2] / 'completions'",
    "Path(__file__).parent.parent.parent / 'examples' / 'runs'",
    "os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), 'examples')",
])
def test_code_that_reads_above_the_package_is_refused(tmp_path: Path, reader: str) -> None:
    source = f"import os\nfrom pathlib import Path\nWHERE = {reader}\n"
    assert "reads a path above the tbctl package" in refusal(make_wheel(tmp_path, {"tbctl/cli/x.py": source}))


def test_a_wheel_that_names_this_checkout_is_refused(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, {"tbctl/paths.py": f"EXAMPLES = {str(REPO / 'examples')!r}\n"})
    assert "names this checkout" in refusal(wheel)


@pytest.mark.parametrize(("version", "license_expression"), [("9.8.6", "MIT"), (VERSION, "Apache-2.0")])
def test_metadata_that_disagrees_with_the_source_is_refused(tmp_path: Path, version: str, license_expression: str) -> None:
    assert "METADATA says" in refusal(make_wheel(tmp_path, {}, version=version, license_expression=license_expression))


def test_a_wheel_without_its_license_file_is_refused(tmp_path: Path) -> None:
    assert "no LICENSE" in refusal(make_wheel(tmp_path, {}, with_license=False))


def test_build_warnings_are_found_and_file_names_are_not() -> None:
    output = "\n".join([
        "* Building wheel...",
        "copying tbctl/cli/warnings.py -> build/lib/tbctl/cli",
        "adding 'tbctl/deprecated_names.py'",
        "/tmp/build-env/lib/python3.11/site-packages/setuptools/config/_apply_pyprojecttoml.py:82: "
        "SetuptoolsDeprecationWarning: `project.license` as a TOML table is deprecated",
        "!!",
        "        By 2027-Feb-18, you need to update your project and remove deprecated calls",
        "warning: no files found matching 'CHANGES.md'",
        "Successfully built tbctl-0.1.0.tar.gz and tbctl-0.1.0-py3-none-any.whl",
    ])
    assert release_check.backend_warnings(output) == [
        "/tmp/build-env/lib/python3.11/site-packages/setuptools/config/_apply_pyprojecttoml.py:82: "
        "SetuptoolsDeprecationWarning: `project.license` as a TOML table is deprecated",
        "        By 2027-Feb-18, you need to update your project and remove deprecated calls",
        "warning: no files found matching 'CHANGES.md'",
    ]

"""Build ``libdeepkinChemistry.so`` and ``deepkinChemistryTime`` against the installed OpenFOAM.

Debian ships OpenFOAM v1912's solvers and libraries but no headers and no ``wmake``. Both come
from the matching source package: ``apt-get source openfoam`` through a private apt configuration
(a ``deb-src`` twin of the system's sources in a temporary folder; /etc/apt is not touched), then
``wmake/src/Allmake`` (the wmake tools) and ``wmakeLnIncludeAll`` on the folders the chemistry
code includes. The sources are compiled in a build folder and linked against Debian's libraries
(``FOAM_LIBBIN=/usr/lib``).

The library carries the C client's in-process backend (``couplers/c/deepkin_local.cpp``), so one
library serves both the service (``deepkinCoeffs { url ...; }``) and a model file of ``deepkin
export`` stepped in each rank (``deepkinCoeffs { modelFile ...; }``): that file needs C++20 and
libtorch's headers, which OpenFOAM's C++11 rules cannot compile, so it is compiled here on its own
(``build/deepkinLocal/deepkin_local.o``) against the libtorch of the installed torch wheel (CPU or
CUDA build: both ship headers and libraries) and linked into the library with an rpath to the
wheel's ``torch/lib``, so that no ``LD_LIBRARY_PATH`` is needed. Everything lives under :func:`home` (default
``~/.cache/deepkin/openfoam``): ``src/`` (OpenFOAM sources, ~300 MB), ``build/``, ``lib/`` and
``bin/``.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from couplers.openfoam.foam import require_installed
from mechanisms.errors import DeepkinError, InputError

PACKAGE_DIR = Path(__file__).resolve().parent
SOURCES = PACKAGE_DIR / "src"
CLIENT_SOURCES = PACKAGE_DIR.parent / "c"
LIBRARY_NAME = "libdeepkinChemistry.so"
IN_PROCESS_SYMBOL = b"deepkin_local_open"  # the in-process backend's entry point
TIMER_NAME = "deepkinChemistryTime"
# Folders of the OpenFOAM source tree whose headers the two targets include
INCLUDE_DIRS = ("OpenFOAM", "OSspecific/POSIX", "finiteVolume", "meshTools", "ODE",
                "transportModels/compressible", "thermophysicalModels")


class BuildError(DeepkinError):
    """Fetching the OpenFOAM sources or compiling failed; the message says which step."""


def home() -> Path:
    """Where sources, build files and the built library live (``$DEEPKIN_OPENFOAM_HOME``)."""
    env = os.environ.get("DEEPKIN_OPENFOAM_HOME")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "deepkin" / "openfoam"


def library_path(root: Path | None = None) -> Path:
    """The path of the built chemistry library (whether or not it is built yet)."""
    return (root or home()) / "lib" / LIBRARY_NAME


def library_problem(root: Path | None = None) -> str | None:
    """Why the built library would not load, or None: missing, or a shared library it needs not
    found (``ldd``), e.g. libtorch.so once the torch it was built against is gone or another
    install rebuilt it against its own (the library's rpath names that torch's folder)."""
    library = library_path(root)
    if not library.is_file():
        return f"the deepkin chemistry library is not built ({library})"
    if shutil.which("ldd") is None:
        return None
    try:
        out = subprocess.run(["ldd", str(library)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    missing = [line.split("=>")[0].strip() for line in out.stdout.splitlines()
               if "not found" in line]
    if missing:
        return (f"the deepkin chemistry library {library} does not load: {', '.join(missing)} "
                "not found (built against another torch install)")
    return None


def has_in_process_backend(root: Path | None = None) -> bool:
    """Whether the built library carries the C client's in-process backend (its
    ``deepkin_local_open``; a library built before the backend existed has none). A byte
    search of the file, so that no binutils are needed."""
    library = library_path(root)
    return library.is_file() and IN_PROCESS_SYMBOL in library.read_bytes()


def timer_path(root: Path | None = None) -> Path:
    """The path of the built ``deepkinChemistryTime`` utility."""
    return (root or home()) / "bin" / TIMER_NAME


def find_source(root: Path) -> Path | None:
    """An unpacked OpenFOAM source tree under ``root/src`` (one with ``wmake/`` and ``src/``)."""
    for candidate in sorted((root / "src").glob("openfoam-*")):
        if (candidate / "wmake" / "wmake").is_file() and (candidate / "src" / "OpenFOAM").is_dir():
            return candidate
    return None


def _installed_source_version() -> str | None:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${source:Version}", "openfoam"],
                             capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return None
    return out.stdout.strip() or None


def _deb_src_sources() -> tuple[str, str]:
    """The system's apt sources as ``deb-src`` entries: (one-line list, deb822 text)."""
    lines, stanzas = [], []
    one_line = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
    for path in one_line:
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                if line.strip().startswith("deb "):
                    lines.append("deb-src " + line.strip()[4:])
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in path.read_text(errors="replace").split("\n\n"):
            fields = [ln for ln in stanza.splitlines() if ln.strip() and not ln.startswith("#")]
            types = [ln for ln in fields if ln.lower().startswith("types:")]
            enabled = [ln for ln in fields if ln.lower().startswith("enabled:")]
            if not types or "deb" not in types[0].split(":", 1)[1].split():
                continue
            if enabled and enabled[0].split(":", 1)[1].strip().lower() == "no":
                continue
            stanzas.append("\n".join("Types: deb-src" if ln in types else ln for ln in fields))
    return "\n".join(lines) + "\n", "\n\n".join(stanzas) + "\n"


def fetch_source(root: Path, log) -> Path:
    """``apt-get source openfoam`` (the installed version) into ``root/src``; its folder."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-source") is None:
        raise BuildError("OpenFOAM headers: no OpenFOAM source tree under "
                         f"{root / 'src'} and no apt-get/dpkg-source to fetch one (install dpkg-dev, "
                         "or pass --source DIR with an unpacked OpenFOAM v1912 source tree)")
    version = _installed_source_version()
    target = root / "src"
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="deepkin-apt-") as tmp:
        apt = Path(tmp)
        listing, deb822 = _deb_src_sources()
        (apt / "parts").mkdir()
        (apt / "lists" / "partial").mkdir(parents=True)
        (apt / "cache" / "archives" / "partial").mkdir(parents=True)
        (apt / "sources.list").write_text(listing)
        (apt / "parts" / "deb-src.sources").write_text(deb822)
        options = ["-o", f"Dir::Etc::SourceList={apt / 'sources.list'}",
                   "-o", f"Dir::Etc::SourceParts={apt / 'parts'}",
                   "-o", f"Dir::State::Lists={apt / 'lists'}",
                   "-o", f"Dir::Cache={apt / 'cache'}"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            options += ["-o", "APT::Sandbox::User=root"]
        _run(["apt-get", *options, "update"], log, "apt-get update (deb-src)", root / "build.log",
             check=False)
        package = f"openfoam={version}" if version else "openfoam"
        _run(["apt-get", *options, "source", package], log, f"apt-get source {package}", root / "build.log",
             cwd=target)
    source = find_source(root)
    if source is None:
        raise BuildError(f"apt-get source openfoam: no source tree appeared under {target}")
    for archive in [*target.glob("openfoam_*.tar.*"), *target.glob("openfoam_*.dsc")]:
        archive.unlink()  # unpacked: 45 MB less
    return source


def wmake_env(source: Path, root: Path) -> dict[str, str]:
    """The OpenFOAM build environment (as Debian's own package build sets it)."""
    return {
        **os.environ,
        "WM_PROJECT": "OpenFOAM", "WM_PROJECT_VERSION": "v1912",
        "WM_PROJECT_DIR": str(source), "WM_DIR": str(source / "wmake"),
        "WM_ARCH": "linux64", "WM_COMPILER": "Gcc", "WM_COMPILER_TYPE": "system",
        "WM_COMPILER_LIB_ARCH": "64", "WM_COMPILE_OPTION": "Opt",
        "WM_PRECISION_OPTION": "DP", "WM_LABEL_SIZE": "32", "WM_LABEL_OPTION": "Int32",
        "WM_OPTIONS": "linux64GccDPInt32Opt", "WM_MPLIB": "SYSTEMOPENMPI", "FOAM_MPI": "openmpi-system",
        "WM_NCOMPPROCS": str(os.cpu_count() or 1),
        "FOAM_SRC": str(source / "src"), "LIB_SRC": str(source / "src"),
        "FOAM_LIBBIN": "/usr/lib", "FOAM_APPBIN": "/usr/bin",
        "FOAM_USER_LIBBIN": str(root / "lib"), "FOAM_USER_APPBIN": str(root / "bin"),
        "PATH": f"{source / 'wmake'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    }


def prepare_source(source: Path, root: Path, log) -> None:
    """Build the wmake tools and link the headers, where not done yet."""
    env = wmake_env(source, root)
    if not list((source / "platforms" / "tools").glob("*/wmkdepend")):
        _run(["./Allmake"], log, "wmake/src/Allmake", root / "build.log", cwd=source / "wmake" / "src",
             env=env)
    missing = [d for d in INCLUDE_DIRS if not _has_lninclude(source / "src" / d)]
    if missing:
        _run(["wmakeLnIncludeAll", *missing], log, "wmakeLnIncludeAll", root / "build.log",
             cwd=source / "src", env=env)


def _has_lninclude(folder: Path) -> bool:
    if folder.name == "thermophysicalModels":
        return (folder / "chemistryModel" / "lnInclude").is_dir()
    return (folder / "lnInclude").is_dir()


def _sync_tree(src: Path, dst: Path) -> None:
    """Copy ``src`` into ``dst``, leaving files whose content is unchanged alone. A changed file
    gets the current time (not its source's, which may be older than the objects): wmake decides
    what to recompile from file times."""
    for path in src.rglob("*"):
        parts = path.relative_to(src).parts
        if any(p == "lnInclude" or p.startswith("linux64") for p in parts):
            continue
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists() or not filecmp.cmp(path, target, shallow=False):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def build(root: Path | None = None, source: Path | None = None, log=None) -> Path:
    """Fetch/prepare the OpenFOAM headers if needed and compile both targets; the library's path.

    ``root``: default :func:`home`. ``source``: an unpacked OpenFOAM v1912 source tree to use
    instead of ``root/src``. ``log``: a callable taking one line of progress (default: silent).
    Raises :class:`BuildError` naming the step that failed (and the log file).
    """
    require_installed()
    if shutil.which("g++") is None or shutil.which("make") is None:
        raise BuildError("compiler: g++ and make are needed (apt-get install g++ make)")
    root = Path(root) if root else home()
    log = log or (lambda line: None)
    root.mkdir(parents=True, exist_ok=True)
    if source is not None:
        source = Path(source)
        if not (source / "wmake" / "wmake").is_file():
            raise InputError(f"source: {source} is not an OpenFOAM source tree (no wmake/wmake)")
    else:
        source = find_source(root)
        if source is None:
            log(f"fetching the OpenFOAM sources into {root / 'src'} (apt-get source openfoam)")
            source = fetch_source(root, log)
    prepare_source(source, root, log)
    env = wmake_env(source, root)
    build_dir = root / "build"
    _sync_tree(SOURCES, build_dir)
    for name in ("deepkin_client.c", "deepkin_client.h", "deepkin_local.h"):
        target = build_dir / "deepkinChemistry" / name
        if not target.exists() or not filecmp.cmp(CLIENT_SOURCES / name, target, shallow=False):
            shutil.copyfile(CLIENT_SOURCES / name, target)
    logfile = root / "build.log"
    torch = libtorch()
    local_object = _build_local_backend(build_dir / "deepkinLocal", torch, log, logfile)
    if local_object is not None and library_path(root).exists():
        library_path(root).unlink()  # the backend changed: wmake relinks only a missing library
    env.update({"DEEPKIN_LOCAL_OBJECT": str(build_dir / "deepkinLocal" / "deepkin_local.o"),
                "DEEPKIN_TORCH_LIB": str(torch.lib), "DEEPKIN_TORCH_LIBS": " ".join(torch.link_flags)})
    _run(["wmake", "libso"], log, "wmake libso (libdeepkinChemistry)", logfile,
         cwd=build_dir / "deepkinChemistry", env=env)
    _run(["wmake"], log, "wmake (deepkinChemistryTime)", logfile, cwd=build_dir / "deepkinChemistryTime",
         env=env)
    library = library_path(root)
    if not library.is_file():
        raise BuildError(f"wmake: finished without writing {library}")
    return library


@dataclass(frozen=True)
class Libtorch:
    """The libtorch of the installed torch wheel: its version, headers, libraries and C++ ABI."""

    version: str
    include: Path
    lib: Path
    cxx11_abi: bool

    @property
    def link_flags(self) -> list[str]:
        """The libraries to link (inside ``-Wl,--no-as-needed``): a CUDA build's CUDA backend
        too, so that a file exported with ``--device cuda`` finds its kernels registered."""
        names = ["torch", "torch_cpu", "c10"]
        if (self.lib / "libtorch_cuda.so").is_file():
            names += ["torch_cuda", "c10_cuda"]
        return [f"-l{name}" for name in names]


def libtorch() -> Libtorch:
    """The installed torch wheel's libtorch; BuildError where torch is missing or ships no C++
    headers."""
    try:
        import torch
    except ImportError as exc:
        raise BuildError(f"libtorch: torch is not installed ({exc}); pip install torch") from exc
    base = Path(torch.__file__).resolve().parent
    found = Libtorch(torch.__version__, base / "include", base / "lib",
                     bool(torch._C._GLIBCXX_USE_CXX11_ABI))
    if not (found.include / "torch" / "script.h").is_file():
        raise BuildError(f"libtorch: the torch wheel at {base} ships no C++ headers "
                         "(include/torch/script.h); install a torch wheel from pytorch.org or PyPI")
    if not (found.lib / "libtorch.so").is_file():
        raise BuildError(f"libtorch: no libtorch.so in {found.lib}")
    return found


def _build_local_backend(folder: Path, torch: Libtorch, log, logfile: Path) -> Path | None:
    """Compile ``deepkin_local.cpp`` (the C client's in-process backend) against ``torch`` into
    ``folder/deepkin_local.o`` unless the object is there for the same source and libtorch; the
    object when compiled now, None when it was up to date."""
    folder.mkdir(parents=True, exist_ok=True)
    obj = folder / "deepkin_local.o"
    stamp = folder / "stamp.json"
    sources = {name: (CLIENT_SOURCES / name).read_text()
               for name in ("deepkin_local.cpp", "deepkin_local.h", "deepkin_client.h")}
    command = ["g++", "-std=c++20", "-O2", "-fPIC", f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.cxx11_abi)}",
               "-I", str(folder), "-I", str(torch.include),
               "-I", str(torch.include / "torch" / "csrc" / "api" / "include"),
               "-c", str(folder / "deepkin_local.cpp"), "-o", str(obj)]
    wanted = {"torch": torch.version, "lib": str(torch.lib), "command": command, "sources": sources}
    if obj.is_file() and stamp.is_file():
        try:
            if json.loads(stamp.read_text()) == wanted:
                return None
        except ValueError:
            pass
    for name in sources:
        shutil.copyfile(CLIENT_SOURCES / name, folder / name)
    _run(command, log, f"g++ deepkin_local.cpp (in-process backend, libtorch {torch.version})", logfile)
    stamp.write_text(json.dumps(wanted))
    return obj


def _run(command: list[str], log, step: str, logfile: Path, cwd: Path | None = None,
         env: dict[str, str] | None = None, check: bool = True) -> None:
    """Run one build step, its output appended to ``logfile``; BuildError naming it on failure."""
    log(step)
    run = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "a") as fh:
        fh.write(f"$ {' '.join(command)}\n{run.stdout}{run.stderr}\n")
    if check and run.returncode != 0:
        lines = [ln for ln in (run.stderr + run.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower()] or lines[-1:] or ["no output"]
        raise BuildError(f"{step} failed (exit {run.returncode}): {errors[0].strip()[:300]} "
                         f"(full log: {logfile})")

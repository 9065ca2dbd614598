"""Fetch vLLM's own scheduler tests for exactly the installed vLLM version, cached.

The tests are not in the installed wheel, only in vLLM's source distribution. The sdist is
found through pip's configured package index with the PEP 691 JSON simple API (the index URL
comes from pip's configuration, never from this file), checked against the sha256 that the
same listing gives, and only the test files the suite needs (the target files and every
`tests.*` module they import, found by reading their imports) are extracted into
`${XDG_CACHE_HOME:-~/.cache}/vllm-lamps/vllm-<version>-tests/`. A second run finds them there
and downloads nothing.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any

# The vLLM test files run against the LAMPS schedulers. Their `tests.*` imports (and package
# __init__ files) are added to the extraction automatically.
TARGET_FILES = (
    "tests/v1/core/test_scheduler.py",
    "tests/v1/core/test_async_scheduler.py",
    "tests/v1/core/test_priority_scheduler_random.py",
    "tests/v1/core/utils.py",
    "tests/v1/streaming_input/test_scheduler_streaming.py",
)
# Bump when the extraction rule changes, so an old cache is rebuilt.
_LAYOUT = 1
_MARKER = ".vllm-lamps-tests.json"
_JSON_ACCEPT = "application/vnd.pypi.simple.v1+json"


def log(msg: str) -> None:
    print(f"conformance: {msg}", file=sys.stderr, flush=True)


def installed_vllm_version() -> str:
    """`vllm.__version__` without a local suffix (`0.32.0+cpu` -> `0.32.0`).

    Read from the installed package's `vllm/_version.py` (what `vllm.__version__` re-exports)
    without importing vllm, which takes seconds; `import vllm` when that file is missing.
    """
    import importlib.util

    from packaging.version import Version

    version = None
    spec = importlib.util.find_spec("vllm")
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "_version.py"
        if path.is_file():
            namespace: dict[str, Any] = {}
            exec(compile(path.read_text(), str(path), "exec"), namespace)
            version = namespace.get("__version__")
    if version is None:
        import vllm

        version = vllm.__version__
    return Version(version).public


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vllm-lamps"


def _pip_config(key: str) -> str | None:
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", key],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = out.stdout.strip()
    return value if out.returncode == 0 and value else None


def index_urls() -> list[str]:
    """pip's index URL (PIP_INDEX_URL, else pip config, else pip's default), then its extras."""
    primary = os.environ.get("PIP_INDEX_URL") or _pip_config("global.index-url")
    if not primary:
        from pip._internal.models.index import PyPI

        primary = PyPI.simple_url
    urls = [primary]
    extra = os.environ.get("PIP_EXTRA_INDEX_URL") or _pip_config("global.extra-index-url") or ""
    urls += [u for u in extra.split() if u]
    return urls


def _ssl_context() -> ssl.SSLContext:
    cert = os.environ.get("PIP_CERT") or _pip_config("global.cert")
    if cert and os.path.exists(cert):
        return ssl.create_default_context(cafile=cert)
    return ssl.create_default_context()


def _open(url: str, accept: str | None = None, timeout: float = 120.0) -> Any:
    headers = {"User-Agent": "vllm-lamps-conformance"}
    if accept:
        headers["Accept"] = accept
    request = urllib.request.Request(url, headers=headers)
    if url.startswith("https:"):
        return urllib.request.urlopen(request, timeout=timeout, context=_ssl_context())
    return urllib.request.urlopen(request, timeout=timeout)


def find_sdist(version: str) -> tuple[str, str]:
    """(download URL, sha256) of `vllm-<version>.tar.gz` from pip's configured indexes."""
    filename = f"vllm-{version}.tar.gz"
    errors = []
    for index in index_urls():
        page = index.rstrip("/") + "/vllm/"
        try:
            with _open(page, accept=_JSON_ACCEPT) as response:
                ctype = response.headers.get("Content-Type", "")
                body = response.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            errors.append(f"{page}: {exc}")
            continue
        if "json" not in ctype:
            errors.append(f"{page}: no PEP 691 JSON answer (Content-Type {ctype!r})")
            continue
        for entry in json.loads(body).get("files", []):
            if entry.get("filename") == filename:
                sha = (entry.get("hashes") or {}).get("sha256")
                if not sha:
                    errors.append(f"{page}: {filename} is listed without a sha256")
                    break
                return urllib.parse.urljoin(page, entry["url"]), sha
        else:
            errors.append(f"{page}: {filename} is not listed")
    raise RuntimeError(f"cannot find {filename} on pip's indexes:\n  " + "\n  ".join(errors))


def download(url: str, sha256: str, dest: Path) -> None:
    """Download `url` to `dest`, checking its sha256."""
    digest = hashlib.sha256()
    tmp = dest.with_name(dest.name + ".part")
    log(f"downloading {PurePosixPath(urllib.parse.urlparse(url).path).name}")
    with _open(url) as response, open(tmp, "wb") as out:
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != sha256:
        tmp.unlink()
        raise RuntimeError(
            f"sha256 mismatch for {url}: index says {sha256}, got {digest.hexdigest()}"
        )
    tmp.replace(dest)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _imported_test_modules(source: str, path: str) -> set[str]:
    """Paths of the `tests.*` modules (absolute or relative imports) a test file imports."""
    here = PurePosixPath(path).parent
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here
                for _ in range(node.level - 1):
                    base = base.parent
                mod = ".".join(base.parts + tuple((node.module or "").split(".")))
                mod = mod.rstrip(".")
            else:
                mod = node.module or ""
            names = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for name in names:
            if name == "tests" or name.startswith("tests."):
                parts = name.split(".")
                found.add("/".join(parts) + ".py")
                found.add("/".join(parts) + "/__init__.py")
    return found


def extract(sdist: Path, dest: Path) -> list[str]:
    """Extract TARGET_FILES and the `tests.*` modules they import (transitively) into dest."""
    with tarfile.open(sdist, "r:gz") as tar:
        members = {}
        for m in tar.getmembers():
            parts = PurePosixPath(m.name).parts
            if len(parts) > 2 and parts[1] == "tests" and m.isfile():
                members["/".join(parts[1:])] = m
        wanted: set[str] = set()
        todo = [p for p in TARGET_FILES if p in members]
        missing = sorted(set(TARGET_FILES) - set(todo))
        if missing:
            raise RuntimeError(f"{sdist.name} has no {', '.join(missing)}")
        while todo:
            path = todo.pop()
            if path in wanted:
                continue
            wanted.add(path)
            # Every package on the way needs its __init__.py.
            for parent in PurePosixPath(path).parents:
                init = f"{parent}/__init__.py"
                if init in members and init not in wanted:
                    todo.append(init)
            source = tar.extractfile(members[path]).read().decode()
            todo += [p for p in _imported_test_modules(source, path) if p in members]
        tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
        for path in sorted(wanted):
            target = tmp / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(members[path]).read())
    if dest.exists():
        shutil.rmtree(dest)
    tmp.replace(dest)
    return sorted(wanted)


def ensure_tests(version: str | None = None, sdist: Path | None = None) -> Path:
    """The directory holding `tests/` of vLLM `version` (default: installed), fetched if needed.

    `sdist`: use this local `vllm-<version>.tar.gz` instead of downloading one.
    """
    version = version or installed_vllm_version()
    root = cache_root()
    dest = root / f"vllm-{version}-tests"
    marker = dest / _MARKER
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("layout") == _LAYOUT and info.get("targets") == list(TARGET_FILES):
            return dest
    root.mkdir(parents=True, exist_ok=True)
    cleanup = None
    if sdist is None:
        url, sha = find_sdist(version)
        sdist = root / f"vllm-{version}.tar.gz"
        download(url, sha, sdist)
        cleanup = sdist
    else:
        sha = _sha256_file(sdist)
        if sdist.name != f"vllm-{version}.tar.gz":
            raise RuntimeError(f"{sdist} is not the sdist of vLLM {version}")
        log(f"using local {sdist} (sha256 {sha})")
    try:
        files = extract(sdist, dest)
    finally:
        if cleanup is not None:
            cleanup.unlink(missing_ok=True)
    marker.write_text(
        json.dumps(
            {
                "layout": _LAYOUT,
                "version": version,
                "sdist_sha256": sha,
                "targets": list(TARGET_FILES),
                "files": files,
            },
            indent=1,
        )
    )
    log(f"extracted {len(files)} test files of vLLM {version} into {dest}")
    return dest


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", help="vLLM version (default: the installed one)")
    parser.add_argument("--sdist", type=Path, help="a local vllm-<version>.tar.gz to use")
    args = parser.parse_args(argv)
    print(ensure_tests(args.version, args.sdist))
    return 0


if __name__ == "__main__":
    sys.exit(main())

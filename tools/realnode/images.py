"""Images for the real node without a registry: a local Python base, the project's image, the pause image.

- The base stands in for `python:3.11-slim` (the Dockerfile's default
  `PYTHON_IMAGE`): Debian bookworm from `mmdebstrap` (its Python is 3.11), with
  what the Dockerfile expects of that image: `python` on the PATH, and pip and
  setuptools installed with pip (so that the final stage can uninstall them)
  rather than as Debian packages; no EXTERNALLY-MANAGED marker, as in the
  official image. Built once; the root filesystem is cached.
- The project's image is built from the project's own `Dockerfile` by
  `buildah bud --build-arg PYTHON_IMAGE=<base>`, as `docker build` would. The
  RUN steps reach PyPI from the host's network (`--network host`) and see the
  host's CA bundle (read-only, during the build only): a machine behind a
  TLS-inspecting proxy needs it, and nothing of it lands in the image.
- The pause image is one static binary (pause.c): no registry, no download.

Images go into the node's containerd (namespace k8s.io, where the kubelet looks)
with `ctr images import` of an OCI archive.

buildah keeps its storage (base, layer cache) under the project's cache
directory, not in /var/lib/containers, and its CNI lock under it too; the one
file it insists on writing in /var/lib/containers goes when `make image` ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from localcluster import procs
from realnode.configs import OPERATOR_IMAGE, PAUSE_IMAGE

HERE: Final = Path(__file__).resolve().parent
REPO_ROOT: Final = HERE.parents[1]
PAUSE_SOURCE: Final = HERE / "pause.c"
#: The packages of the local Python base, and how it is made to look like python:3.11-slim.
BASE_PACKAGES: Final = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
BASE_HOOK: Final = (
    'chroot "$1" sh -ec "'
    "rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED; "
    "whl=\\$(echo /usr/share/python-wheels/pip-*.whl); "
    "python \\$whl/pip install --quiet --no-cache-dir --no-index --find-links /usr/share/python-wheels pip setuptools; "
    'python -m pip --version"'
)
BASE_DPKG_EXCLUDES: Final = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*")
#: JSON: buildah takes a plain string as a shell command (`/bin/sh -c`), and there is no shell.
PAUSE_CONFIG: Final = ('--entrypoint=["/pause"]', "--user=65535:65535")
BLOB_INFO_CACHE: Final = Path("/var/lib/containers/cache/blob-info-cache-v1.boltdb")
#: The host's CA bundle, lent to the build's RUN steps (pip on Debian reads it).
HOST_CA_BUNDLE: Final = Path("/etc/ssl/certs/ca-certificates.crt")


class ImageError(RuntimeError):
    pass


def say(message: str) -> None:
    print(f"realnode: {message}", flush=True)


def cache_dir() -> Path:
    """The project's cache, as tools/cluster/build.sh finds it."""
    explicit = os.environ.get("SCHEDULEDBOT_CACHE")
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    directory = Path(explicit) if explicit else Path(xdg) / "scheduledbot"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _private(*argv: str) -> list[str]:
    """`argv` in a private mount namespace: whatever it mounts (the chroot's /proc of
    mmdebstrap, buildah's overlays) is gone when it exits, even when it is killed."""
    return ["unshare", "--mount", "--propagation", "private", "--", *argv]


def _buildah(*args: str) -> list[str]:
    """A buildah command on the project's storage, in its own mount namespace.

    buildah's run root (mount counts, locks of mounted layers) is a fresh tmpfs in that
    namespace, as after a reboot: nothing is mounted when the namespace is gone, and nothing
    in the run root may say otherwise. Its CNI lock goes to the cache too (buildah would make
    /etc/cni/net.d for it, even for `buildah rm`).
    """
    storage = cache_dir() / "buildah"
    (storage / "run").mkdir(parents=True, exist_ok=True)
    containers_conf = storage / "containers.conf"
    if not containers_conf.exists():
        containers_conf.write_text(f'[network]\nnetwork_config_dir = "{storage / "cni"}"\n')
    os.environ["CONTAINERS_CONF"] = str(containers_conf)
    return _private(
        "sh",
        "-ec",
        'mount -t tmpfs -o mode=0700 buildah-run "$1"; shift; exec "$@"',
        "buildah-in-namespace",
        str(storage / "run"),
        "buildah",
        f"--root={storage / 'storage'}",
        f"--runroot={storage / 'run'}",
        "--storage-driver=overlay",
        *args,
    )


def _run(argv: list[str], *, what: str, timeout: float, quiet: bool = False) -> str:
    """Run a build step; its output is shown unless `quiet`, and kept for the error either way."""
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise ImageError(f"{what} failed (exit {result.returncode}):\n{tail}")
    if not quiet:
        say(f"{what} ({time.monotonic() - started:.1f} s)")
    return result.stdout


def _image_exists(name: str) -> bool:
    result = subprocess.run(_buildah("inspect", "--type", "image", name), capture_output=True, check=False)
    return result.returncode == 0


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:12]


def base_image() -> str:
    """The local stand-in for python:3.11-slim, built once (the recipe's digest is in its tag)."""
    recipe = _digest("bookworm", "minbase", *BASE_PACKAGES, BASE_HOOK, *BASE_DPKG_EXCLUDES)
    name = f"localhost/scheduledbot-python:3.11-bookworm-{recipe}"
    if _image_exists(name):
        return name
    rootfs = cache_dir() / "realnode" / f"bookworm-python3.11-{recipe}.tar"
    if not rootfs.exists():
        rootfs.parent.mkdir(parents=True, exist_ok=True)
        say("making the Debian bookworm root filesystem with mmdebstrap (about a minute, once)")
        partial = rootfs.with_suffix(".partial")
        _run(
            _private(
                "mmdebstrap",
                "--quiet",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                *(f"--dpkgopt=path-exclude={p}" for p in BASE_DPKG_EXCLUDES),
                "--dpkgopt=path-include=/usr/share/doc/*/copyright",
                f"--customize-hook={BASE_HOOK}",
                "--format=tar",
                "bookworm",
                str(partial),
            ),
            what="mmdebstrap bookworm",
            timeout=900,
        )
        partial.replace(rootfs)
    container = _run(_buildah("from", "scratch"), what="buildah from scratch", timeout=60, quiet=True).strip()
    try:
        _run(_buildah("add", container, str(rootfs), "/"), what="buildah add (root filesystem)", timeout=300)
        _run(
            _buildah(
                "config",
                "--env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--env=LANG=C.UTF-8",
                "--cmd=python3",
                container,
            ),
            what="buildah config",
            timeout=60,
            quiet=True,
        )
        _run(_buildah("commit", "--quiet", container, name), what=f"base image {name}", timeout=300)
    finally:
        subprocess.run(_buildah("rm", container), capture_output=True, check=False)
    return name


def pause_archive() -> Path:
    """An OCI archive of the pause image, built once per pause.c."""
    source = PAUSE_SOURCE.read_bytes()
    archive = cache_dir() / "realnode" / f"pause-{_digest(source, *PAUSE_CONFIG)}.tar"
    if archive.exists():
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    with storage_lock(), leaving_no_trace(), tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "pause"
        _run(
            ["gcc", "-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror", "-o", str(binary), str(PAUSE_SOURCE)],
            what="gcc -static pause.c",
            timeout=120,
        )
        container = _run(_buildah("from", "scratch"), what="buildah from scratch", timeout=60, quiet=True).strip()
        try:
            _run(_buildah("copy", container, str(binary), "/pause"), what="buildah copy", timeout=60, quiet=True)
            _run(
                _buildah("config", *PAUSE_CONFIG, container),
                what="buildah config",
                timeout=60,
                quiet=True,
            )
            _run(_buildah("commit", "--quiet", container, PAUSE_IMAGE), what="pause image", timeout=120)
        finally:
            subprocess.run(_buildah("rm", container), capture_output=True, check=False)
        partial = archive.with_suffix(".partial")
        _run(
            _buildah("push", "--quiet", PAUSE_IMAGE, f"oci-archive:{partial}:{PAUSE_IMAGE}"),
            what="buildah push (pause)",
            timeout=120,
            quiet=True,
        )
        partial.replace(archive)
    return archive


def build_project_image() -> str:
    """buildah bud of the project's Dockerfile on the local base; the image id."""
    base = base_image()
    with tempfile.TemporaryDirectory() as tmp:
        iidfile = Path(tmp) / "iid"
        argv = _buildah(
            "bud",
            "--isolation=chroot",
            "--network=host",
            f"--cni-config-dir={cache_dir() / 'buildah' / 'cni'}",
            "--layers",
            "--pull=never",
            f"--build-arg=PYTHON_IMAGE={base}",
            f"--iidfile={iidfile}",
            f"--tag={OPERATOR_IMAGE}",
            f"--file={REPO_ROOT / 'Dockerfile'}",
        )
        if HOST_CA_BUNDLE.exists():
            argv.append(f"--volume={HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro")
        say(f"buildah bud -f Dockerfile --build-arg PYTHON_IMAGE={base} -t {OPERATOR_IMAGE}")
        started = time.monotonic()
        # The build's own progress (pip's above all) is worth seeing: it is the slow part.
        result = subprocess.run([*argv, str(REPO_ROOT)], timeout=1800, check=False)
        if result.returncode != 0:
            raise ImageError(f"buildah bud failed (exit {result.returncode}); its output is above")
        image_id = iidfile.read_text().strip().removeprefix("sha256:")
    say(f"built {OPERATOR_IMAGE} ({image_id[:12]}) in {time.monotonic() - started:.1f} s")
    return image_id


@contextlib.contextmanager
def storage_lock() -> Iterator[None]:
    """One image build at a time on this machine: checkouts share the cache's storage."""
    with procs.exclusive(
        cache_dir() / "buildah.lock", on_wait=lambda: say("waiting for another image build on this machine to finish")
    ):
        yield


@contextlib.contextmanager
def leaving_no_trace() -> Iterator[None]:
    """Remove what buildah leaves outside its storage, if it was not there before: its blob
    information cache in /var/lib/containers (no setting moves it)."""
    top = Path("/var/lib/containers")
    absent = not os.path.lexists(top)
    try:
        yield
    finally:
        if absent and top.is_dir():
            left = {p.relative_to(top) for p in top.rglob("*")}
            if left <= {BLOB_INFO_CACHE.parent.relative_to(top), BLOB_INFO_CACHE.relative_to(top)}:
                shutil.rmtree(top)


def export(image: str, archive: Path) -> None:
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.unlink(missing_ok=True)
    _run(
        _buildah("push", "--quiet", image, f"oci-archive:{archive}:{image}"),
        what=f"buildah push {image} oci-archive",
        timeout=600,
    )


def import_archive(socket: Path, archive: Path) -> None:
    """Into the node's containerd, namespace k8s.io (the CRI's)."""
    _run(
        ["ctr", f"--address={socket}", "--namespace=k8s.io", "images", "import", str(archive)],
        what=f"ctr images import {archive.name}",
        timeout=600,
    )


def node_has_image(socket: Path, name: str) -> bool:
    out = _run(
        ["ctr", f"--address={socket}", "--namespace=k8s.io", "images", "list", "--quiet"],
        what="ctr images list",
        timeout=60,
        quiet=True,
    )
    return name in out.split()


def tools_present() -> list[str]:
    """The commands `make image` needs that are missing."""
    return [tool for tool in ("buildah", "mmdebstrap", "gcc", "ctr") if shutil.which(tool) is None]

"""Idempotent provisioning of the Kafka jars, the Temporal CLI, Temporal's Java test server and PostgreSQL.

Each artifact is fetched once into the cache and marked complete with a stamp file, so a second
run (or a fresh clone sharing the cache) only checks the stamps.
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import shutil
import stat
import subprocess
import tarfile
import zipfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from devstack.cache import cache_dir
from devstack.errors import DevstackError, MissingToolError, ProvisionError

KAFKA_VERSION = "4.1.1"
TEMPORAL_CLI_VERSION = "v1.5.1"
TEMPORAL_TEST_SERVER_VERSION = "1.31.0"
#: The zonky build of PostgreSQL 17.12 (``devstack/maven/postgres-pom.xml`` pins the same version).
POSTGRES_VERSION = "17.12.0"

_MAVEN_DIR = Path(__file__).parent / "maven"

_INSTALL_HINTS = {
    "java": "install a JDK 17+ (Debian: apt-get install -y openjdk-17-jdk-headless)",
    "mvn": "install Maven (Debian: apt-get install -y maven)",
    "go": "install Go 1.23+ from your distribution or go.dev",
    "useradd": "install the passwd package (Debian: apt-get install -y passwd)",
}


@dataclass(frozen=True)
class Artifacts:
    """Paths of the provisioned servers."""

    kafka_libs: Path
    temporal_cli: Path
    test_server: Path
    postgres: Path


def require_tool(tool: str, purpose: str) -> str:
    """Returns the tool's path or raises `MissingToolError` with one line saying how to install it."""
    path = shutil.which(tool)
    if path is None:
        raise MissingToolError(tool, purpose, _INSTALL_HINTS.get(tool, "install it"))
    return path


def _run_logged(argv: list[str], log_path: Path, what: str, env: dict[str, str] | None = None) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        result = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    if result.returncode != 0:
        raise ProvisionError(what, str(log_path))


def _maven_copy(pom: Path, dest: Path, what: str) -> Path:
    """Copies the pom's runtime classpath into ``dest`` once per pom content (the stamp holds its hash)."""
    stamp = dest / ".complete"
    pom_hash = hashlib.sha256(pom.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == pom_hash:
        return dest
    mvn = require_tool("mvn", f"fetch {what} from Maven Central")
    require_tool("java", f"run {what}")
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    _run_logged(
        # -C (--strict-checksums): a checksum mismatch from the repository fails the build instead of a warning.
        [mvn, "-q", "-B", "-C", "-f", str(pom), "dependency:copy-dependencies",
         f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
        cache_dir() / "logs" / f"provision-{dest.name}.log",
        what,
    )
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    stamp.write_text(pom_hash)
    return dest


def kafka_libs() -> Path:
    """Fetches the broker's runtime classpath (Kafka plus the log4j2 SLF4J binding)."""
    return _maven_copy(_MAVEN_DIR / "kafka-pom.xml", cache_dir() / f"kafka-{KAFKA_VERSION}" / "libs", "Apache Kafka")


def temporal_cli() -> Path:
    """Builds the Temporal CLI (which embeds the dev server) from the Go module proxy."""
    bin_dir = cache_dir() / "bin"
    binary = bin_dir / f"temporal-{TEMPORAL_CLI_VERSION}"
    if binary.exists():
        return binary
    go = require_tool("go", "build the Temporal CLI dev server")
    build_dir = cache_dir() / "build" / "temporal"
    build_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(build_dir), "CGO_ENABLED": "0"}
    _run_logged(
        [go, "install", f"github.com/temporalio/cli/cmd/temporal@{TEMPORAL_CLI_VERSION}"],
        cache_dir() / "logs" / "provision-temporal-cli.log",
        "the Temporal CLI",
        env=env,
    )
    bin_dir.mkdir(parents=True, exist_ok=True)
    shutil.move(str(build_dir / "temporal"), binary)
    return binary


#: How long the SDK may wait for the test server to listen: a JVM starting on a busy 2-core machine
#: needs more than the SDK's default of 5 s.
TEST_SERVER_STARTUP = timedelta(seconds=60)


def test_server() -> Path:
    """Fetches Temporal's Java time-skipping test server and writes an exec wrapper for the SDK.

    The Python SDK starts ``<path> <port>``; the wrapper turns that into a java command line.
    """
    libs = _maven_copy(
        _MAVEN_DIR / "temporal-test-server-pom.xml",
        cache_dir() / f"temporal-test-server-{TEMPORAL_TEST_SERVER_VERSION}" / "libs",
        "Temporal's test server",
    )
    wrapper = libs.parent / "temporal-test-server"
    script = (
        "#!/bin/sh\n"
        f'exec java -Xmx256m -cp "{libs}/*" io.temporal.testserver.TestServer "$@"\n'
    )
    if not wrapper.exists() or wrapper.read_text() != script:
        wrapper.write_text(script)
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return wrapper


def postgres_distribution() -> Path:
    """Fetches the PostgreSQL binaries jar and unpacks its archive once; returns the folder holding ``bin/initdb``.

    The jar (zonky's ``embedded-postgres-binaries``) holds one ``.txz`` of a relocatable build whose
    binaries find ``lib/`` and ``share/`` relative to themselves, so it runs from wherever it is unpacked.
    """
    home = cache_dir() / f"postgres-{POSTGRES_VERSION}"
    dist = home / "dist"
    stamp = dist / ".complete"
    if stamp.exists() and stamp.read_text().strip() == POSTGRES_VERSION:
        return dist
    if (platform.system(), platform.machine()) != ("Linux", "x86_64"):
        raise DevstackError(f"the local PostgreSQL is provisioned for Linux x86_64 only, not {platform.system()} "
                            f"{platform.machine()}; point EVENTFLOW_DATABASE_URL at a PostgreSQL 16+ server instead")
    jars = _maven_copy(_MAVEN_DIR / "postgres-pom.xml", home / "jars", "PostgreSQL")
    (jar,) = jars.glob("embedded-postgres-binaries-*.jar")
    # A staging folder per process: two sessions provisioning at once each unpack whole, and one wins the rename.
    staging = home / f"dist.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with zipfile.ZipFile(jar) as bundle:
        (archive,) = [name for name in bundle.namelist() if name.endswith(".txz")]
        compressed = bundle.read(archive)
    # The "data" filter refuses absolute paths and links that leave the folder, and drops setuid bits.
    with tarfile.open(fileobj=io.BytesIO(compressed), mode="r:xz") as tar:
        tar.extractall(staging, filter="data")
    (staging / ".complete").write_text(POSTGRES_VERSION)
    if stamp.exists():  # another process finished first; its copy may already be in use
        shutil.rmtree(staging, ignore_errors=True)
        return dist
    shutil.rmtree(dist, ignore_errors=True)
    try:
        staging.rename(dist)
    except OSError:  # another process renamed its own complete copy into place in between
        shutil.rmtree(staging, ignore_errors=True)
    return dist


def provision_all() -> Artifacts:
    """Provisions every artifact; idempotent."""
    return Artifacts(kafka_libs=kafka_libs(), temporal_cli=temporal_cli(), test_server=test_server(),
                     postgres=postgres_distribution())

"""A real Schema Registry for development and tests: Apicurio Registry, built from Maven Central.

Apicurio Registry speaks the Confluent REST API under ``/apis/ccompat/v7``. Its published app jar
is a Quarkus application that has to be re-augmented to run, so `apicurio_registry` writes a
small Maven project that depends on it and runs the Quarkus build once into the cache. Two
things Central lacks are stood in for: ``org.everit.json.schema`` (JSON Schema support, on JitPack
only; unused by Avro) is excluded, and the build-time index of dynamic settings (from an extension
whose deployment module is not on Central) is replaced by an empty one (`_SHIM_JAVA`), which only
disables changing Apicurio's settings at run time. Storage is in memory (H2).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from devstack.cache import cache_dir
from devstack.errors import ProvisionError, ServerStartError
from devstack.provision import require_tool

APICURIO_VERSION = "2.4.2.Final"
QUARKUS_VERSION = "2.16.4.Final"
CCOMPAT_PATH = "/apis/ccompat/v7"
#: Quiet, batch, and strict checksums (-C): a corrupted or tampered download from a mirror or proxy
#: fails the build instead of being logged as a warning and run.
_MVN_FLAGS = ("-q", "-B", "-C")

_POM = f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Re-augments Apicurio Registry's app jar (Maven Central) into a runnable Quarkus application. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.eventflow.devstack</groupId>
  <artifactId>apicurio-registry-runtime</artifactId>
  <version>1</version>
  <packaging>jar</packaging>
  <properties>
    <project.build.sourceEncoding>UTF-8</project.build.sourceEncoding>
  </properties>
  <dependencyManagement>
    <dependencies>
      <dependency>
        <groupId>io.quarkus</groupId>
        <artifactId>quarkus-bom</artifactId>
        <version>{QUARKUS_VERSION}</version>
        <type>pom</type>
        <scope>import</scope>
      </dependency>
    </dependencies>
  </dependencyManagement>
  <dependencies>
    <dependency>
      <groupId>io.apicurio</groupId>
      <artifactId>apicurio-registry-app</artifactId>
      <version>{APICURIO_VERSION}</version>
      <exclusions>
        <exclusion>
          <groupId>com.github.everit-org.json-schema</groupId>
          <artifactId>org.everit.json.schema</artifactId>
        </exclusion>
        <exclusion>
          <groupId>io.apicurio</groupId>
          <artifactId>apicurio-common-app-components-config-index</artifactId>
        </exclusion>
      </exclusions>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-compiler-plugin</artifactId>
        <version>3.11.0</version>
        <configuration><release>11</release></configuration>
      </plugin>
      <plugin>
        <groupId>io.quarkus</groupId>
        <artifactId>quarkus-maven-plugin</artifactId>
        <version>{QUARKUS_VERSION}</version>
        <executions>
          <execution>
            <goals><goal>build</goal></goals>
          </execution>
        </executions>
      </plugin>
    </plugins>
  </build>
</project>
"""

_SHIM_JAVA = """package dev.eventflow.devstack;

import io.apicurio.common.apps.config.DynamicConfigPropertyList;
import java.util.ArrayList;
import javax.enterprise.context.ApplicationScoped;
import javax.enterprise.inject.Produces;

/** Stands in for the build-time index of dynamic settings: none are changeable at run time. */
@ApplicationScoped
public class NoDynamicConfig {
    @Produces
    @ApplicationScoped
    DynamicConfigPropertyList dynamicConfigPropertyList() {
        return new DynamicConfigPropertyList(new ArrayList<>());
    }
}
"""

_EXTRA_PROPERTIES = """
# Added by devstack: index the registry's classes from its jar.
quarkus.index-dependency.registryapp.group-id=io.apicurio
quarkus.index-dependency.registryapp.artifact-id=apicurio-registry-app
"""


def _run(argv: list[str], log_path: Path, what: str) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        result = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        raise ProvisionError(what, str(log_path))


def apicurio_registry() -> Path:
    """Builds Apicurio Registry once into the cache; returns its runner jar. Idempotent.

    Concurrent callers (parallel test sessions) wait on a lock file; one of them builds.
    """
    home = cache_dir() / f"apicurio-registry-{APICURIO_VERSION}"
    runner = home / "apicurio-registry-runner.jar"
    if (home / ".complete").exists():
        return runner
    lock_path = cache_dir() / "build" / "apicurio-registry.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (home / ".complete").exists():
            return runner
        _build(home, runner)
    return runner


def _build(home: Path, runner: Path) -> None:
    mvn = require_tool("mvn", "fetch Apicurio Registry from Maven Central")
    require_tool("java", "run Apicurio Registry")
    build = cache_dir() / "build" / "apicurio-registry"
    shutil.rmtree(build, ignore_errors=True)
    (build / "src/main/java/dev/eventflow/devstack").mkdir(parents=True)
    (build / "src/main/resources").mkdir(parents=True)
    (build / "pom.xml").write_text(_POM)
    (build / "src/main/java/dev/eventflow/devstack/NoDynamicConfig.java").write_text(_SHIM_JAVA)
    log = cache_dir() / "logs" / "provision-apicurio-registry.log"
    # The app's own application.properties holds build-time settings (packaging, storage), so the
    # wrapper project must carry it: fetch the app jar first and copy the file out of it.
    _run([mvn, *_MVN_FLAGS, "dependency:copy", f"-Dartifact=io.apicurio:apicurio-registry-app:{APICURIO_VERSION}",
          f"-DoutputDirectory={build / 'app'}"], log, "Apicurio Registry")
    with zipfile.ZipFile(build / "app" / f"apicurio-registry-app-{APICURIO_VERSION}.jar") as app_jar:
        properties = app_jar.read("application.properties").decode()
    (build / "src/main/resources/application.properties").write_text(properties + _EXTRA_PROPERTIES)
    _run([mvn, *_MVN_FLAGS, "-f", str(build / "pom.xml"), "package", "-DskipTests"], log, "Apicurio Registry")
    target = build / "target"
    staging = home.with_name(home.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copy(target / "apicurio-registry-runtime-1-runner.jar", staging / runner.name)
    shutil.copytree(target / "lib", staging / "lib")
    shutil.rmtree(home, ignore_errors=True)
    staging.rename(home)
    (home / ".complete").touch()
    shutil.rmtree(build, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RegistryServer:
    """A running Apicurio Registry started by `start_registry`; stop it with `stop`.

    Attributes:
        url: the Confluent-compatible base URL (``http://127.0.0.1:<port>/apis/ccompat/v7``).
        log_path: the server's output.
    """

    url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def stop(self, timeout_seconds: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after the timeout."""
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def start_registry(port: int = 0, *, timeout_seconds: float = 120.0) -> RegistryServer:
    """Provisions (once) and starts an in-memory Apicurio Registry on ``port`` (0: a free one)."""
    runner = apicurio_registry()
    port = port or _free_port()
    log_path = cache_dir() / "logs" / f"apicurio-registry-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            ["java", "-Xmx512m", f"-Dquarkus.http.port={port}", "-Dquarkus.http.host=127.0.0.1",
             "-jar", str(runner)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    server = RegistryServer(f"http://127.0.0.1:{port}{CCOMPAT_PATH}", log_path, process)
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerStartError("Apicurio Registry", str(log_path), f"exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{server.url}/subjects", timeout=2) as answer:  # noqa: S310 - local URL
                if answer.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    server.stop()
    raise ServerStartError("Apicurio Registry", str(log_path), f"not ready after {timeout_seconds}s")

"""Local, Docker-free Kafka, Temporal and PostgreSQL servers for development, the demo and the tests.

Kafka runs from Maven Central jars (KRaft, one combined broker+controller node); Temporal runs as
the CLI dev server built from the Go module proxy; PostgreSQL (the customer store) runs from a
relocatable build on Maven Central. Everything is cached outside the working tree. A Web Push
service (`devstack.webpush`) and an SMTP server (`devstack.mail`) stand in for a browser's push
service and a mail relay (``eventflow dev push-service | mail-server``).
"""

from devstack.cache import cache_dir
from devstack.errors import DevstackError, MissingToolError, ServerStartError
from devstack.stack import Endpoints, Stack, StackStatus

__all__ = [
    "DevstackError",
    "Endpoints",
    "MissingToolError",
    "ServerStartError",
    "Stack",
    "StackStatus",
    "cache_dir",
]

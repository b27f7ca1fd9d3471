"""Creating the topics Eventflow reads and writes, where the cluster lets clients do so."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic


def ensure_topics(client_config: Mapping[str, str], topics: Iterable[str], *, partitions: int = 3,
                  replication_factor: int = 1, timeout_seconds: float = 30.0) -> None:
    """Creates missing topics; existing ones are left as they are."""
    # librdkafka's own lines (a "Purging ... background queue" on close) go to logging, not raw to stderr.
    config: dict[str, object] = {**client_config, "logger": logging.getLogger("librdkafka")}
    admin = AdminClient(config)  # type: ignore[arg-type]  # the stubs omit the `logger` setting confluent-kafka takes
    existing = admin.list_topics(timeout=timeout_seconds).topics
    wanted = [NewTopic(t, num_partitions=partitions, replication_factor=replication_factor)
              for t in topics if t not in existing]
    if not wanted:
        return
    for _topic, future in admin.create_topics(wanted, operation_timeout=timeout_seconds).items():
        try:
            future.result(timeout=timeout_seconds)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise

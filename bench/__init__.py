"""Benchmarks of the Kafka-to-Temporal bridge on the local real stack (``python -m bench``)."""

"""IngestFunction: the bus's front door. CloudEvents over HTTP in, Kafka records out, 202 only once the
broker acknowledged. `app.py` is the Lambda handler; the modules here are plain functions on plain values."""

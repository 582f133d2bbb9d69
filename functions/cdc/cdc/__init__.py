"""CdcFunction: database changes (DynamoDB Streams, Debezium over Kinesis or Kafka) become CloudEvents on the
bus, keyed by primary key so that the changes of one row stay in order."""

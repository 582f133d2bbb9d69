"""KafkaConsumerFunction: the bus's delivery side. Lambda's Kafka event source mapping hands it batches; each
record is decoded into a CloudEvent, matched against the subscriptions and delivered to their targets."""

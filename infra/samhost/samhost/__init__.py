"""A SAM application on LocalStack without Docker: its functions run as host processes (LocalStack's host executor
plugin, eventbus_localstack), its Kafka event source mappings are played by a poller (samhost.kafka_trigger), and
`sam build` + samlocal deploy, invoke and the template's evaluation are here too. Nothing of the event bus."""

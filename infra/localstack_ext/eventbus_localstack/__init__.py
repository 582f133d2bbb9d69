"""The event bus's LocalStack plugins: DynamoDB and DynamoDB Streams from moto, Lambda functions as host processes.

Installed into LocalStack's venv (not the project's) and found by LocalStack through entry points; see
samhost.localstack (infra/samhost/samhost/localstack.py).
"""

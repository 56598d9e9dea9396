"""The AWS peer of the AWS sink tests: the session's moto server (tests/integration/peers.py)
and boto3 clients on it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from pipeline.settings import Settings
from tests.integration.peers import Peers, free_port


@pytest.fixture(scope="session")
def moto_server(peers: Peers) -> str:
    """The URL of the session's moto server (tests/integration/peers.py)."""
    return peers.aws_url


@dataclass(frozen=True)
class Aws:
    """The moto peer as the tests use it: Herald settings, credentials, boto3 clients."""

    url: str
    region: str = "us-east-1"
    # Distinctive values, so a leak into a config or an error is unmistakable.
    key_id: str = "AKIAHERALDTESTKEY000"
    secret: str = "herald+test/SECRET/never-shown-0000000000"
    _clients: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def settings(self) -> Settings:
        """Herald pointed at moto."""
        return Settings(aws_endpoint_url=self.url, delivery_timeout_s=2)

    @property
    def unreachable_settings(self) -> Settings:
        """Herald pointed at a loopback port nothing listens on."""
        return Settings(aws_endpoint_url=f"http://127.0.0.1:{free_port()}", delivery_timeout_s=2)

    def client(self, service: str) -> Any:
        """A boto3 client on moto, for setting up and reading back (cached per service)."""
        if service not in self._clients:
            self._clients[service] = boto3.client(
                service,
                endpoint_url=self.url,
                region_name=self.region,
                aws_access_key_id=self.key_id,
                aws_secret_access_key=self.secret,
            )
        return self._clients[service]

    def new_queue(self, name: str) -> tuple[str, str]:
        """Create a queue; its URL and ARN."""
        sqs = self.client("sqs")
        attributes = {"FifoQueue": "true"} if name.endswith(".fifo") else {}
        url: str = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return url, str(arn["Attributes"]["QueueArn"])

    def queue_messages(self, queue_url: str) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
        """An async reader of every message the queue has received so far, oldest first
        (each call takes what arrived since the last one, deleting it from the queue)."""
        sqs = self.client("sqs")
        seen: list[dict[str, Any]] = []

        def drain() -> list[dict[str, Any]]:
            response = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            )
            for message in response.get("Messages", []):
                seen.append(message)
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            return list(seen)

        async def received() -> list[dict[str, Any]]:
            return await asyncio.to_thread(drain)

        return received


@pytest.fixture(scope="session")
def aws(moto_server: str) -> Aws:
    """The session's moto peer."""
    return Aws(moto_server)

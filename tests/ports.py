"""Where the test and fault-suite services listen, for a given HERALD_TEST_PORT_OFFSET.

Every port is below 32768: the kernel hands out 32768-60999 for outgoing connections, and
a listening port there can be held by a connection in TIME_WAIT when a service starts.
Sessions run side by side with offsets 500 or 1000 apart (0...6500), so the bases below
differ by anything but a multiple of 500. Receivers and peers the tests start themselves
(moto, webhook receivers) bind port 0 instead.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

EPHEMERAL_FIRST = 32768
LARGEST_OFFSET = 6500


@dataclass(frozen=True)
class TestPorts:
    """The listening ports of one test session."""

    __test__ = False  # not a test class, whatever its name

    kafka: int
    kafka_controller: int
    postgres: int
    rabbitmq: int
    rabbitmq_dist: int  # Erlang distribution; rabbitmq.sh gives its CLI tools the 10 above
    api: int  # extra API processes of some tests: api + 2, api + 4
    worker: int
    faults: int  # the fault suite's own API and workers: faults + 0, 1, 2, ...
    kafka_sasl_ssl: int  # the broker's SASL_SSL listener (tests/integration/broker_tls.py)

    def all(self) -> list[int]:
        """Every port, the RabbitMQ CLI tools' and the fault suite's ranges included."""
        extra = [self.rabbitmq_dist + n for n in range(1, 11)] + [self.api + 2, self.api + 4]
        extra += [self.faults + n for n in range(1, FAULT_PROCESSES)]
        return [*astuple(self), *extra]


FAULT_PROCESSES = 8


def test_ports(offset: int) -> TestPorts:
    """The ports for HERALD_TEST_PORT_OFFSET=`offset`."""
    return TestPorts(
        kafka=19092 + offset,
        kafka_controller=19093 + offset,
        postgres=15432 + offset,
        rabbitmq=17672 + offset,
        rabbitmq_dist=17700 + offset,
        api=18080 + offset,
        worker=18081 + offset,
        faults=18300 + offset,
        kafka_sasl_ssl=19094 + offset,
    )


test_ports.__test__ = False  # type: ignore[attr-defined]

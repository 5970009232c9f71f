"""The protobuf messages and gRPC stubs of the ledgerd API, generated from
proto/ledger/v1 by ``make generate``.

The thin methods of :class:`ledgerd.Client` take and return these messages::

    from ledgerd.pb import ledger_pb2, error_reason_pb2

    response = client.lookup(namespace="billing", key="invoice-42")
    assert isinstance(response, ledger_pb2.LookupResponse)

They live inside the ``ledgerd`` package (``ledgerd._gen``), so installing
the client adds no top-level package besides ``ledgerd``.
"""

from ._gen.ledger.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    error_reason_pb2,
    ledger_pb2,
    ledger_pb2_grpc,
)

__all__ = ["admin_pb2", "admin_pb2_grpc", "error_reason_pb2", "ledger_pb2", "ledger_pb2_grpc"]

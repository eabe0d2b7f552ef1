#!/usr/bin/env python3
"""An Arrow Flight server for tests/flight.rs: pyarrow.flight over h2c on
127.0.0.1 (an OS-chosen port), serving one table, the risk domain's
exposures (policies/domains/risk/exposures.odcs.yaml).

    server.py ROWS

The table has ROWS rows in record batches of 65,536 rows, made the same way
every time. Prints, one line each, flushed:

  TABLE rows=<n> bytes=<size in memory> sha256=<hash of its batches>
  PORT <n>                                  when it listens
  ARRIVED <RPC> principal=<x-meshgate-principal>   as each call reaches a handler
  STORED rows=<n> sha256=<hash>             when a DoPut's stream has ended

The hash is the SHA-256 of every record batch's IPC message
(RecordBatch.serialize()), in order: what the client computes on what it
received (tests/flight/client.py). Endpoints carry no location, so clients
fetch the data through the connection that gave them the FlightInfo (the
sidecar), never from the server's own address.
"""
import hashlib
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight

BATCH_ROWS = 65536
TICKET = b"exposures"
DESCRIPTOR = flight.FlightDescriptor.for_path("exposures")


def batches_hash(batches):
    h = hashlib.sha256()
    for b in batches:
        h.update(b.serialize())
    return h.hexdigest()


def exposures(rows):
    """Deterministic columns: id, counterparty, book, notional, currency."""
    batches = []
    for start in range(0, rows, BATCH_ROWS):
        n = min(BATCH_ROWS, rows - start)
        ids = pa.array(range(start, start + n), pa.int64())
        counterparty = pc.cast(pc.bit_wise_and(pc.multiply(ids, 7919), 0xFFFF), pa.int32())
        book = pc.binary_join_element_wise("BOOK-", pc.cast(pc.bit_wise_and(ids, 0x3FF), pa.string()), "")
        notional = pc.divide(pc.cast(pc.multiply(ids, 104729), pa.float64()), 100.0)
        currency = pa.DictionaryArray.from_arrays(
            pc.cast(pc.bit_wise_and(ids, 3), pa.int8()), pa.array(["EUR", "USD", "GBP", "CHF"])
        )
        batches.append(
            pa.RecordBatch.from_arrays(
                [ids, counterparty, book, notional, currency],
                ["id", "counterparty", "book", "notional", "currency"],
            )
        )
    return pa.Table.from_batches(batches)


class Principal(flight.ServerMiddleware):
    def __init__(self, principal):
        self.principal = principal


class PrincipalFactory(flight.ServerMiddlewareFactory):
    """Keeps the sidecar's x-meshgate-principal header for the handlers."""

    def start_call(self, info, headers):
        values = headers.get("x-meshgate-principal", [""])
        return Principal(values[0] if values else "")


def arrived(context, rpc):
    mw = context.get_middleware("principal")
    print(f"ARRIVED {rpc} principal={mw.principal if mw else ''}", flush=True)


class Exposures(flight.FlightServerBase):
    def __init__(self, rows):
        super().__init__("grpc://127.0.0.1:0", middleware={"principal": PrincipalFactory()})
        self.table = exposures(rows)
        batches = self.table.to_batches()
        print(
            f"TABLE rows={self.table.num_rows} bytes={self.table.nbytes} sha256={batches_hash(batches)}",
            flush=True,
        )

    def info(self):
        # No location: fetched again through the same connection.
        endpoint = flight.FlightEndpoint(TICKET, [])
        return flight.FlightInfo(
            self.table.schema, DESCRIPTOR, [endpoint], self.table.num_rows, self.table.nbytes
        )

    def list_flights(self, context, criteria):
        arrived(context, "ListFlights")
        yield self.info()

    def get_flight_info(self, context, descriptor):
        arrived(context, "GetFlightInfo")
        if descriptor.path != DESCRIPTOR.path:
            raise flight.FlightUnavailableError(f"no flight {descriptor.path}")
        return self.info()

    def get_schema(self, context, descriptor):
        arrived(context, "GetSchema")
        return flight.SchemaResult(self.table.schema)

    def do_get(self, context, ticket):
        arrived(context, "DoGet")
        if ticket.ticket != TICKET:
            raise flight.FlightUnavailableError("unknown ticket")
        return flight.RecordBatchStream(self.table)

    def do_put(self, context, descriptor, reader, writer):
        arrived(context, "DoPut")
        received = [chunk.data for chunk in reader]
        rows = sum(b.num_rows for b in received)
        print(f"STORED rows={rows} sha256={batches_hash(received)}", flush=True)

    def list_actions(self, context):
        arrived(context, "ListActions")
        return [("refresh", "Recompute the exposures")]

    def do_action(self, context, action):
        arrived(context, "DoAction")
        yield flight.Result(b"refreshed")


def main():
    rows = int(sys.argv[1])
    server = Exposures(rows)
    print(f"PORT {server.port}", flush=True)
    server.serve()


if __name__ == "__main__":
    main()

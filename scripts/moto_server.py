#!/usr/bin/env python3
"""moto's server (the local S3, Kinesis and KMS), with one fix to its Kinesis emulation.

moto 5 finds a shard's last sequence number by copying every key of the shard into a
list, once per record put (`Shard.get_max_sequence_number`), so each PutRecords costs
time in proportion to the records already on the stream: a 10,000-record run spent about
30% of the emulator's CPU there, on the same two cores the poller hashes on, and 100,000
record runs were bound by it. Real Kinesis has no such cost. The fix reads the last key of
the (ordered) dict directly; sequence numbers, order and every answer stay the same.

Arguments are moto_server's own (`-H 127.0.0.1 -p 5055`).
"""
import sys

from moto.kinesis import models


def _min_sequence_number(self) -> int:
    return next(iter(self.records), 0)


def _max_sequence_number(self) -> int:
    return next(reversed(self.records), 0)


models.Shard.get_min_sequence_number = _min_sequence_number
models.Shard.get_max_sequence_number = _max_sequence_number

from moto.server import main  # noqa: E402  (after the patch, as the server imports models)

if __name__ == "__main__":
    sys.exit(main())

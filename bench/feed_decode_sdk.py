"""Times the official upstox-python-sdk 2.30.0 decode of one feed frame, for comparison
with the Rust decoder (bench/feed-decode.sh runs both).

Measures, on one core, in frames per second:
  parse  - FeedResponse.ParseFromString alone (the protobuf runtime's C parser, upb)
  dict   - ParseFromString + json_format.MessageToDict, what MarketDataStreamerV3 does
           for every frame before calling on_message

Usage: python feed_decode_sdk.py FRAME.bin [SECONDS_PER_ROUND]
Prints "key=value" lines.
"""

import sys
import time

from google.protobuf import __version__ as protobuf_version
from google.protobuf import json_format
from google.protobuf.internal import api_implementation
from upstox_client.feeder.proto import MarketDataFeedV3_pb2 as pb


def rate(fn, seconds):
    """Best frames/s over 5 rounds of about `seconds` each."""
    n = 1
    while True:  # calibrate a batch that takes ~1/10 of a round
        start = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - start > seconds / 10:
            break
        n *= 2
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        done = 0
        while time.perf_counter() - start < seconds:
            for _ in range(n):
                fn()
            done += n
        best = max(best, done / (time.perf_counter() - start))
    return best


def main():
    path = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    data = open(path, "rb").read()

    def parse():
        msg = pb.FeedResponse()
        msg.ParseFromString(data)
        return msg

    def parse_dict():
        return json_format.MessageToDict(parse())

    assert len(parse().feeds) > 0, "frame did not decode"
    print(f"protobuf={protobuf_version} impl={api_implementation.Type()} bytes={len(data)}")
    print(f"parse_frames_per_s={rate(parse, seconds):.0f}")
    print(f"dict_frames_per_s={rate(parse_dict, seconds):.0f}")


if __name__ == "__main__":
    main()

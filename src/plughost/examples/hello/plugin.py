"""The hello example: its own gRPC service (hello.v1.Greeter/Greet) on top of the SDK."""

from __future__ import annotations

import logging
import sys
from typing import Any

# The plugin's own stubs, generated next to this file from proto/hello/v1/hello.proto
# (gen_stubs.sh; dev mode regenerates them when the .proto changes).
import hello_pb2_grpc
from google.protobuf import wrappers_pb2

from plughost.sdk import PluginServer, serve

GREETING = "hello"


def register(server: Any) -> None:
    hello_pb2_grpc.add_GreeterServicer_to_server(Greeter(), server)  # type: ignore[no-untyped-call]


class Greeter(hello_pb2_grpc.GreeterServicer):
    def Greet(self, request, context):  # type: ignore[no-untyped-def]
        logging.info("greeting %s", request.value)
        return wrappers_pb2.StringValue(value=f"{GREETING}, {request.value}")


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="[%(levelname)s] %(message)s")
    logging.info("hello plugin starting")
    serve(
        PluginServer(
            services=[register],
        )
    )


if __name__ == "__main__":
    main()

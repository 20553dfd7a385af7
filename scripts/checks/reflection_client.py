"""Resolves every method of every service a Gauntlet server lists, using only
server reflection and a fresh protobuf descriptor pool (grpcio-reflection),
the way grpcurl or a Python client would. Exits non-zero naming the first
type that cannot be resolved.

    python3 scripts/checks/reflection_client.py 127.0.0.1:7070
"""

import sys

import grpc
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main(target: str) -> int:
    channel = grpc.insecure_channel(target)
    database = ProtoReflectionDescriptorDatabase(channel)
    pool = descriptor_pool.DescriptorPool(database)
    services = [s for s in database.get_services() if s.startswith("gauntlet.")]
    if not services:
        print("no gauntlet services listed", file=sys.stderr)
        return 1
    methods = 0
    for name in services:
        service = pool.FindServiceByName(name)
        for method in service.methods:
            # Touching the full names forces every field type to resolve.
            for message in (method.input_type, method.output_type):
                for field in message.fields:
                    if field.message_type is not None:
                        _ = field.message_type.full_name
            methods += 1
    print(f"resolved {methods} methods of {len(services)} services from reflection alone")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:7070"))

"""Generated protobuf code: do not edit (tools/gen_protos.py)."""

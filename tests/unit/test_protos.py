"""The shipped descriptor set and generated stubs match protos/ (run `make proto` if not)."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"


def _files(descriptor_set: bytes) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
    return {f.name: f for f in fds.file}


def _without_json_names(proto: descriptor_pb2.FileDescriptorProto) -> bytes:
    """Python codegen drops the derived json_name; compare everything else."""
    stack = list(proto.message_type)
    while stack:
        message = stack.pop()
        for field in message.field:
            field.ClearField("json_name")
        stack.extend(message.nested_type)
    return proto.SerializeToString()


def test_protoset_is_up_to_date(tmp_path: Path) -> None:
    out = tmp_path / "fresh.protoset"
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "recsys/v1").glob("*.proto"))
    assert (
        protoc.main(
            [
                "protoc",
                f"-I{PROTOS}",
                "--include_imports",
                "--include_source_info",
                f"--descriptor_set_out={out}",
                *sources,
            ]
        )
        == 0
    )
    shipped = _files((PROTOS / "recsys.protoset").read_bytes())
    fresh = _files(out.read_bytes())
    assert shipped.keys() == fresh.keys()
    for name in fresh:
        assert shipped[name] == fresh[name], f"{name} changed: run `make proto`"


def test_generated_modules_match_protos() -> None:
    from recsys.v1 import gateway_pb2, ranking_pb2, retrieval_pb2, tagging_pb2

    fresh = _files((PROTOS / "recsys.protoset").read_bytes())
    for module in (gateway_pb2, ranking_pb2, retrieval_pb2, tagging_pb2):
        # serialized_pb is the descriptor protoc embedded when the module was generated.
        generated = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        expected = descriptor_pb2.FileDescriptorProto()
        expected.CopyFrom(fresh[module.DESCRIPTOR.name])
        expected.ClearField("source_code_info")
        assert _without_json_names(generated) == _without_json_names(expected), (
            f"{module.__name__} is stale: run `make proto`"
        )

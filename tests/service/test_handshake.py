"""Handshake, protocol versions, auth, TLS, health and reflection against a real loopback server."""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from anymole.client import AnyMoLeClient
from anymole.service.server import SERVICE_NAME
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb
from anymole.wire.proto.anymole.v1 import anymole_pb2_grpc as pb_grpc
from anymole.wire.version import METADATA_KEY, PROTOCOL_VERSION, check_client_version, parse_version


async def test_server_info_reports_versions_methods_and_limits(make_server, connect):
    _, port = await make_server(max_queue=7)
    client = await connect(port)
    info = client.info
    assert info is not None
    assert (info.protocol.major, info.protocol.minor) == PROTOCOL_VERSION
    from anymole import __version__

    assert info.server_version == __version__
    methods = {m.name: m for m in info.capabilities.methods}
    assert methods["interp"].available and methods["interp"].presets[0] == "cubic"
    assert not methods["anymole"].available and "interp" in methods["anymole"].unavailable_reason
    assert [d.name for d in info.capabilities.devices] == ["cpu"]
    limits = info.capabilities.limits
    assert limits.max_message_bytes >= 256 * 2**20
    assert limits.max_queue == 7
    assert not info.capabilities.auth_required


@pytest.mark.parametrize("how", ["field", "metadata"])
async def test_major_version_mismatch_is_failed_precondition(make_server, how):
    _, port = await make_server()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = pb_grpc.AnyMoLeServiceStub(ch)
        if how == "field":
            call = stub.GetServerInfo(pb.GetServerInfoRequest(client_protocol=pb.ProtocolVersion(major=2, minor=3)))
        else:
            call = stub.ListJobs(pb.ListJobsRequest(), metadata=((METADATA_KEY, "2.3"),))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details().startswith("server 1.x, plugin 2.3: update the plugin")


async def test_minor_version_difference_is_accepted(make_server):
    _, port = await make_server()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = pb_grpc.AnyMoLeServiceStub(ch)
        req = pb.GetServerInfoRequest(client_protocol=pb.ProtocolVersion(major=1, minor=9))
        info = await stub.GetServerInfo(req, metadata=((METADATA_KEY, "1.9"),))
    assert info.protocol.major == 1


def test_version_parsing():
    assert parse_version("1.2") == (1, 2)
    assert parse_version(" 1 ") == (1, 0)
    for bad in ("", "a.b", "1.2.3", "-1.0"):
        with pytest.raises(Exception, match="protocol version"):
            parse_version(bad)
    check_client_version((PROTOCOL_VERSION[0], 99))
    with pytest.raises(Exception, match=r"server 1\.x, plugin 0\.4"):
        check_client_version((0, 4))


async def test_auth_on_rejects_missing_and_wrong_tokens(make_server):
    _, port = await make_server(token="s3cret")
    with pytest.raises(grpc.aio.AioRpcError) as err:  # a wrong token fails the handshake itself
        await AnyMoLeClient.connect(f"127.0.0.1:{port}", token="wrong")
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "Bearer" in err.value.details()
    # Without a token the handshake answers (issue 15.7) and says one is needed; every other call refuses.
    async with await AnyMoLeClient.connect(f"127.0.0.1:{port}") as anonymous:
        assert anonymous.info.capabilities.auth_required
        assert anonymous.info.protocol.major == PROTOCOL_VERSION[0]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await anonymous.list_jobs()
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED and "Bearer" in err.value.details()
    client = await AnyMoLeClient.connect(f"127.0.0.1:{port}", token="s3cret")
    async with client:
        assert client.info.capabilities.auth_required
        assert await client.list_jobs() == []


async def test_auth_on_streaming_and_upload_calls_are_gated(make_server):
    _, port = await make_server(token="s3cret")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = pb_grpc.AnyMoLeServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.WatchJob(pb.WatchJobRequest(job_id="job-x")):
                pass
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED

        async def parts():
            yield pb.UploadCharacterRequest(header=pb.UploadHeader(format=pb.CHARACTER_FORMAT_PROTO, total_bytes=1))
            yield pb.UploadCharacterRequest(chunk=b"x")

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.UploadCharacter(parts())
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_auth_off_needs_no_token_and_health_is_open(make_server, tmp_path):
    _, port = await make_server(token="s3cret")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:  # health passes the gate
        health = health_pb2_grpc.HealthStub(ch)
        resp = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    _, port2 = await make_server(data_dir=tmp_path / "auth-off")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port2}") as ch:
        jobs = await pb_grpc.AnyMoLeServiceStub(ch).ListJobs(pb.ListJobsRequest())
        assert list(jobs.jobs) == []


async def test_reflection_lists_the_service(make_server):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    _, port = await make_server()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)

        async def req():
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        names = []
        async for resp in stub.ServerReflectionInfo(req()):
            names = [s.name for s in resp.list_services_response.service]
    assert SERVICE_NAME == "anymole.v1.AnyMoLeService"
    assert SERVICE_NAME in names and "grpc.health.v1.Health" in names


async def test_shutdown_goes_not_serving_and_refuses_jobs(make_server, connect, tiny, make_req):
    server, port = await make_server()
    client = await connect(port)
    health = health_pb2_grpc.HealthStub(client.channel)
    assert (await health.Check(health_pb2.HealthCheckRequest())).status == health_pb2.HealthCheckResponse.SERVING
    await server.health.enter_graceful_shutdown()
    await server.jobs.shutdown(0.0)
    assert (await health.Check(health_pb2.HealthCheckRequest())).status == health_pb2.HealthCheckResponse.NOT_SERVING
    up = await client.upload_character(tiny())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.submit(make_req(up))
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in err.value.details()


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost (cryptography if installed, else the openssl CLI)."""
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
            check=True, capture_output=True,
        )  # fmt: skip
        return cert, key
    import ipaddress

    k = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    c = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(k.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(k, hashes.SHA256())
    )
    cert.write_bytes(c.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert, key


async def test_tls_with_token(make_server, tmp_path):
    cert, key = _self_signed(tmp_path)
    _, port = await make_server(tls_cert=cert, tls_key=key, token="t")
    client = await AnyMoLeClient.connect(f"127.0.0.1:{port}", tls_ca=cert.read_bytes(), token="t")
    async with client:
        assert client.info.capabilities.auth_required
    with pytest.raises(grpc.aio.AioRpcError) as err:  # plaintext against a TLS port never gets through
        await AnyMoLeClient.connect(f"127.0.0.1:{port}", token="t", timeout=2.0)
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_bad_request_detail_names_the_field():
    from anymole.errors import InvalidInput
    from anymole.service.errors import to_status

    status = to_status(InvalidInput("keyframes[3].rotations", "norm 0.2"))
    assert status.code is grpc.StatusCode.INVALID_ARGUMENT
    raw = dict(status.trailing_metadata)["grpc-status-details-bin"]
    from google.rpc import status_pb2

    st = status_pb2.Status.FromString(raw)
    bad = error_details_pb2.BadRequest()
    assert st.details[0].Unpack(bad)
    assert bad.field_violations[0].field == "keyframes[3].rotations"


def test_device_resolution():
    import torch

    from anymole.errors import InvalidInput
    from anymole.service.server import resolve_devices

    if torch.cuda.is_available():
        assert [n for n, _ in resolve_devices(("auto",))] == [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    else:
        assert resolve_devices(("auto",)) == [("cpu", "CPU")]
        with pytest.raises(InvalidInput, match="cuda:0 is not available"):
            resolve_devices(("cuda:0",))
    assert [n for n, _ in resolve_devices(("cpu", "cpu"))] == ["cpu", "cpu"]


async def test_a_taken_port_is_a_clear_error(make_server, tmp_path):
    from anymole.errors import ResourceExhausted
    from anymole.service.server import ServerConfig, build_server

    _, port = await make_server()
    with pytest.raises(ResourceExhausted, match=f"cannot listen on 127.0.0.1:{port}"):
        build_server(ServerConfig(port=port, data_dir=tmp_path / "second", devices=("cpu",)))

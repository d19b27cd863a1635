from __future__ import annotations

import os

import pytest

from gair.data import storage


def test_local_roundtrip_and_missing(tmp_path) -> None:
    uri = str(tmp_path / "a" / "b.bin")
    storage.write_bytes(uri, b"hello")
    assert storage.read_bytes(uri) == b"hello"
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(str(tmp_path / "nope"))


def test_s3_roundtrip_against_real_server(s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/dir/x.bin"
    storage.write_bytes(uri, b"\x00\x01payload")
    assert storage.read_bytes(uri) == b"\x00\x01payload"
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(f"s3://{s3_bucket}/dir/missing.bin")
    storage.write_bytes(f"s3://{s3_bucket}/m/part-00000.parquet", b"")
    assert storage.list_parquet(f"s3://{s3_bucket}/m") == [f"{s3_bucket}/m/part-00000.parquet"]


def test_explicit_endpoint_wins_and_secrets_are_not_in_repr(s3_server: str) -> None:
    opts = storage.S3Options(endpoint_url="http://127.0.0.1:1", region="eu-west-1").resolved()
    assert opts.endpoint_url == "http://127.0.0.1:1" and opts.region == "eu-west-1"
    env = storage.S3Options().resolved()
    assert env.endpoint_url == s3_server
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in repr(env) + repr(opts)


def test_an_s3_object_is_read_with_one_request_and_a_prefix_is_no_file(s3_bucket: str) -> None:
    """An image behind an s3:// URI costs one GET (the fsspec bridge asked for the object's info twice
    first); a URI that names a "directory" (a prefix) is still told apart from an absent object."""
    storage.write_bytes(f"s3://{s3_bucket}/img/a.jpg", b"jpeg bytes")
    fs, _ = storage.resolve(f"s3://{s3_bucket}/img/a.jpg")
    client = storage._s3fs_of(fs)
    assert client is not None
    storage.read_bytes(f"s3://{s3_bucket}/img/a.jpg")  # the client's session exists from here on
    calls: list[str] = []
    client.s3.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    assert storage.read_bytes(f"s3://{s3_bucket}/img/a.jpg") == b"jpeg bytes"
    assert calls == ["GetObject"], calls
    with pytest.raises(IsADirectoryError):
        storage.read_bytes(f"s3://{s3_bucket}/img")
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(f"s3://{s3_bucket}/img/absent.jpg")

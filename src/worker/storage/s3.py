"""An S3 bucket (AWS or any S3-compatible server: MinIO, Ceph, R2, moto) as artifact store.

Objects live at `<prefix><key>` in one bucket; keys follow the same rule as LocalStore's
(`worker.storage.base.check_key`). `url(key)` is a presigned GET URL valid for `url_ttl_s`
seconds: what a result hands out for viewing. Callers that want a durable reference instead (one
that never expires, for a later `CadSource.uri` or for another worker) use `s3_uri(key)`,
`s3://<bucket>/<prefix><key>`, and read it back with `get_bytes`.

Every failure of boto3/botocore (endpoint unreachable, no such bucket, access denied, timeouts,
missing credentials) becomes a StorageError with one sentence naming the bucket, the endpoint
and the cause. Timeouts are short and retries bounded (3 attempts, jittered backoff), so an
unreachable endpoint fails within seconds instead of hanging the job. Measured with the defaults:
a refused connection or an unknown host fails in under 1 s, a black-holed endpoint (connect
timeout 2 s per attempt) in about 6 s. A server that accepts but never answers costs, per
attempt, the read timeout (plus botocore's fixed 1 s wait for `100 Continue` on uploads): about
35 s with the defaults; pass a lower `read_timeout_s` if that bound matters more than patience
with a slow store.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import boto3
import boto3.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from worker.storage.base import (
    NotInStore,
    ObjectNotFound,
    ObjectTooLarge,
    StorageError,
    check_key,
)

if TYPE_CHECKING:
    from types_boto3_s3.client import S3Client

MAX_URL_TTL_S = 7 * 24 * 3600
"""SigV4 presigned URLs cannot live longer than a week."""

_BOTO_ERRORS = (BotoCoreError, ClientError, boto3.exceptions.Boto3Error)

# Error codes worth a plain-words cause; anything else is reported as `Code: Message`.
_CODES = {
    "NoSuchBucket": "the bucket does not exist",
    "NoSuchKey": "there is no such object",
    "404": "there is no such object or bucket",
    "NotFound": "there is no such object or bucket",
    "AccessDenied": "access was denied",
    "403": "access was denied",
    "Forbidden": "access was denied",
    "InvalidAccessKeyId": "the access key was rejected",
    "SignatureDoesNotMatch": "the secret key was rejected",
    "ExpiredToken": "the credentials have expired",
    "PreconditionFailed": "the object changed while it was being read",
    "412": "the object changed while it was being read",
    "SlowDown": "the store is throttling requests",
    "503": "the store is unavailable",
}


class S3Store:
    """Artifact store on an S3 bucket. Thread-safe (one boto3 client, its own session)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        url_ttl_s: int = 24 * 3600,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 10.0,
        max_attempts: int = 3,
    ) -> None:
        """`endpoint_url` None means AWS itself; set it for an S3-compatible server (then
        path-style addressing is used, which those servers all support). Credentials default to
        boto3's chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, instance role, …);
        give both `access_key_id` and `secret_access_key` to override it. `max_attempts` is
        the total number of requests per operation (first try included)."""
        if not bucket:
            raise StorageError("S3 store needs a bucket name")
        norm = prefix.strip("/")
        if norm:
            try:
                check_key(norm)
            except StorageError:
                raise StorageError(
                    f"invalid S3 prefix {prefix!r}: it must look like an artifact key"
                ) from None
        if not 0 < url_ttl_s <= MAX_URL_TTL_S:
            raise StorageError(f"S3 URL lifetime must be 1..{MAX_URL_TTL_S} s, not {url_ttl_s}")
        if (access_key_id is None) != (secret_access_key is None):
            raise StorageError("S3 credentials need both an access key id and a secret key")
        self.bucket = bucket
        self.prefix = f"{norm}/" if norm else ""
        self.url_ttl_s = url_ttl_s
        config: dict[str, Any] = {
            "region_name": region,
            "signature_version": "s3v4",
            "connect_timeout": connect_timeout_s,
            "read_timeout": read_timeout_s,
            # total_max_attempts counts the first try; botocore's `max_attempts` key counts
            # only the retries (so max_attempts=3 would mean 4 requests).
            "retries": {"mode": "standard", "total_max_attempts": max_attempts},
        }
        if endpoint_url is not None:
            # Third-party servers: bucket in the path, and no flexible checksums (botocore
            # 1.36+ sends CRC32 trailers by default, which several S3-compatible servers reject).
            config["s3"] = {"addressing_style": "path"}
            config["request_checksum_calculation"] = "when_required"
            config["response_checksum_validation"] = "when_required"
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            aws_session_token=session_token,
            region_name=region,
        )
        try:
            self._client: S3Client = session.client(
                "s3", endpoint_url=endpoint_url, config=Config(**config)
            )
        except (*_BOTO_ERRORS, ValueError) as e:  # e.g. a malformed endpoint URL
            where = f"endpoint {endpoint_url}" if endpoint_url else f"region {region}"
            raise StorageError(
                f"cannot set up S3 store for bucket {bucket!r} at {where}: {e}"
            ) from None
        self._transfer = TransferConfig(max_concurrency=4)

    @property
    def endpoint(self) -> str:
        return self._client.meta.endpoint_url

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def s3_uri(self, key: str) -> str:
        """The durable reference `s3://<bucket>/<prefix><key>` (never expires, needs
        credentials to read)."""
        return f"s3://{self.bucket}/{self._name(key)}"

    def uri(self, key: str) -> str:
        """The lasting reference of `key`: its `s3_uri`."""
        return self.s3_uri(key)

    def url(self, key: str) -> str:
        """A presigned GET URL for `key`, valid for `url_ttl_s` seconds. Computed locally (no
        request); the object need not exist yet."""
        name = self._name(key)
        try:
            return self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": name},
                ExpiresIn=self.url_ttl_s,
            )
        except _BOTO_ERRORS as e:
            raise self._error("sign a URL for", name, e) from None

    def put_file(self, key: str, path: Path, content_type: str) -> str:
        """Upload the file (streamed; multipart above 8 MiB), overwriting; return its URL."""
        name = self._name(key)
        try:
            self._client.upload_file(
                str(path),
                self.bucket,
                name,
                ExtraArgs={"ContentType": content_type},
                Config=self._transfer,
            )
        except _BOTO_ERRORS as e:
            raise self._error("upload", name, e) from None
        except OSError as e:
            raise StorageError(f"cannot read {path} to upload it to {self.s3_uri(key)}: {e}") from e
        return self.url(key)

    def put_bytes(self, key: str, data: bytes, content_type: str) -> str:
        """Store `data` under `key` (one PutObject, overwriting) and return its URL."""
        name = self._name(key)
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=name, Body=data, ContentType=content_type
            )
        except _BOTO_ERRORS as e:
            raise self._error("upload", name, e) from None
        return self.url(key)

    def get_bytes(self, key: str, max_bytes: int) -> bytes:
        """The object's bytes, at most `max_bytes`: a larger object is refused from its size
        (HEAD) before any of it is downloaded. The GET is pinned to the ETag the HEAD saw, so an
        object swapped in between fails instead of slipping past the cap."""
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, not {max_bytes}")
        name = self._name(key)
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=name)
            size = head["ContentLength"]
            if size > max_bytes:
                raise ObjectTooLarge(
                    f"refusing to read s3://{self.bucket}/{name}: it is {size} bytes, more than "
                    f"the {max_bytes} allowed"
                )
            etag = head.get("ETag")
            if etag:
                obj = self._client.get_object(Bucket=self.bucket, Key=name, IfMatch=etag)
            else:  # a server without ETags: the capped read below still bounds the size
                obj = self._client.get_object(Bucket=self.bucket, Key=name)
            body = obj["Body"]
            try:
                data = body.read(max_bytes + 1)
            finally:
                body.close()
        except _BOTO_ERRORS as e:
            err = self._error("read", name, e)
            if isinstance(e, ClientError) and str(e.response.get("Error", {}).get("Code")) in (
                "NoSuchKey",
                "NoSuchBucket",
                "404",
                "NotFound",
            ):
                raise ObjectNotFound(err.message) from None
            raise err from None
        if len(data) > max_bytes:  # the server lied about the size: still never more
            raise ObjectTooLarge(
                f"refusing to read s3://{self.bucket}/{name}: it is larger than the {max_bytes} "
                "bytes allowed"
            )
        return data

    def read_uri(self, uri: str, max_bytes: int) -> bytes:
        """An object of this store named by its `s3_uri`: only this bucket, only under this
        prefix, at most `max_bytes` (see get_bytes)."""
        u = urlparse(uri)
        name = unquote(u.path).lstrip("/")
        where = f"s3://{self.bucket}/{self.prefix}"
        if u.scheme != "s3" or u.netloc != self.bucket or not name.startswith(self.prefix):
            raise NotInStore(f"{uri[:300]} is outside the artifact store ({where})")
        try:
            key = check_key(name[len(self.prefix) :])
        except StorageError:
            raise NotInStore(f"s3://{u.netloc}/{name[:300]} is not a valid key") from None
        return self.get_bytes(key, max_bytes)

    def _error(self, action: str, name: str, e: BaseException) -> StorageError:
        return StorageError(
            f"S3 store could not {action} s3://{self.bucket}/{name} at {self.endpoint}: {_cause(e)}"
        )


def _cause(e: BaseException) -> str:
    """A short plain-words cause for a boto3/botocore exception (no traceback, one line)."""
    if isinstance(e, boto3.exceptions.S3UploadFailedError):
        inner = e.__cause__ or e.__context__  # boto3 raises it while handling a ClientError
        if inner is not None:
            return _cause(inner)
    if isinstance(e, ClientError):
        err = e.response.get("Error", {})
        code = str(err.get("Code", ""))
        if code in _CODES:  # HEAD answers carry no body: their code is the bare HTTP status
            return f"{_CODES[code]} ({'HTTP ' if code.isdigit() else ''}{code})"
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        msg = str(err.get("Message") or "").strip().rstrip(".")
        return f"{code or 'error'}{f' (HTTP {status})' if status else ''}: {msg or 'no message'}"
    if isinstance(e, EndpointConnectionError):
        return "the endpoint is unreachable (connection failed)"
    if isinstance(e, ConnectTimeoutError):
        return "connecting to the endpoint timed out"
    if isinstance(e, ReadTimeoutError):
        return "the endpoint did not answer in time"
    if isinstance(e, NoCredentialsError | PartialCredentialsError):
        return (
            "no usable credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile "
            "or a role)"
        )
    text = " ".join(str(e).split()).rstrip(".")
    return f"{type(e).__name__}: {text}" if text else type(e).__name__

"""Cloud errors are translated once per driver: a 503, a refused connection or a missing
resource leaves a driver as the pack's CloudError / NotFound, naming the cloud and the
operation, never with credentials; a bug stays a bug."""

import pytest

from vmopslib.errors import CloudError, NotFound
from vmopslib.provider import short_reason

openstack_exceptions = pytest.importorskip("openstack.exceptions")
botocore_exceptions = pytest.importorskip("botocore.exceptions")


def _openstack(raise_this):
    from vmopslib.openstack import OpenStackProvider

    class Driver(OpenStackProvider):
        def __init__(self):  # pylint: disable=super-init-not-called
            self.name, self.profile = "local", {}

        def _get_server(self, server_id):
            raise raise_this

    return Driver()


def _ec2(raise_this):
    from vmopslib.ec2 import EC2Provider

    class Driver(EC2Provider):
        def __init__(self):  # pylint: disable=super-init-not-called
            self.name, self.profile = "aws", {}

        def _get_server(self, server_id):
            raise raise_this

    return Driver()


def test_an_openstack_503_is_a_cloud_error_naming_cloud_and_operation():
    exc = openstack_exceptions.HttpException(
        message="Service Unavailable", details="nova-api is restarting", http_status=503
    )
    with pytest.raises(CloudError, match=r"cloud local: get_server failed: HTTP 503 nova-api"):
        _openstack(exc)._get_server("x")


def test_openstack_not_found_and_connection_refused():
    import keystoneauth1.exceptions

    with pytest.raises(NotFound, match="cloud local: get_server: not found"):
        _openstack(openstack_exceptions.NotFoundException(message="gone"))._get_server("x")
    with pytest.raises(CloudError, match="ConnectFailure"):
        _openstack(keystoneauth1.exceptions.ConnectFailure("refused"))._get_server("x")


def test_ec2_client_errors():
    def client_error(code, status):
        return botocore_exceptions.ClientError(
            {
                "Error": {"Code": code, "Message": "words"},
                "ResponseMetadata": {"HTTPStatusCode": status},
            },
            "DescribeInstances",
        )

    with pytest.raises(NotFound, match="InvalidInstanceID.NotFound"):
        _ec2(client_error("InvalidInstanceID.NotFound", 400))._get_server("i-1")
    with pytest.raises(CloudError, match=r"cloud aws: get_server failed: Unavailable \(HTTP 503\)"):
        _ec2(client_error("Unavailable", 503))._get_server("i-1")
    with pytest.raises(CloudError, match="EndpointConnectionError"):
        _ec2(
            botocore_exceptions.EndpointConnectionError(endpoint_url="https://ec2.example")
        )._get_server("i-1")


def test_a_bug_is_not_translated():
    with pytest.raises(KeyError):
        _openstack(KeyError("oops"))._get_server("x")


def test_credentials_in_urls_are_cut():
    text = (
        "GET https://admin:secret@cloud.example/v3?token=abc&X-Amz-Signature=def failed "
        + "x" * 400
    )
    out = short_reason(text)
    assert "secret" not in out and "abc" not in out and "def" not in out
    assert len(out) <= 303


def test_a_cloud_that_does_not_answer_is_a_cloud_error_not_a_traceback():
    """Real clients, a port nobody listens on (connection refused at once)."""
    from vmopslib.clouds import get_provider

    dead = get_provider(
        {
            "name": "dead",
            "driver": "openstack",
            "auth": {
                "auth_url": "http://127.0.0.1:9/v3",
                "username": "u",
                "password": "topsecret",
                "project_name": "p",
                "user_domain_name": "Default",
                "project_domain_name": "Default",
            },
        }
    )
    with pytest.raises(CloudError) as err:
        dead.servers_named("app2")
    assert "cloud dead: servers_named failed" in str(err.value)
    assert "topsecret" not in str(err.value)


def test_inside_the_driver_the_cloud_library_exceptions_still_flow():
    """Translated at the driver's boundary only: a method that catches its helper's
    botocore error (a volume that is gone -> None) keeps working."""
    from vmopslib.ec2 import EC2Provider

    gone = botocore_exceptions.ClientError(
        {"Error": {"Code": "InvalidVolume.NotFound", "Message": "gone"}}, "DescribeVolumes"
    )

    class Driver(EC2Provider):
        def __init__(self):  # pylint: disable=super-init-not-called
            self.name, self.profile = "aws", {}

        def _volumes(self, **kwargs):
            raise gone

    assert Driver()._volume_get("vol-1") is None
    with pytest.raises(NotFound, match="cloud aws: volumes: not found"):
        Driver()._volumes(VolumeIds=["vol-1"])  # called from outside: translated


def _flaky(failures, status=503, profile=None):
    """A driver whose _get_server fails ``failures`` times, then answers; and whose
    _create_server always fails the same way."""
    from vmopslib.openstack import OpenStackProvider

    class Driver(OpenStackProvider):
        def __init__(self):  # pylint: disable=super-init-not-called
            self.name, self.profile = "local", dict({"retry_delay": 0}, **(profile or {}))
            self.calls = {"get": 0, "create": 0}

        def _get_server(self, server_id):
            self.calls["get"] += 1
            if self.calls["get"] <= failures:
                raise openstack_exceptions.HttpException(message="busy", http_status=status)
            return {"id": server_id}

        def _create_server(self, spec):
            self.calls["create"] += 1
            raise openstack_exceptions.HttpException(message="busy", http_status=status)

    return Driver()


def test_an_idempotent_read_is_retried_on_a_transient_error_and_succeeds():
    drv = _flaky(2)
    assert drv._get_server("x") == {"id": "x"}  # pylint: disable=protected-access
    assert drv.calls["get"] == 3


def test_retries_are_bounded_and_configurable():
    drv = _flaky(10, profile={"retries": 1})
    with pytest.raises(CloudError, match="HTTP 503") as err:
        drv._get_server("x")  # pylint: disable=protected-access
    assert drv.calls["get"] == 2 and err.value.transient


def test_a_refusal_is_not_retried_and_a_boot_never_blindly():
    drv = _flaky(10, status=400)
    with pytest.raises(CloudError, match="HTTP 400"):
        drv._get_server("x")  # pylint: disable=protected-access
    assert drv.calls["get"] == 1
    drv = _flaky(0)
    with pytest.raises(CloudError, match="HTTP 503"):
        drv._create_server({})  # pylint: disable=protected-access
    assert drv.calls["create"] == 1  # the cloud may have booted it: the flow adopts, not repeats


def test_a_bad_retry_setting_is_a_clear_error():
    from vmopslib.errors import InvalidInput

    with pytest.raises(InvalidInput, match="retries must be a whole number"):
        _flaky(1, profile={"retries": "many"})._get_server("x")  # pylint: disable=protected-access

import pytest

from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration


def test_redis_server_survives_kill_with_its_data(tmp_path):
    import redis

    server = RedisServer(tmp_path / "r").start()
    try:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        server.kill()
        assert not server.ping()
        server.restart()
        assert client.get("k") == b"v"
        server.restart(empty=True)
        assert client.get("k") is None
    finally:
        server.stop()

"""Every script error the builder reports, with this file's line and one reason."""

from __future__ import annotations

import pytest

from pipeline import ConfigError, Data, Filter, MessageEnd, MessageStart, Proxy, StreamEnd
from pipeline.layout import Layout
from pipeline.testing import run_layout
from tests.helpers import here


def assert_located(exc: ConfigError, line: int) -> None:
    assert exc.filename == __file__
    assert exc.lineno == line
    assert str(exc).startswith(f"{__file__}:{line}: ")
    assert "\n" not in str(exc)


def test_unknown_filter_suggests_the_close_name() -> None:
    proxy = Proxy()
    with pytest.raises(ConfigError) as info:
        proxy.listen(8080).handle_dat(print)
    line = here() - 1
    assert_located(info.value, line)
    assert "unknown filter 'handle_dat'" in info.value.reason
    assert "did you mean 'handle_data'" in info.value.reason


def test_wrong_arguments() -> None:
    proxy = Proxy()
    with pytest.raises(ConfigError) as info:
        proxy.listen(8080).handle_data()
    assert_located(info.value, here() - 1)
    assert info.value.reason.startswith("handle_data(): missing a required argument")
    with pytest.raises(ConfigError) as info:
        proxy.listen(8081).handle_data(print, colour="red")
    assert_located(info.value, here() - 1)
    assert "unexpected keyword argument 'colour'" in info.value.reason
    with pytest.raises(ConfigError) as info:
        proxy.listen(8082).handle_data("not a function")
    assert_located(info.value, here() - 1)
    assert "expected a function" in info.value.reason


class Joint(Filter):
    name = "joint_example"
    joint = True


def test_joint_filter_without_to_is_reported_at_its_line() -> None:
    proxy = Proxy()
    proxy.listen(8080).add_filter(Joint)
    line = here() - 1
    with pytest.raises(ConfigError) as info:
        proxy.build()
    assert_located(info.value, line)
    assert "joint_example() is a joint filter" in info.value.reason
    assert ".to(" in info.value.reason


def test_unknown_layout_name() -> None:
    proxy = Proxy()
    proxy.pipeline("upstream")
    proxy.listen(8080).to("upstraem")
    line = here() - 1
    with pytest.raises(ConfigError) as info:
        proxy.build()
    assert_located(info.value, line)
    assert "no pipeline named 'upstraem' (did you mean 'upstream'?)" == info.value.reason


def test_duplicate_names_and_listeners() -> None:
    proxy = Proxy()
    proxy.pipeline("a")
    with pytest.raises(ConfigError) as info:
        proxy.pipeline("a")
    assert_located(info.value, here() - 1)
    assert "'a' is already defined" in info.value.reason
    proxy.listen("127.0.0.1:8080")
    with pytest.raises(ConfigError) as info:
        proxy.listen("127.0.0.1:8080")
    assert_located(info.value, here() - 1)
    assert "already a listener" in info.value.reason


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("nonsense", "expected 'host:port'"),
        ("127.0.0.1:http", "is not a number"),
        (70000, "out of range"),
        ("::1:80", "write IPv6 addresses as '[addr]:port'"),
        ("[zz]:80", "is not an IPv6 address"),
        (None, "expected a port or 'host:port'"),
    ],
)
def test_bad_listen_addresses(address: object, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        Proxy().listen(address)  # type: ignore[arg-type]
    assert_located(info.value, here() - 1)
    assert reason in info.value.reason


def test_bad_listener_options() -> None:
    with pytest.raises(ConfigError) as info:
        Proxy().listen(8080, max_connections=0)
    assert_located(info.value, here() - 1)
    assert "max_connections must be at least 1" in info.value.reason
    with pytest.raises(ConfigError, match="idle_timeout must be positive"):
        Proxy().listen(8080, idle_timeout=-1)


def test_listen_accepts_ports_hosts_and_ipv6() -> None:
    proxy = Proxy()
    proxy.listen(8080)
    proxy.listen("127.0.0.1:8081")
    proxy.listen("[::1]:8082")
    proxy.listen("localhost:8083")
    addresses = [spec.address for spec in proxy.build().listeners]
    assert addresses == ["0.0.0.0:8080", "127.0.0.1:8081", "[::1]:8082", "localhost:8083"]


def test_layouts_are_immutable_and_built_once() -> None:
    proxy = Proxy()
    builder = proxy.pipeline("p").handle_data(print)
    layout = proxy.layout("p")
    assert isinstance(layout, Layout)
    assert [s.name for s in layout.specs] == ["handle_data"]
    assert proxy.layout("p") is layout
    with pytest.raises(AttributeError):
        layout.name = "q"  # type: ignore[misc]
    with pytest.raises(ConfigError) as info:
        builder.handle_data(print)
    assert "already built" in info.value.reason


async def test_to_with_a_function_composes_inline() -> None:
    proxy = Proxy()
    seen: list[bytes] = []

    def forward(p):  # type: ignore[no-untyped-def]
        p.handle_data(lambda ctx, d: seen.append(d))

    proxy.pipeline("p").handle_stream_start(lambda ctx: None).to(forward)
    layout = proxy.layout("p")
    assert [s.name for s in layout.specs] == ["handle_stream_start", "handle_data"]
    out = await run_layout(layout, [b"a", StreamEnd()])
    assert out == [Data(b"a"), StreamEnd()] and seen == [b"a"]


async def test_to_with_a_name_links_and_recursion_is_lazy() -> None:
    proxy = Proxy()
    proxy.pipeline("main").handle_data(lambda ctx, d: None).to("tail")
    proxy.pipeline("tail").handle_message_start(lambda ctx, head: ctx.set(head=head))
    proxy.pipeline("self").to("self")  # legal: built lazily, never instantiated here
    layout = proxy.layout("main")
    assert [s.name for s in layout.specs] == ["handle_data", "link"]
    events = [MessageStart("h"), Data(b"x"), MessageEnd(), StreamEnd()]
    assert await run_layout(layout, events) == events


def test_a_script_error_inside_a_sub_pipeline_function_is_located() -> None:
    proxy = Proxy()
    with pytest.raises(ConfigError) as info:
        proxy.listen(8080).to(lambda p: p.no_such_filter())
    assert_located(info.value, here() - 1)

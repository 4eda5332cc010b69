"""Event names, payloads, and a bus that no subscriber can block or break."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from datetime import UTC, datetime

import pytest
from waiting import wait_until

from plughost import events, textcap
from plughost.events import Event, EventBus, EventSubscription, StateChangePayload
from plughost.lifecycle import PluginStateMachine, Transition
from plughost.phases import Phase

# The original manager's names (docs/concepts.md, "Events"), name for name.
DESIGN_EVENTS = {
    "EVENT_STATE_CHANGE": "plugin/state_change",
    "EVENT_INSTALL_STARTED": "plugin/install_started",
    "EVENT_INSTALL_FINISHED": "plugin/install_finished",
    "EVENT_INSTALL_ERROR": "plugin/install_error",
    "EVENT_DEV_INSTALL_START": "plugin/dev_install_start",
    "EVENT_DEV_INSTALL_ERROR": "plugin/dev_install_error",
    "EVENT_DEV_INSTALL_COMPLETE": "plugin/dev_install_complete",
    "EVENT_RELOAD_START": "plugin/dev_reload_start",
    "EVENT_RELOAD_ERROR": "plugin/dev_reload_error",
    "EVENT_RELOAD_COMPLETE": "plugin/dev_reload_complete",
    "EVENT_UPDATE_STARTED": "plugin/update_started",
    "EVENT_UPDATE_ERROR": "plugin/update_error",
    "EVENT_UPDATE_COMPLETE": "plugin/update_complete",
    "EVENT_INIT_COMPLETE": "plugin/init_complete",
    "EVENT_CRASH": "plugin/crash",
    "EVENT_CRASH_RECOVERY_FAILED": "plugin/crash_recovery_failed",
    "EVENT_RECOVERED": "plugin/recovered",
    "EVENT_STATE_WRITE_ERROR": "plugin/state_write_error",
    "EVENT_DEPRECATED_PROTOCOL": "plugin/deprecated_protocol",
    "EVENT_PROCESS_LOG": "plugin/process/log",
    "EVENT_DEVSERVER_STATUS": "plugin/devserver/status",
    "EVENT_DEVSERVER_LOG": "plugin/devserver/log",
    "EVENT_DEVSERVER_ERROR": "plugin/devserver/error",
}


def drain(sub: EventSubscription, timeout: float = 5.0) -> bool:
    """Wait until a sync subscriber has been handed everything queued for it."""
    method = getattr(sub, "drain", None)
    assert method is not None, "sync subscriptions can be drained"
    return bool(method(timeout))


# plughost's own events, beyond the original's names.
EXTENSION_EVENTS = {
    "EVENT_ROLLED_BACK": "plugin/rolled_back",
    "EVENT_FAILED_RETRY": "plugin/failed_retry",
    "EVENT_UPDATE_HELD": "plugin/update_held",
}


def test_every_event_name_is_exact() -> None:
    expected = {**DESIGN_EVENTS, **EXTENSION_EVENTS}
    for constant, value in expected.items():
        assert getattr(events, constant) == value
        assert constant in events.__all__
    assert set(expected.values()) == events.ALL_EVENTS
    declared = {name for name in dir(events) if name.startswith("EVENT_")}
    assert declared == set(expected)


def test_state_change_payload_serialises_with_the_original_keys() -> None:
    when = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    payload = StateChangePayload(
        plugin_id="alpha",
        from_phase="Installed",
        to_phase="Validating",
        reason="load",
        timestamp=when,
    )
    data = payload.to_dict()
    assert data == {
        "pluginID": "alpha",
        "from": "Installed",
        "to": "Validating",
        "reason": "load",
        "timestamp": "2024-03-01T12:00:00Z",
    }
    assert json.loads(json.dumps(data)) == data
    # Readable back from the wire form.
    assert StateChangePayload.model_validate(data) == payload


def test_state_change_payload_defaults() -> None:
    payload = StateChangePayload.model_validate(
        {"pluginID": "a", "from": "Running", "to": "Failed"}
    )
    assert payload.reason == ""
    assert payload.timestamp.tzinfo is not None
    assert set(payload.to_dict()) == {"pluginID", "from", "to", "reason", "timestamp"}


def test_event_carries_a_plain_payload(bus: EventBus) -> None:
    payload = StateChangePayload(plugin_id="alpha", from_phase="Running", to_phase="Failed")
    first = bus.publish(events.EVENT_STATE_CHANGE, payload)
    second = bus.publish(events.EVENT_CRASH, {"pluginID": 5})
    third = bus.publish(events.EVENT_INIT_COMPLETE)
    assert first.payload == payload.to_dict()
    assert first.plugin_id == "alpha"
    assert second.plugin_id is None  # not a string: not a plugin id
    assert third.payload == {}
    assert first.seq < second.seq < third.seq
    assert bus.published == 3
    data = first.to_dict()
    assert set(data) == {"name", "seq", "timestamp", "payload"}
    json.dumps(data)


def test_event_fields_are_capped_where_the_event_is_made(bus: EventBus) -> None:
    """A plugin's huge field costs the subscribers (terminal, dashboard) nothing."""
    got: list[Event] = []
    sub = bus.subscribe("plugin/*", got.append)
    huge = "/tmp/" + "a" * 3_000_000
    payload = {
        "pluginID": "alpha",
        "path": huge,
        "error": {"detail": f"cannot open {huge}", "suggestions": ["x" * 10_000]},
        "lines": ["l" * 10] * 1000,
        "attempt": 2,
    }
    event = bus.publish(events.EVENT_INSTALL_ERROR, payload)
    assert drain(sub) and got == [event]
    assert event.payload["pluginID"] == "alpha" and event.payload["attempt"] == 2
    assert event.payload["path"].endswith(f"…[cut {3_000_005 - 4064:,} bytes]")
    assert event.payload["path"].startswith("/tmp/aaa")
    assert len(event.payload["error"]["detail"]) <= textcap.LIMIT
    assert len(event.payload["error"]["suggestions"][0]) <= textcap.LIMIT
    assert len(event.payload["lines"]) == textcap.ITEMS + 1
    assert len(json.dumps(event.to_dict())) < 5 * textcap.LIMIT
    assert payload["path"] == huge  # the publisher's own data is left alone
    made = Event("n" * 10_000, {"line": "z" * 10_000}, 1, datetime.now(UTC))
    assert len(made.name) <= textcap.LIMIT and len(made.payload["line"]) <= textcap.LIMIT


def test_sync_callback_receives_matching_events_only(bus: EventBus) -> None:
    got: list[Event] = []
    sub = bus.subscribe(events.EVENT_STATE_CHANGE, got.append)
    bus.publish(events.EVENT_CRASH, {"pluginID": "a"})
    bus.publish(events.EVENT_STATE_CHANGE, {"pluginID": "a"})
    bus.publish("plugin/state_change_extra")
    bus.publish(events.EVENT_STATE_CHANGE, {"pluginID": "b"})
    wait_until(lambda: len(got) == 2, timeout=5.0, interval=0.002, message="both events")
    assert [e.payload["pluginID"] for e in got] == ["a", "b"]
    assert drain(sub, 5)
    assert len(got) == 2
    assert sub.dropped == 0


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*", ["plugin/crash", "plugin/process/log", "plugin/devserver/status", "host/ready"]),
        ("plugin/*", ["plugin/crash", "plugin/process/log", "plugin/devserver/status"]),
        ("plugin/devserver/*", ["plugin/devserver/status"]),
        ("plugin/crash", ["plugin/crash"]),
        ("*/ready", ["host/ready"]),
    ],
)
def test_wildcard_patterns(bus: EventBus, pattern: str, expected: list[str]) -> None:
    got: list[str] = []
    sub = bus.subscribe(pattern, lambda e: got.append(e.name))
    for name in ("plugin/crash", "plugin/process/log", "plugin/devserver/status", "host/ready"):
        bus.publish(name)
    assert drain(sub, 5)
    assert got == expected


def test_failing_subscriber_breaks_nobody(bus: EventBus, caplog: pytest.LogCaptureFixture) -> None:
    good: list[int] = []
    calls: list[int] = []

    def broken(event: Event) -> None:
        calls.append(event.seq)
        raise RuntimeError("subscriber bug")

    bad_sub = bus.subscribe("plugin/*", broken)
    good_sub = bus.subscribe("plugin/*", lambda e: good.append(e.seq))
    with caplog.at_level(logging.ERROR, logger="plughost.events"):
        published = [bus.publish(events.EVENT_CRASH, {"n": i}).seq for i in range(20)]
        assert drain(good_sub, 5)
        assert drain(bad_sub, 5)
    assert good == published
    assert calls == published  # the broken callback keeps being called after raising
    assert "subscriber bug" in caplog.text


def test_slow_subscriber_does_not_block_publish_and_drops_are_counted(bus: EventBus) -> None:
    gate = threading.Event()
    slow_seen: list[int] = []
    fast_seen: list[int] = []

    def slow(event: Event) -> None:
        gate.wait(30)
        slow_seen.append(event.seq)

    slow_sub = bus.subscribe("plugin/*", slow, maxsize=100)
    fast_sub = bus.subscribe("plugin/*", lambda e: fast_seen.append(e.seq), maxsize=20_000)
    try:
        started = time.monotonic()
        for i in range(10_000):
            bus.publish(events.EVENT_PROCESS_LOG, {"line": i})
        elapsed = time.monotonic() - started
        assert elapsed < 3.0, f"publish blocked for {elapsed:.2f}s"
        # The slow callback holds at most one event plus a full queue; the rest dropped.
        assert 10_000 - 101 <= slow_sub.dropped <= 10_000 - 100
        assert bus.dropped == slow_sub.dropped
        assert fast_sub.dropped == 0
    finally:
        gate.set()
    assert drain(slow_sub, 10)
    assert drain(fast_sub, 10)
    assert len(slow_seen) + slow_sub.dropped == 10_000
    assert slow_seen == sorted(slow_seen)
    assert len(fast_seen) == 10_000


def test_closed_subscription_receives_nothing(bus: EventBus) -> None:
    got: list[Event] = []
    sub = bus.subscribe("*", got.append)
    assert bus.subscriber_count() == 1
    bus.publish("a")
    wait_until(lambda: len(got) == 1, timeout=5.0, interval=0.002, message="the event")
    witness = bus.subscribe("*", lambda e: None)
    sub.close()
    sub.close()
    assert sub.closed
    assert bus.subscriber_count() == 1
    bus.publish("b")
    assert drain(witness)
    assert drain(sub)
    assert [e.name for e in got] == ["a"]
    assert sub.dropped == 0  # not offered at all, not dropped


def test_state_machine_observer_feeds_the_bus(bus: EventBus) -> None:
    """Every transition can become a plugin/state_change event with the right payload."""
    got: list[Event] = []
    sub = bus.subscribe(events.EVENT_STATE_CHANGE, got.append)
    machine = PluginStateMachine("alpha")

    def publish(transition: Transition) -> None:
        bus.publish(events.EVENT_STATE_CHANGE, transition.to_dict())

    machine.add_observer(publish)
    machine.transition_to(Phase.INSTALLING, "install")
    machine.force_phase(Phase.FAILED, "gone")
    assert drain(sub, 5)
    assert [StateChangePayload.model_validate(e.payload).to_phase for e in got] == [
        "Installing",
        "Failed",
    ]
    assert got[1].payload["reason"] == "force: gone"


# --------------------------------------------------------------------------
# Async iterators.


async def test_async_stream_receives_in_order(bus: EventBus) -> None:
    async with bus.stream("plugin/*") as stream:
        bus.publish(events.EVENT_INSTALL_STARTED, {"pluginID": "a"})
        bus.publish("other/thing")
        bus.publish(events.EVENT_INSTALL_FINISHED, {"pluginID": "a"})
        first = await stream.next(2)
        second = await stream.next(2)
        assert [first.name, second.name] == [
            events.EVENT_INSTALL_STARTED,
            events.EVENT_INSTALL_FINISHED,
        ]
        with pytest.raises(TimeoutError):
            await stream.next(0.05)
    assert bus.subscriber_count() == 0


async def test_async_stream_fed_from_other_threads(bus: EventBus) -> None:
    stream = bus.stream("*")

    def publisher() -> None:
        for i in range(50):
            bus.publish("x/tick", {"i": i})

    threads = [threading.Thread(target=publisher) for _ in range(4)]
    for t in threads:
        t.start()
    received = [await stream.next(5) for _ in range(200)]
    for t in threads:
        t.join()
    assert sorted(e.seq for e in received) == list(range(1, 201))
    stream.close()


async def test_async_iteration_ends_when_closed(bus: EventBus) -> None:
    stream = bus.stream("*")
    bus.publish("a")
    bus.publish("b")

    async def collect() -> list[str]:
        return [event.name async for event in stream]

    task = asyncio.create_task(collect())
    await asyncio.sleep(0)
    stream.close()
    assert await asyncio.wait_for(task, 2) == ["a", "b"]


async def test_async_overflow_is_counted(bus: EventBus) -> None:
    stream = bus.stream("*", maxsize=10)
    sync_sub_seen: list[int] = []
    other = bus.subscribe("*", lambda e: sync_sub_seen.append(e.seq), maxsize=1000)
    for i in range(100):
        bus.publish("x/burst", {"i": i})
    assert stream.dropped == 90
    assert bus.dropped == 90
    assert other.dropped == 0
    received = [await stream.next(1) for _ in range(10)]
    assert [e.payload["i"] for e in received] == list(range(10))
    stream.close()


async def test_async_overflow_from_a_thread_is_counted(bus: EventBus) -> None:
    stream = bus.stream("*", maxsize=5)
    await asyncio.to_thread(lambda: [bus.publish("x/burst") for _ in range(25)])
    # Deliveries from other threads are queued on the loop ahead of to_thread's
    # own completion, so they have all run by now.
    assert stream.dropped == 20
    assert bus.dropped == 20
    received = [await stream.next(1) for _ in range(5)]
    assert [e.seq for e in received] == [1, 2, 3, 4, 5]
    with pytest.raises(TimeoutError):
        await stream.next(0.05)
    stream.close()

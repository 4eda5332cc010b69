"""RetryState: 1 s, doubling, capped at 60 s, 5 attempts."""

from __future__ import annotations

from plughost.lifecycle import RetryState


def test_defaults_double_from_one_second_for_five_attempts() -> None:
    retry = RetryState()
    assert (retry.initial_delay, retry.max_delay, retry.max_attempts) == (1.0, 60.0, 5)
    delays = []
    while not retry.exhausted:
        delays.append(retry.next_delay())
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert retry.attempts == 5
    assert retry.exhausted


def test_delay_is_capped_at_sixty_seconds() -> None:
    retry = RetryState(max_attempts=10)
    delays = [retry.next_delay() for _ in range(10)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0, 60.0]
    assert max(delays) == 60.0
    assert retry.exhausted


def test_reset_starts_the_schedule_again() -> None:
    retry = RetryState()
    for _ in range(4):
        retry.next_delay()
    assert not retry.exhausted
    retry.next_delay()
    assert retry.exhausted
    retry.reset()
    assert retry.attempts == 0
    assert not retry.exhausted
    assert retry.next_delay() == 1.0


def test_custom_schedule() -> None:
    retry = RetryState(initial_delay=0.25, max_delay=1.0, max_attempts=4)
    assert [retry.next_delay() for _ in range(4)] == [0.25, 0.5, 1.0, 1.0]
    assert retry.exhausted

"""TaskSet: every task kept, a failure logged and recorded, aclose cancels and awaits."""

from __future__ import annotations

import asyncio
import logging

import pytest

from spokeshare import tasks
from spokeshare.tasks import TaskSet

log = logging.getLogger("tests.tasks")


def test_aclose_cancels_and_waits_for_every_task() -> None:
    ended: list[str] = []

    async def slow_to_stop(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # cleanup that needs the loop, as a transport close
            ended.append(name)

    async def main() -> TaskSet:
        ts = TaskSet(log, "test task")
        for name in ("a", "b", "c"):
            ts.spawn(slow_to_stop(name))
        await asyncio.sleep(0)
        assert len(ts) == 3
        await ts.aclose()
        assert sorted(ended) == ["a", "b", "c"] and len(ts) == 0
        return ts

    ts = asyncio.run(main())
    assert ts.failures == 0 and not ts.crashed


def test_aclose_waits_for_tasks_started_while_closing() -> None:
    async def main() -> None:
        ts = TaskSet(log, "test task")
        started_late = asyncio.Event()

        async def late() -> None:
            started_late.set()
            await asyncio.Event().wait()

        async def spawns_on_cancel() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                ts.spawn(late())

        ts.spawn(spawns_on_cancel())
        await asyncio.sleep(0)
        await ts.aclose()
        assert len(ts) == 0

    asyncio.run(main())


@pytest.mark.expect_errors
def test_a_crashed_task_is_logged_counted_and_kept(caplog: pytest.LogCaptureFixture) -> None:
    async def boom() -> None:
        raise RuntimeError("boom")

    async def main() -> TaskSet:
        ts = TaskSet(log, "test task")
        ts.spawn(boom())
        ts.spawn(asyncio.sleep(3600))
        await asyncio.sleep(0.01)
        await ts.aclose()
        return ts

    with caplog.at_level(logging.ERROR, logger="tests.tasks"):
        ts = asyncio.run(main())
    assert ts.failures == 1
    assert [str(e) for e in ts.crashed] == ["boom"]
    assert [r.getMessage() for r in caplog.records] == [
        'task failed tasks="test task" error=boom']  # fmt: skip
    assert caplog.records[0].exc_info is not None  # with its traceback
    assert ts in tasks.live_sets()


def test_aclose_leaves_the_calling_task_and_keeps_its_cancellation() -> None:
    async def main() -> None:
        ts = TaskSet(log, "test task")
        stuck = asyncio.Event()

        async def closes_its_own_set() -> None:
            await ts.aclose()  # must not wait for itself
            stuck.set()

        ts.spawn(asyncio.sleep(3600))
        await ts.spawn(closes_its_own_set())
        assert stuck.is_set()

        # A caller cancelled while it waits in aclose sees its CancelledError.
        ts2 = TaskSet(log, "test task")

        async def ignores_cancel_for_a_while() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await asyncio.sleep(0.2)
                raise

        ts2.spawn(ignores_cancel_for_a_while())
        await asyncio.sleep(0)
        closer = asyncio.create_task(ts2.aclose())
        await asyncio.sleep(0.01)
        closer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closer
        await ts2.aclose()

    asyncio.run(main())

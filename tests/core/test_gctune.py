"""labops.gctune: the sweep's collector threshold is raised inside and restored after."""

from __future__ import annotations

import gc
import threading

from labops.gctune import fewer_collections


def test_threshold_raised_inside_and_restored_after_nesting_and_threads() -> None:
    before = gc.get_threshold()
    inside: list[int] = []
    started, release = threading.Event(), threading.Event()

    def other_sweep() -> None:
        with fewer_collections(5000):
            started.set()
            release.wait(30)

    t = threading.Thread(target=other_sweep)
    try:
        gc.set_threshold(700, before[1], before[2])
        t.start()
        assert started.wait(30)
        with fewer_collections(5000):
            inside.append(gc.get_threshold()[0])
            with fewer_collections(5000):
                inside.append(gc.get_threshold()[0])
        # the other thread's sweep still runs: its threshold stays
        assert gc.get_threshold()[0] == 5000
        release.set()
        t.join(30)
        assert inside == [5000, 5000]
        assert gc.get_threshold() == (700, before[1], before[2])
    finally:
        release.set()
        gc.set_threshold(*before)


def test_collection_switched_off_stays_off() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(0)
        with fewer_collections():
            assert gc.get_threshold()[0] == 0
        assert gc.get_threshold()[0] == 0
    finally:
        gc.set_threshold(*before)

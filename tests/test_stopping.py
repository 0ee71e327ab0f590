"""The shared stop-on-signal helper both training loops and the evaluation use (introvae.stopping)."""
import os
import signal
import threading

import pytest

from introvae.stopping import StopRequest, sigterm_as_interrupt


def test_first_signal_requests_a_stop_second_aborts_and_handlers_come_back():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    said = []
    stop = StopRequest(say=said.append)
    with stop.on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and said == ["SIGTERM"]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_stop_set_by_code_makes_the_next_signal_abort():
    stop = StopRequest()
    with stop.on_signals():
        stop.requested = True  # compare's time budget
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)


def test_off_the_main_thread_signals_are_left_alone():
    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def work():
        with StopRequest().on_signals() as stop, sigterm_as_interrupt():
            seen.append((stop.requested, signal.getsignal(signal.SIGTERM)))

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == [(False, before)]


def test_sigterm_interrupts_as_ctrl_c_does():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == before

"""Ray's messages on the driver go to the run folder's ray.log, not the results table.

Ray prints them from its own background threads (named ``ray_...``) straight to
``sys.stdout``, with colour codes; these tests print the same way from threads named like
Ray's. tests/scenarios/faults/test_node_loss.py checks a real lost node's messages stay off
the output.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

import pytest

from clonesweep.orchestrator.backends.ray.output import RAY_LOG, ray_messages_to

RAYLET = "\x1b[36m(raylet)\x1b[0m Raylet is terminated. Last 20 lines of the Raylet logs:"


def _print_from(thread_name: str, text: str) -> None:
    thread = threading.Thread(target=lambda: print(text, file=sys.stdout), name=thread_name)
    thread.start()
    thread.join()


def test_ray_threads_go_to_the_log_and_the_rest_stays(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / RAY_LOG
    with ray_messages_to(log):
        _print_from("ray_listen_error_messages", RAYLET)
        print("  0  complete  0.9000")  # the table, from the main thread
        _print_from("worker", "a user thread's line")
        logging.getLogger("ray._private.worker").warning("a ray warning")
    out = capsys.readouterr().out
    assert out == "  0  complete  0.9000\na user thread's line\n"
    text = log.read_text()
    assert "(raylet) Raylet is terminated." in text and "\x1b[" not in text
    assert "a ray warning" in text
    assert sys.stdout is not None and "ray" not in type(sys.stdout).__module__


def test_messages_before_the_run_folder_exists_wait_for_it(tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "sweep"
    with ray_messages_to(folder / RAY_LOG):
        _print_from("ray_print_logs", "early")
        assert not folder.exists()  # nothing is created for Ray's sake
        folder.mkdir(parents=True)
        _print_from("ray_print_logs", "late")
    assert (folder / RAY_LOG).read_text() == "early\nlate\n"


def test_no_message_no_file_and_none_lost_without_a_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with ray_messages_to(tmp_path / "quiet" / RAY_LOG):
        pass
    assert not (tmp_path / "quiet").exists()
    with ray_messages_to(tmp_path / "never" / RAY_LOG):
        _print_from("ray_listen_error_messages", "said before the sweep failed")
    assert "said before the sweep failed" in capsys.readouterr().err

"""``alflow run`` trains holding the campaign's committee lock, like the deployments: while
another holder (a retrain, say) has it, the run samples and labels but waits before it
trains; and its output stays plain text when it is not a terminal."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.orm import Session

from flows.campaign import open_campaign
from flows.cli import main
from flows.lock import committee_lock
from flows.status import campaign_status

from .conftest import write_campaign

WAIT_S = 300.0  # a failure bound only: each step normally takes seconds


class Messages(logging.Handler):
    """(time, message) of every record, and an event per phrase seen."""

    def __init__(self, *phrases: str) -> None:
        super().__init__(level=logging.INFO)
        self.records: list[tuple[float, str]] = []
        self.seen = {phrase: threading.Event() for phrase in phrases}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.records.append((time.monotonic(), message))
        for phrase, event in self.seen.items():
            if phrase in message:
                event.set()

    def first(self, phrase: str) -> float:
        return min(t for t, m in self.records if phrase in m)


def test_alflow_run_waits_for_the_committee_lock(prefect_harness, tmp_path, capsys) -> None:
    config = write_campaign(tmp_path, "locked-water", initial_samples=2)
    messages = Messages("waiting for the committee lock", "holding the committee lock")
    run_logger = logging.getLogger("prefect.flow_runs")
    run_logger.addHandler(messages)
    result: dict[str, int] = {}
    runner = threading.Thread(target=lambda: result.update(rc=main(["run", str(config), "--generations", "0"])))
    try:
        with committee_lock("locked-water"):  # another holder, e.g. a retrain deployment
            runner.start()
            assert messages.seen["waiting for the committee lock"].wait(WAIT_S), messages.records
            releasing = time.monotonic()
        runner.join(WAIT_S)
    finally:
        run_logger.removeHandler(messages)
    assert not runner.is_alive() and result["rc"] == 0
    assert messages.first("holding the committee lock") > releasing  # it trained only once freed
    ctx = open_campaign(config, create=False)
    with Session(ctx.engine) as session:
        status = campaign_status(session, ctx.campaign_id)
    assert len(status["generations"]) == 1 and status["labels"] == 4 and status["latest_committee"]
    out = capsys.readouterr().out
    assert "\x1b[" not in out and "latest committee" in out  # not a terminal: plain text

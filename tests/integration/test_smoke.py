from __future__ import annotations

from complaintflow import Engine
from tests.support import CS, complaint_fields


def test_submit_and_record(engine: Engine) -> None:
    c = engine.submit(complaint_fields(), CS)
    c = engine.fire(c.number, "record", CS, {"readback_confirmed": True})
    assert c.state == "recorded"
    assert engine.verify().ok

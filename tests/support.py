"""Actors and data for tests against the default rule file."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from complaintflow import Actor

# -- actors of the default rule file --------------------------------------------------------

CS = Actor("li.na", ["customer_service"])
SALES = Actor("chen.rep", ["sales_rep"])
QA = Actor("wang.qa", ["quality"])
TECH = Actor("sun.tech", ["technical"])
AFTER = Actor("zhou.svc", ["after_sales"])
GM = Actor("gm.liu", ["general_manager"])
TOP = Actor("boss.ma", ["top_management"])
ARCH = Actor("he.arch", ["archivist"])
AUDITOR = Actor("audit.xu", ["auditor"])
QM = Actor("qm.wu", ["quality_manager"])
DM = Actor("zhao.dm", ["department_manager"], department="quality")

# -- what each step of the default procedure is given (a general complaint) ----------------

ASSIGN = {"responsible_department": "quality", "handler": "wang.qa"}
REPORT = {
    "root_cause": "process",
    "responsibility": "company",
    "investigation_report": "绕组浸漆不良导致温升偏高",
}
PLAN = {"disposal_plan": "更换电机", "disposal_measures": ["replace"]}
RESULT = {"disposal_result": "已更换新电机"}
FEEDBACK = {"customer_feedback": "已电话告知客户处理结果"}
SATISFIED = {"satisfaction_score": 95, "satisfaction": "satisfied", "revisit_note": "客户满意"}
DISSATISFIED = {
    "satisfaction_score": 60,
    "satisfaction": "dissatisfied",
    "revisit_note": "客户认为处理太慢",
}


def complaint_fields(**overrides: Any) -> dict[str, Any]:
    """A valid submission for the default rule file (general severity)."""
    fields: dict[str, Any] = {
        "customer_name": "华东机电有限公司",
        "contact_person": "张伟",
        "phone": "13812345678",
        "email": "zhang.wei@example.cn",
        "address": "上海市浦东新区张江路100号",
        "channel": "phone",
        "product_name": "YE3-132M 三相异步电机",
        "batch_no": "B2026-0211",
        "category": "product_quality",
        "description": "电机运行时异响, 温升偏高",
        "claimed_amount": "2000",
    }
    fields.update(overrides)
    return {k: v for k, v in fields.items() if v is not None}


# -- histories earlier releases wrote ----------------------------------------------------------


@contextlib.contextmanager
def as_recorded(module: Any, name: str) -> Iterator[None]:
    """Within the block, ``module.name`` (a check taking ``recorded=``) always judges as for
    a recorded value, as the releases before that check did: for writing the history those
    releases could write, then verifying it."""
    check = getattr(module, name)
    setattr(module, name, lambda value, recorded=False: check(value, recorded=True))
    try:
        yield
    finally:
        setattr(module, name, check)

"""Actors and data for tests against the default rule file."""

from __future__ import annotations

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

"""complaintflow: customer complaints as explicit state machines, guarded by YAML rules.

Embed it::

    from complaintflow import Actor, Engine

    engine = Engine.open("sqlite:///complaints.db")
    clerk = Actor("li.na", ["customer_service"])
    c = engine.submit({...}, clerk)
    c = engine.fire(c.number, "record", clerk, {"readback_confirmed": True})
"""

from complaintflow.actor import Actor
from complaintflow.clock import Clock, SimulatedClock, system_clock
from complaintflow.engine import EVENT_SCHEMA_VERSION, CommittedEvent, Engine
from complaintflow.errors import (
    ApprovalMissing,
    CalendarError,
    ComplaintflowError,
    ConcurrentUpdate,
    ConditionFailed,
    FieldProblem,
    IdempotencyConflict,
    IntegrityError,
    InvalidInput,
    MissingFields,
    NotFound,
    RoleNotAllowed,
    RuleError,
    RuleProblem,
    SeparationOfDuties,
    StorageError,
    TimerRefused,
    TransitionRefused,
    TriggerNotAllowed,
    UnknownTrigger,
)
from complaintflow.outbox import Notification
from complaintflow.replay import Replayed
from complaintflow.rules.loader import load_rules, parse_rules
from complaintflow.rules.ruleset import RuleSet
from complaintflow.scheduler import Scheduler
from complaintflow.states.guards import GUARD_ORDER
from complaintflow.states.machine import TriggerOption
from complaintflow.timers import Consent
from complaintflow.verify import Finding, VerificationReport
from complaintflow.views import Complaint, HistoryEvent, Page, TimerView

__version__ = "0.1.0"

__all__ = [
    "EVENT_SCHEMA_VERSION",
    "GUARD_ORDER",
    "Actor",
    "ApprovalMissing",
    "CalendarError",
    "Clock",
    "CommittedEvent",
    "Complaint",
    "ComplaintflowError",
    "ConcurrentUpdate",
    "ConditionFailed",
    "Consent",
    "Engine",
    "FieldProblem",
    "Finding",
    "HistoryEvent",
    "IdempotencyConflict",
    "IntegrityError",
    "InvalidInput",
    "MissingFields",
    "NotFound",
    "Notification",
    "Page",
    "Replayed",
    "RoleNotAllowed",
    "RuleError",
    "RuleProblem",
    "RuleSet",
    "Scheduler",
    "SeparationOfDuties",
    "SimulatedClock",
    "StorageError",
    "TimerRefused",
    "TimerView",
    "TransitionRefused",
    "TriggerNotAllowed",
    "TriggerOption",
    "UnknownTrigger",
    "VerificationReport",
    "__version__",
    "load_rules",
    "parse_rules",
    "system_clock",
]

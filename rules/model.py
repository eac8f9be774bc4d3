"""The rule-file format: pydantic models, the single source of truth for its vocabulary.

The JSON Schema (``complaintflow rules schema``) is generated from these models; the
reference is docs/rules.md. Cross-references (states, roles, fields, triggers) and the type
of every condition are checked after this structural pass, in ``complaintflow.rules.check``.
"""

from __future__ import annotations

import math
import re
from datetime import date as date_
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationInfo,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "WEEKDAYS",
    "AllOf",
    "AnyOf",
    "ApprovalDef",
    "BreachActions",
    "CalendarDef",
    "CalendarOverride",
    "Compare",
    "Condition",
    "Duration",
    "DurationVariant",
    "FieldDef",
    "FieldType",
    "Label",
    "NotOf",
    "OperandRef",
    "PersonalDataDef",
    "ReviewDef",
    "RoleDef",
    "RuleFile",
    "SeparationRule",
    "SeverityDef",
    "SeverityRule",
    "StateDef",
    "SubmitDef",
    "TimerDef",
    "TimerStart",
    "TransitionDef",
    "WarningDef",
]

Identifier = Annotated[
    str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", min_length=1, max_length=64)
]
FieldType = Literal[
    "string", "text", "integer", "decimal", "date", "datetime", "enum", "enum_list", "bool"
]
Scalar = str | bool | int | float | None


class Strict(BaseModel):
    # strict: a value must have its YAML type ('yes' is no boolean, 1.0 and '3' no integer,
    # 0 no text); the few values that are read from another type say so below
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)


def _stored(info: ValidationInfo) -> bool:
    """Reading a rule set stored by an earlier release, whose loader converted types as
    pydantic's lax mode does (``loader.parse_rules(..., stored=True)``)."""
    return bool(info.context and info.context.get("stored"))


def _number(value: Any, info: ValidationInfo) -> Any:
    """A YAML number as a ``Decimal`` (through its shortest text, so ``0.1`` stays 0.1)."""
    if _stored(info) and not isinstance(value, int | float | Decimal):
        return value  # as the lax loader read it: '5' is 5
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise PydanticCustomError("decimal_type", "Input should be a number")
    if isinstance(value, float) and not math.isfinite(value):  # 1e999 is read as infinity
        raise PydanticCustomError("finite_number", "Input should be a finite number")
    return value if isinstance(value, Decimal) else Decimal(str(value))


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_date(value: Any, info: ValidationInfo) -> Any:
    """YAML has no dates here (the reader keeps ``2026-10-01`` a string): parse the text."""
    if isinstance(value, date_) or (_stored(info) and not isinstance(value, str)):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            return date_.fromisoformat(value)
        except ValueError:
            message = "Input should be a valid date: there is no such day"
            raise PydanticCustomError("date_from_text", message) from None
    raise PydanticCustomError("date_type", "Input should be a date")


def _format_version(value: Any, info: ValidationInfo) -> Any:
    # Literal[1] would also take true and 1.0, which are equal to 1
    if type(value) is not int and not _stored(info):
        raise PydanticCustomError("literal_error", "Input should be 1", {"expected": "1"})
    return value


#: a number written in the file (an integer or a decimal fraction), never quoted text
Number = Annotated[Decimal, BeforeValidator(_number), WithJsonSchema({"type": "number"})]
#: a date written as ``YYYY-MM-DD``
IsoDate = Annotated[date_, BeforeValidator(_iso_date)]


class Label(Strict):
    """A name shown to people, in Chinese and English."""

    zh: str = Field(min_length=1)
    en: str = Field(min_length=1)


class StateDef(Strict):
    id: Identifier
    label: Label
    final: bool = False
    description: str | None = None


class RoleDef(Strict):
    id: Identifier
    label: Label
    description: str | None = None


class FieldDef(Strict):
    """A typed field of the complaint record."""

    id: Identifier
    type: FieldType
    label: Label
    required: bool = Field(False, description="must be given when the complaint is submitted")
    values: list[Identifier] | None = Field(
        None, description="the allowed values of an enum or enum_list field"
    )
    personal: bool = Field(
        False, description="personal data: shown only to roles listed in personal_data.readers"
    )
    min: Number | None = Field(None, description="smallest allowed integer or decimal value")
    max: Number | None = Field(None, description="largest allowed integer or decimal value")
    max_length: int | None = Field(None, ge=1, description="longest allowed string or text")
    description: str | None = None


ActorAttribute = Literal["id", "department", "roles"]
TimeUnit = Literal[
    "minutes", "hours", "days", "working_minutes", "working_hours", "working_days"
]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
IntervalText = Annotated[
    str,
    StringConstraints(
        pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]-(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"
    ),
]


class OperandRef(Strict):
    """The right-hand side of a comparison when it is not a literal: exactly one key."""

    field: Identifier | None = None
    actor: ActorAttribute | None = None
    last_actor_of: Identifier | None = Field(
        None, description="the id of whoever last fired this trigger on the complaint"
    )
    count_of: Identifier | None = Field(
        None, description="how many times this trigger has been fired on the complaint"
    )


Operand = Annotated[OperandRef, Tag("ref")] | Annotated[Scalar | list[Scalar], Tag("literal")]


def _operand_kind(value: Any) -> str:
    return "ref" if isinstance(value, dict | OperandRef) else "literal"


OperandValue = Annotated[Operand, Discriminator(_operand_kind)]


class Compare(Strict):
    """One comparison: a subject (one of field/actor/last_actor_of/count_of) and one operator.

    Example: ``{field: claimed_amount, ge: 10000}`` or
    ``{actor: id, ne: {last_actor_of: propose_plan}}``.
    """

    field: Identifier | None = None
    actor: ActorAttribute | None = None
    last_actor_of: Identifier | None = None
    count_of: Identifier | None = None
    elapsed_since: Identifier | None = Field(
        None, description="time since the latest firing of this trigger (null if never), "
        "counted in `unit` on `calendar`; for not-before windows"
    )
    unit: TimeUnit = Field("days", description="unit of elapsed_since")
    calendar: Identifier | None = Field(None, description="calendar of elapsed_since "
                                        "(default: the rule file's calendar)")
    eq: OperandValue | None = None
    ne: OperandValue | None = None
    lt: OperandValue | None = None
    le: OperandValue | None = None
    gt: OperandValue | None = None
    ge: OperandValue | None = None
    in_: list[Scalar] | None = Field(None, alias="in")
    not_in: list[Scalar] | None = None
    contains: OperandValue | None = None
    is_set: bool | None = Field(None, description="true: the subject has a value")


class AllOf(Strict):
    all: list[Condition] = Field(min_length=1)


class AnyOf(Strict):
    any: list[Condition] = Field(min_length=1)


class NotOf(Strict):
    not_: Condition = Field(alias="not")


def _condition_kind(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("all", "any", "not"):
            if key in value:
                return key
        return "compare"
    kinds: dict[type[BaseModel], str] = {AllOf: "all", AnyOf: "any", NotOf: "not"}
    return kinds.get(type(value), "compare")


Condition = Annotated[
    Annotated[AllOf, Tag("all")]
    | Annotated[AnyOf, Tag("any")]
    | Annotated[NotOf, Tag("not")]
    | Annotated[Compare, Tag("compare")],
    Discriminator(_condition_kind),
]


class SeverityRule(Strict):
    level: Identifier
    when: Condition
    reason: str | None = None


class SeverityDef(Strict):
    """Severity is computed from the fields: the highest level whose rule matches."""

    levels: list[Identifier] = Field(min_length=1, description="lowest first")
    default: Identifier
    rules: list[SeverityRule] = []


class ApprovalDef(Strict):
    """The transition needs an earlier firing of the approving trigger ``by``."""

    by: Identifier = Field(description="trigger whose firing counts as the approval")
    since: Identifier | None = Field(
        None,
        description="the approval must come after the latest firing of this trigger "
        "(default: after the complaint entered its current state)",
    )
    when: Condition | None = Field(None, description="approval needed only when this holds")


class TransitionDef(Strict):
    trigger: Identifier
    source: list[Identifier] = Field(alias="from", min_length=1)
    to: Identifier
    roles: list[Identifier] = Field(min_length=1)
    label: Label | None = None
    fields: list[Identifier] = Field(
        [], description="fields the actor may set with this transition"
    )
    requires: list[Identifier] = Field(
        [], description="fields that must have a value once the data is applied"
    )
    condition: Condition | None = None
    approval: ApprovalDef | None = None
    description: str | None = None


class SeparationRule(Strict):
    """Who may not fire ``triggers``: whoever fired ``not_actor_of``, or is named in
    ``not_field`` (recusal of the person complained about)."""

    id: Identifier
    triggers: list[Identifier] | Literal["*"]
    not_actor_of: list[Identifier] = []
    not_field: list[Identifier] = []
    reason: str = Field(min_length=1)


class SubmitDef(Strict):
    """Who may submit (receive) a complaint, and which fields a submission may carry."""

    roles: list[Identifier] | Literal["*"] = Field(
        "*", description="'*': anyone with any declared role (anyone may receive a complaint)"
    )
    fields: list[Identifier] | Literal["*"] = "*"


class PersonalDataDef(Strict):
    readers: list[Identifier] = Field(
        [], description="roles that may read fields marked personal; others see masked values"
    )


#: the largest amount of each unit a duration (or an extension) may have: 100 years
MAX_DURATION = {"minutes": 100 * 366 * 24 * 60, "hours": 100 * 366 * 24, "days": 100 * 366,
                "working_minutes": 100 * 366 * 24 * 60, "working_hours": 100 * 366 * 24,
                "working_days": 100 * 366}


class Duration(Strict):
    """An amount of time: exactly one key. Working units follow the timer's calendar.
    Each amount is at most 100 years' worth (``MAX_DURATION``)."""

    minutes: int | None = Field(None, ge=0, le=MAX_DURATION["minutes"])
    hours: int | None = Field(None, ge=0, le=MAX_DURATION["hours"])
    days: int | None = Field(None, ge=0, le=MAX_DURATION["days"])
    working_minutes: int | None = Field(None, ge=0, le=MAX_DURATION["working_minutes"])
    working_hours: int | None = Field(None, ge=0, le=MAX_DURATION["working_hours"])
    working_days: int | None = Field(None, ge=0, le=MAX_DURATION["working_days"])


class CalendarOverride(Strict):
    date: IsoDate
    kind: Literal["holiday", "workday", "hours"]
    hours: list[IntervalText] = Field([], description="with kind 'hours': e.g. ['08:30-12:00']")
    note: str = Field(min_length=1, description="where this comes from (e.g. 国办发明电 notice)")


class CalendarDef(Strict):
    """A working calendar: time zone, weekly hours, official holidays, overrides."""

    id: Identifier
    label: Label | None = None
    timezone: str = Field(description="IANA zone, e.g. Asia/Shanghai")
    country: str | None = Field(
        "CN", description="holiday data from the `holidays` package (China: with 调休 days)"
    )
    hours: dict[Weekday, list[IntervalText]] = Field(
        description="weekly working intervals per weekday, e.g. mon: ['08:30-12:00', ...]"
    )
    makeup_hours: list[IntervalText] = Field(
        [], description="hours of an official make-up working day (default: Monday's)"
    )
    overrides: list[CalendarOverride] = []
    official_through: int | None = Field(
        None, description="last year whose official schedule is known"
    )
    beyond: Literal["error", "provisional"] = Field(
        "error", description="deadlines after official_through: refuse, or compute on "
        "weekdays only and flag them provisional"
    )


class TimerStart(Strict):
    """When the clock starts: at receipt, on entering a state, or when a trigger fires."""

    on: Literal["receipt", "enter", "trigger"]
    states: list[Identifier] = []
    triggers: list[Identifier] = []


class DurationVariant(Strict):
    when: Condition
    duration: Duration


class WarningDef(Strict):
    """A warning before the breach: at a fraction of the budget, or a lead time before it."""

    fraction: float | None = Field(None, gt=0, description="e.g. 0.75 of the budget")
    before: Duration | None = Field(None, description="calendar time before the breach")
    notify: list[Identifier] = []


class BreachActions(Strict):
    notify: list[Identifier] = Field([], description="roles to notify (outbox)")
    raise_severity: Identifier | None = Field(None, description="severity level to raise to")
    reassign: Identifier | None = Field(None, description="role the complaint escalates to")
    fire: Identifier | None = Field(None, description="trigger fired by the system")


class TimerDef(Strict):
    """An SLA clock kept as a ledger: started, paused, extended; due instants derived."""

    id: Identifier
    label: Label
    calendar: Identifier | None = Field(None, description="default: the rule file's calendar")
    start: TimerStart
    stop: list[Identifier] = Field([], description="entering any of these states stops it")
    stop_triggers: list[Identifier] = Field(
        [], description="firing any of these triggers stops it (e.g. the first response)"
    )
    pause: list[Identifier] = Field([], description="the clock pauses while in these states")
    condition: Condition | None = Field(None, description="start only when this holds")
    duration: Duration
    variants: list[DurationVariant] = Field(
        [], description="the first variant whose condition holds replaces the duration"
    )
    count_start_day: bool = Field(
        False, description="working_days: the start day counts as day 1 ('the same day')"
    )
    align_to_opening: bool = Field(
        False, description="started outside working time: count from the next opening"
    )
    warnings: list[WarningDef] = []
    on_breach: BreachActions = BreachActions()
    extendable: bool = Field(True, description="may be extended with the customer's consent")
    extend_roles: list[Identifier] = Field(
        [], description="roles that may extend the clock (empty: any declared role)"
    )
    seed: str | None = Field(None, description="the procedure rule it encodes")


class ReviewDef(Strict):
    """A periodic review of unresolved complaints (e.g. on the 4th of each month)."""

    id: Identifier
    label: Label
    day_of_month: int = Field(ge=1, le=28)
    at: str = Field("09:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
                    description="local time on the calendar")
    calendar: Identifier | None = None
    states: list[Identifier] = Field(min_length=1, description="complaints in these states")
    notify: list[Identifier] = Field(min_length=1)
    seed: str | None = None


class RuleFile(Strict):
    """A complete rule file."""

    format: Annotated[Literal[1], BeforeValidator(_format_version)] = 1
    name: str = Field(min_length=1)
    description: str | None = None
    timezone: str = Field("Asia/Shanghai", description="IANA zone used to show times")
    number_pattern: str = Field(
        "TS-{year}-{seq:06d}",
        description="complaint numbers; placeholders {year} and {seq} (with optional :0Nd)",
    )
    department_field: Identifier | None = Field(
        None, description="the field holding the responsible department (indexed for search)"
    )
    handler_field: Identifier | None = Field(
        None, description="the field holding the handler's actor id (indexed for search)"
    )
    initial: Identifier
    states: list[StateDef] = Field(min_length=1)
    roles: list[RoleDef] = Field(min_length=1)
    fields: list[FieldDef] = []
    severity: SeverityDef
    calendar: Identifier | None = Field(
        None, description="the default calendar (timers, elapsed_since, received_* fields)"
    )
    calendars: list[CalendarDef] = []
    timers: list[TimerDef] = []
    reviews: list[ReviewDef] = []
    submit: SubmitDef = SubmitDef()
    transitions: list[TransitionDef] = Field(min_length=1)
    separation_of_duties: list[SeparationRule] = []
    personal_data: PersonalDataDef = PersonalDataDef()


for _model in (AllOf, AnyOf, NotOf, SeverityRule, ApprovalDef, TransitionDef, DurationVariant,
               TimerDef, RuleFile):
    _model.model_rebuild()

"""The rule-file format: pydantic models, the single source of truth for its vocabulary.

The JSON Schema (``complaintflow rules schema``) is generated from these models; the
reference is docs/rules.md. Cross-references (states, roles, fields, triggers) and the type
of every condition are checked after this structural pass, in ``complaintflow.rules.check``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
)

__all__ = [
    "AllOf",
    "AnyOf",
    "ApprovalDef",
    "Compare",
    "Condition",
    "FieldDef",
    "FieldType",
    "Label",
    "NotOf",
    "OperandRef",
    "PersonalDataDef",
    "RoleDef",
    "RuleFile",
    "SeparationRule",
    "SeverityDef",
    "SeverityRule",
    "StateDef",
    "SubmitDef",
    "TransitionDef",
]

Identifier = Annotated[
    str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", min_length=1, max_length=64)
]
FieldType = Literal[
    "string", "text", "integer", "decimal", "date", "datetime", "enum", "enum_list", "bool"
]
Scalar = str | bool | int | float | None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


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
    min: Decimal | None = Field(None, description="smallest allowed integer or decimal value")
    max: Decimal | None = Field(None, description="largest allowed integer or decimal value")
    max_length: int | None = Field(None, ge=1, description="longest allowed string or text")
    description: str | None = None


ActorAttribute = Literal["id", "department", "roles"]


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


class RuleFile(Strict):
    """A complete rule file."""

    format: Literal[1] = 1
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
    submit: SubmitDef = SubmitDef()
    transitions: list[TransitionDef] = Field(min_length=1)
    separation_of_duties: list[SeparationRule] = []
    personal_data: PersonalDataDef = PersonalDataDef()


for _model in (AllOf, AnyOf, NotOf, SeverityRule, ApprovalDef, TransitionDef, RuleFile):
    _model.model_rebuild()

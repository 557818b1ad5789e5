"""From a POST body to what the server needs before running anything: the parsed and
validated document, the operation, its variables, its root fields and its cost."""

import math
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInt,
    InlineFragmentNode,
    SelectionSetNode,
    get_operation_ast,
    parse,
    validate,
    value_from_ast,
)
from graphql.execution.values import get_variable_values

from sims.toggle.queries import DEFAULT_LIMIT
from sims.toggle.schema import SCHEMA

# Costs [assumed by the contract]: a query 1 plus 1 per 10 rows of its limit.
MUTATION_COSTS = {"createOrder": 20, "createBalanceAdjustment": 10, "createReversal": 10}
LOGIN = "loginUser"
_LIMITED = {"Orders": DEFAULT_LIMIT}  # queries with a `limit`, and its default


@dataclass
class Prepared:
    document: DocumentNode | None = None
    operation_name: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    fields: list[str] = field(default_factory=list)  # root field names, in document order
    cost: int = 0
    errors: list[GraphQLError] = field(default_factory=list)

    @property
    def label(self) -> str:
        """How stats and fault targets name this request: its first root field."""
        return self.fields[0] if self.fields else "invalid"

    @property
    def needs_token(self) -> bool:
        return any(name not in (LOGIN, "__typename") for name in self.fields)


def prepare(body: dict[str, Any]) -> Prepared:
    """Parse, validate and price a request body; `errors` holds why it cannot run."""
    try:
        document = parse(body["query"])
    except GraphQLError as error:
        return Prepared(errors=[error])
    errors = validate(SCHEMA, document)
    if errors:
        return Prepared(errors=list(errors))
    name = body.get("operationName")
    operation = get_operation_ast(document, name)
    if operation is None:
        message = f"Unknown operation named '{name}'." if name else (
            "Must provide operation name if query contains multiple operations.")
        return Prepared(errors=[GraphQLError(message)])
    variables = body.get("variables") or {}
    # Variables that do not fit their declared types are refused before anything is charged.
    coerced = get_variable_values(SCHEMA, operation.variable_definitions or (), variables)
    if isinstance(coerced, list):  # a list of errors in graphql-core 3.2 and 3.3 alike
        return Prepared(errors=coerced)
    fragments = {d.name.value: d for d in document.definitions
                 if isinstance(d, FragmentDefinitionNode)}
    roots = list(_root_fields(operation.selection_set, fragments))
    return Prepared(document, name, variables, [node.name.value for node in roots],
                    sum(_cost(node, variables) for node in roots))


def _root_fields(selection_set: SelectionSetNode,
                 fragments: dict[str, FragmentDefinitionNode]) -> list[FieldNode]:
    found: list[FieldNode] = []
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            found.append(selection)
        elif isinstance(selection, InlineFragmentNode):
            found += _root_fields(selection.selection_set, fragments)
        elif isinstance(selection, FragmentSpreadNode):
            found += _root_fields(fragments[selection.name.value].selection_set, fragments)
    return found


def _cost(node: FieldNode, variables: dict[str, Any]) -> int:
    name = node.name.value
    if name == LOGIN:
        return 1
    if name in MUTATION_COSTS:
        return MUTATION_COSTS[name]
    if name.startswith("__"):
        return 0  # introspection and __typename are free [assumed]
    limit = 0
    if name in _LIMITED:
        given = next((arg.value for arg in node.arguments or () if arg.name.value == "limit"), None)
        value = value_from_ast(given, GraphQLInt, variables) if given is not None else None
        limit = value if isinstance(value, int) else _LIMITED[name]
    return 1 + math.ceil(max(limit, 0) / 10)

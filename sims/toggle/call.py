"""What one GraphQL request's resolvers share: the books, and a token a login hands out."""

from dataclasses import dataclass

from graphql import GraphQLResolveInfo

from sims.toggle.state import ToggleState


@dataclass(slots=True)
class Call:
    state: ToggleState
    new_token: str | None = None  # set by a successful loginUser: sent in the headers


def state_of(info: GraphQLResolveInfo) -> ToggleState:
    call: Call = info.context
    return call.state

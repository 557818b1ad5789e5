"""The error every entry point (task, CLI, webhook) raises for an argument that broke a rule."""


class InvalidArgument(ValueError):
    """A task argument broke a rule; raised before any remote call. The message starts
    with the argument's name, then the rule."""
